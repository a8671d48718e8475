"""What a budget last did, as its standing tells it (the Budgets tab, the API), read from the
governor's marks in SQLite on disk."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from hub.budgets import records
from hub.budgets.model import parse_budget
from hub.budgets.records import Mark
from hub.budgets.standing import standing_of

AT = 1_796_511_070.0


def _db(tmp_path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    records.create_tables(db)
    return db


def _mark(name: str, mark: str, action: str, outcome: str, at: float = AT) -> Mark:
    return Mark(
        name, "1796428800", mark, at, Decimal("0.39"), Decimal("0.50"), action, "done", outcome
    )


def _note(db: sqlite3.Connection, mark: Mark) -> None:
    """As the governor does: the mark fires, then its action is done with an outcome."""
    assert records.insert_mark(db, mark) and mark.outcome is not None
    records.finish_mark(db, mark, mark.outcome, mark.at if mark.action == "pause" else None)


def test_a_stop_is_the_last_action_over_a_forecast_noted_in_the_same_evaluation(
    tmp_path: Path,
) -> None:
    budget = parse_budget(
        {"name": "day", "scope": "machine=spark07", "period": "day", "basis": "paid",
         "limit": "0.50", "action": "pause"}
    )  # fmt: skip
    db = _db(tmp_path)
    # in the order the governor notes them when one call crosses 100 % of the headroom
    for mark in (
        _mark("day", "100@0.50", "pause", "no agent to pause in scope"),
        _mark("day", "forecast@0.50", "alert", "alerted"),
    ):
        _note(db, mark)
    standing = standing_of(db, budget, AT + 1, Decimal(0), [])
    assert standing.last_action == "100 %: no agent to pause in scope"
    # a later alert is the last action
    _note(db, _mark("day", "forecast@0.60", "alert", "alerted", AT + 60))
    assert standing_of(db, budget, AT + 61, Decimal(0), []).last_action == "forecast: alerted"
