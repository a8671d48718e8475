"""What the daemon does about a damaged outbox and a full disk, instead of dying.

A damaged outbox (SQLite: corrupt, or not a database) is moved aside with its WAL as
`outbox.db.corrupt-<UTC time>` and a fresh one is started: its read positions are gone, so
every log is read again from the start, and the hub, which keeps one row per event id, adds
nothing twice. What the damaged file held and the hub had not acknowledged is re-read from the
logs, which are the source of truth.

A full disk is waited out: each failed write doubles the wait before the next try (up to a
minute), and the condition is carried in the node's hello so the hub shows it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from node_agent.outbox import Outbox, OutboxCorrupt

log = logging.getLogger(__name__)

FIRST_WAIT: Final = 1.0  # seconds before the first retry after a full disk
LONGEST_WAIT: Final = 60.0
_SIDECARS: Final = ("-wal", "-shm", "-journal")


def open_checked_outbox(path: Path) -> Outbox:
    """The outbox at `path`, checked page by page; a damaged one is moved aside and a fresh
    one started. Other failures (a newer schema, a full disk) propagate."""
    try:
        outbox = Outbox(path)
    except OutboxCorrupt as exc:
        return _start_fresh(path, exc)
    try:
        outbox.verify()
    except OutboxCorrupt as exc:
        outbox.close()
        return _start_fresh(path, exc)
    return outbox


def _start_fresh(path: Path, why: OutboxCorrupt) -> Outbox:
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    for suffix in ("", *_SIDECARS):
        try:
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        except FileNotFoundError:
            continue
    log.error(
        "%s; moved it aside to %s and started a fresh outbox: every log is read again "
        "from the start (the hub keeps each event once)",
        why,
        aside,
    )
    return Outbox(path)


@dataclass(slots=True)
class Backoff:
    """Waits that double on each failure and start over after a success."""

    first: float = FIRST_WAIT
    longest: float = LONGEST_WAIT
    failures: int = 0
    retry_at: float = 0.0  # monotonic time before which nothing is tried
    reason: str | None = field(default=None)

    def failed(self, reason: str, now: float | None = None) -> float:
        """Note a failure; returns the seconds to wait before the next try."""
        wait = min(self.longest, self.first * (1 << min(self.failures, 30)))
        self.failures += 1
        self.reason = reason
        self.retry_at = (time.monotonic() if now is None else now) + wait
        return wait

    def succeeded(self) -> None:
        self.failures = 0
        self.retry_at = 0.0
        self.reason = None

    def waiting(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) < self.retry_at
