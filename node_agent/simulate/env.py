"""What a session driver gets from the fleet: where to write, whom to credit, what to reuse."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

from .common import ByteCounter
from .payloads import PayloadPool
from .truth import TruthBuilder


@dataclass(frozen=True, slots=True)
class Project:
    cwd: str
    branch: str
    repo_url: str
    name: str  # folder name (Gemini's project slug)


@dataclass(slots=True)
class SessionEnv:
    machine: str
    tz: ZoneInfo
    profile: str  # the home's dir name, e.g. "claude-max2"
    home: Path  # ROOT/<machine>/<profile>
    rng: random.Random  # this session's own stream
    pool: PayloadPool
    truth: TruthBuilder
    counter: ByteCounter
    flush_each: bool = False  # live writers flush every record
