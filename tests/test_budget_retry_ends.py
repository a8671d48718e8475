"""A stop's retries end when the stop no longer stands or the process is gone: the governor on a
real hub store on disk, its service answering every command "refused" (no command endpoint:
a failure the node would answer alike), hellos and calls ingested as the receiver would."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hub.budgets.governor import Governor
from hub.budgets.model import parse_budget
from hub.service import FleetService
from hub.store import Store
from pricing import PriceBook
from shared.events import Agent
from shared.hello import ProcessInfo
from tests.budget_harness import hello, usage
from tests.fleet_harness import wait_for

NODE = "spark07"
AGENT = ProcessInfo(4242, time.time() - 600, Agent.CLAUDE_CODE, "running", "api-a", "s1")
REFUSED = "refused: this hub has no command endpoint"


@dataclass
class Governed:
    store: Store
    service: FleetService
    governor: Governor
    db: Path
    seq: int = 0

    def batch(self, calls: int, processes: tuple[ProcessInfo, ...]) -> None:
        events = [usage(NODE, self.seq + i) for i in range(calls)]
        self.service.ingest(NODE, "s1", self.seq + 1, self.seq + max(calls, 1), list(events),
                            hello(NODE, processes=processes))  # fmt: skip
        self.seq += max(calls, 1)

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(self.db, timeout=5) as con:
            return con.execute(sql).fetchall()

    def commands(self) -> list[tuple[object, ...]]:
        return self.rows("SELECT action, result FROM audit WHERE action = 'pause' ORDER BY ts")


@contextmanager
def _governed(tmp: Path) -> Iterator[Governed]:
    """A day budget on spark07 (pause at $0.01) crossed by its agent's calls; the pause is
    refused and waits for its retry."""
    store = Store(tmp / "hub.db")
    service = FleetService(store, PriceBook.default())
    service.wait_loaded()
    budget = parse_budget({"name": "day", "scope": f"machine={NODE}", "period": "day",
                           "basis": "api", "limit": "0.01", "action": "pause"})  # fmt: skip
    governor = Governor(store.path, service, [budget])
    governor.attach(store)
    governed = Governed(store, service, governor, tmp / "hub.db")
    try:
        governed.batch(3, (AGENT,))
        wait_for(lambda: bool(governed.rows("SELECT 1 FROM budget_retries")), 30, "a retry")
        assert governed.rows("SELECT pid, outcome, generation FROM budget_retries") == [
            (AGENT.pid, "refused", 1)
        ]
        assert governed.rows("SELECT * FROM budget_stops") == []
        yield governed
    finally:
        governor.close()
        store.close()


def test_an_override_ends_the_retries_of_the_stop_it_released(tmp_path: Path) -> None:
    with _governed(tmp_path) as governed:
        governed.governor.override("day", None, time.time() + 3600, "ops", "a release")
        wait_for(lambda: not governed.rows("SELECT 1 FROM budget_retries"), 30, "retries ended")
        assert governed.rows("SELECT * FROM budget_stops") == []
        assert governed.commands() == [("pause", REFUSED)]


def test_a_process_its_node_no_longer_names_is_gone_not_retried(tmp_path: Path) -> None:
    with _governed(tmp_path) as governed:
        governed.batch(0, ())  # its node's hello without it: it exited
        wait_for(lambda: bool(governed.rows("SELECT 1 FROM budget_stops")), 30, "noted gone")
        assert governed.rows("SELECT pid, outcome FROM budget_stops") == [(AGENT.pid, "gone")]
        assert governed.rows("SELECT * FROM budget_retries") == []
        # the one refusal is all the audit log has: the retry it waited for was never sent
        assert governed.commands() == [("pause", REFUSED)]


def test_a_refusal_repeated_by_each_retry_is_audited_once(tmp_path: Path) -> None:
    with _governed(tmp_path) as governed:
        wait_for(
            lambda: governed.rows("SELECT failures FROM budget_retries") == [(2,)],
            30,
            "the first retry (5 s on)",
        )
        # a new command id after an answered failure; the same outcome, not audited again
        assert governed.rows("SELECT generation FROM budget_retries") == [(2,)]
        assert governed.commands() == [("pause", REFUSED)]
