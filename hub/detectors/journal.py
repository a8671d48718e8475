"""A sink that keeps every finding in the hub's store: the `detector_findings` table of
`hub.db`, one row per finding id (INSERT OR IGNORE, committed before it returns), so raising the
same finding twice, after a restart too, keeps one row, and a kill -9 loses none that returned.

It is the findings' record until the alert outbox (hub/alerts) takes them; it opens a
connection of its own (WAL: the store's writer and readers are not disturbed beyond SQLite's
own lock, which it waits for like any writer).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from hub.findings import Finding, Severity

BUSY_MS: Final = 10_000
SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS detector_findings (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    scope TEXT NOT NULL,
    severity TEXT NOT NULL,
    start REAL NOT NULL,
    text TEXT NOT NULL,
    evidence TEXT NOT NULL,  -- JSON object of exact figures as text
    raised_at REAL NOT NULL
)
"""


class FindingJournal:
    def __init__(self, db_path: Path, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._db = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None)
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_MS}")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()

    def raise_finding(self, finding: Finding) -> None:
        row = (
            finding.id,
            finding.kind,
            finding.scope,
            finding.severity.value,
            finding.start,
            finding.text,
            json.dumps(dict(finding.evidence), sort_keys=True),
            self._clock(),
        )
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO detector_findings VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row
            )

    def findings(self, limit: int = 1000) -> list[Finding]:
        """The latest findings, newest first."""
        rows = self._rows(
            "SELECT id, kind, scope, severity, start, text, evidence FROM detector_findings "
            "ORDER BY raised_at DESC LIMIT ?",
            limit,
        )
        return [
            Finding(i, k, sc, Severity(sev), st, t, json.loads(ev))
            for i, k, sc, sev, st, t, ev in rows
        ]

    def ids(self, limit: int = 100_000) -> list[str]:
        """The ids of the latest `limit` findings, oldest first (what a restarted runner
        counts as raised)."""
        rows = self._rows(
            "SELECT id FROM (SELECT id, raised_at FROM detector_findings "
            "ORDER BY raised_at DESC LIMIT ?) ORDER BY raised_at",
            limit,
        )
        return [i for (i,) in rows]

    def _rows(self, sql: str, *params: object) -> list[Any]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()
