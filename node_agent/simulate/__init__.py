"""A simulated fleet's agent logs, written in each agent's exact on-disk format, with truth.

`generate_fleet` writes a whole corpus and its `truth.json` (see `fleet`, `truth`); the
per-agent modules (`claude`, `codex`, `gemini`, `opencode`, `cursor`) hold the writers, usable
one call at a time by live fake agents, and their step-wise session drivers (`iter_session`).
The generator never imports `pricing` or `node_agent.sources`: it is the independent truth
they are checked against.
"""

from .fleet import REALISM_ITEMS, generate_fleet
from .truth import Truth, TruthBuilder

__all__ = ["REALISM_ITEMS", "Truth", "TruthBuilder", "generate_fleet"]
