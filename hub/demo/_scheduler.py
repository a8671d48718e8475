"""The demo's subscription scheduler: the rate-limit story on spark01.

max-a's fake agent logs Claude Code's real limit record. The scheduler (the rotator thread)
sees the hit in the agent's truth journal, stops that agent, writes spark01's profile heartbeat
(the node's `status_file`: a switch max-a → max-b, reason rate_limited, max-a limited until the
reset) and starts a new agent on max-b. The hub shows max-a rate-limited and switched away,
max-b active, and a limit event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from hub.demo._agent import DemoAgent, end_agents
from hub.demo._cast import LIMITED, SPARE

log = logging.getLogger(__name__)

ROTATOR_EVERY: Final = 0.2  # seconds between looks at the truth journal


def rotate(
    limited: DemoAgent,
    status_file: Path,
    start_spare: Callable[[], None],
    *,
    halt: threading.Event,
    switched: threading.Event,
) -> None:
    """Wait for max-a's rate-limit hit, then move its work to max-b (`start_spare`) and set
    `switched`; gives up once `halt` is set. The rotator thread's body."""
    while not halt.wait(ROTATOR_EVERY):
        hit = rate_limit_hit(limited.truth)
        if hit is None:
            continue
        try:
            _switch(limited, hit, status_file, start_spare)
            switched.set()
        except Exception:
            if not halt.is_set():
                log.exception("demo: the switch to %s failed", SPARE)
        return


def _switch(
    limited: DemoAgent, hit: dict[str, Any], status_file: Path, start_spare: Callable[[], None]
) -> None:
    """What a rotation scheduler does: stop the limited agent, tell the node, start anew."""
    log.info("demo: %s is rate-limited; switching to %s", LIMITED, SPARE)
    end_agents([limited])
    write_status(status_file, status_after(hit))
    start_spare()


def rate_limit_hit(truth: Path) -> dict[str, Any] | None:
    """The first rate-limit hit in a fake agent's truth journal, if any."""
    try:
        lines = truth.read_bytes().splitlines()
    except OSError:
        return None
    for raw in lines:
        if b'"rate_limit_hit"' not in raw:
            continue
        with contextlib.suppress(ValueError):
            record: dict[str, Any] = json.loads(raw)
            if record.get("kind") == "rate_limit_hit":
                return record
    return None


def status_before() -> dict[str, Any]:
    """spark01's heartbeat while max-a is in use."""
    now = datetime.now(UTC)
    return {"version": 1, "updated_at": _iso(now), "active": {"claude-code": LIMITED}}


def status_after(hit: dict[str, Any]) -> dict[str, Any]:
    """The heartbeat once the scheduler moved claude-code from max-a to max-b."""
    now = datetime.now(UTC)
    until = hit.get("resets_at") or _iso(now + timedelta(hours=5))
    return {
        "version": 1,
        "updated_at": _iso(now),
        "active": {"claude-code": SPARE},
        "switches": [
            {
                "at": _iso(now),
                "agent": "claude-code",
                "from": LIMITED,
                "to": SPARE,
                "reason": "rate_limited",
            }
        ],
        "limited": {
            LIMITED: {
                "until": until,
                "reason": f"{hit.get('window') or '5h'} window",
                "since": hit.get("at") or _iso(now),
                "agent": "claude-code",
            }
        },
    }


def write_status(path: Path, status: dict[str, Any]) -> None:
    """Atomically, as the format asks: a temp file renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status, indent=2) + "\n")
    os.replace(tmp, path)


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds")
