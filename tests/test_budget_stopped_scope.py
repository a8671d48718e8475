"""When a budget's stop still stands (so an agent joining its scope is stopped too), read from
the governor's rows and the audit log of a real hub store on disk: not after a person resumed
an agent it paused, an override, a new period, a later mark, nor a rolling window with room."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from hub._node_news import pause_target
from hub.budgets import records
from hub.budgets.model import Budget, parse_budget
from hub.budgets.periods import bucket_at
from hub.budgets.records import Mark, Override
from hub.budgets.stopped_scope import standing_stops, stands
from hub.store import Store

NOW = 1_796_428_800.0 + 5400  # 01:30 UTC on a day (the budget's period)
KEY = ("spark07", 4242, NOW - 600.25)
WHO = "budget 'day'"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "hub.db") as opened:
        with opened.writing() as db:
            records.create_tables(db)
        yield opened


def _budget(period: str = "day", **more: str) -> Budget:
    return parse_budget(
        {"name": "day", "scope": "machine=spark07", "period": period, "basis": "api",
         "limit": "0.50", "action": "pause", **more}
    )  # fmt: skip


def _stop(store: Store, budget: Budget, bucket: str, mark: str = "100@0.50") -> Mark:
    """A hard mark acted on: one agent paused under it."""
    row = Mark(budget.name, bucket, mark, NOW - 60, Decimal("0.52"), Decimal("0.50"), "pause")
    with store.writing() as db:
        assert records.insert_mark(db, row)
        records.finish_mark(db, row, "paused 1 agent", NOW - 59)
        records.note_stop(db, budget.name, bucket, KEY, "pause", "paused", NOW - 59)
    (done,) = [m for m in records.marks(store.reading(), budget.name) if m.mark == mark]
    return done


def test_a_stop_stands_in_its_period_until_a_person_resumes_an_agent_it_paused(
    store: Store,
) -> None:
    budget = _budget()
    mark = _stop(store, budget, bucket_at(_budget(), NOW))
    db = store.reading()
    assert stands(db, budget, mark, NOW)
    assert standing_stops(db, budget, NOW) == [mark]
    # the budget's own commands and a resume of another process do not release it
    store.audit(WHO, "resume", pause_target(*KEY), "resumed", NOW - 10)
    store.audit("ops", "resume", pause_target("spark07", 4243, KEY[2]), "resumed", NOW - 9)
    store.audit("ops", "resume", pause_target(*KEY), "refused: no such process", NOW - 8)
    assert stands(db, budget, mark, NOW)
    store.audit("ops", "resume", pause_target(*KEY), "resumed", NOW - 5)
    assert not stands(db, budget, mark, NOW)
    assert standing_stops(db, budget, NOW) == []


def test_a_resume_before_the_pause_does_not_release_it(store: Store) -> None:
    budget = _budget()
    store.audit("ops", "resume", pause_target(*KEY), "resumed", NOW - 300)
    mark = _stop(store, budget, bucket_at(budget, NOW))  # KEY paused at NOW - 59
    assert stands(store.reading(), budget, mark, NOW)
    # a joiner paused later (NOW - 30), whose resume by a person came before that pause
    joiner = ("spark07", 4250, NOW - 45.5)
    store.audit("ops", "resume", pause_target(*joiner), "resumed", NOW - 40)
    with store.writing() as db:
        records.note_stop(db, budget.name, mark.bucket, joiner, "pause", "paused", NOW - 30)
    assert stands(store.reading(), budget, mark, NOW)


def test_a_new_period_ends_the_stop(store: Store) -> None:
    budget = _budget()
    mark = _stop(store, budget, bucket_at(budget, NOW))
    assert stands(store.reading(), budget, mark, NOW + 3600)
    assert not stands(store.reading(), budget, mark, NOW + 86_400)
    with store.writing() as db:  # what the governor notes at the new period
        records.note_resumed(db, budget.name, mark.bucket, NOW)
    (resumed,) = records.marks(store.reading(), budget.name)
    assert not stands(store.reading(), budget, resumed, NOW)


def test_an_override_ends_the_stop(store: Store) -> None:
    budget = _budget()
    mark = _stop(store, budget, bucket_at(budget, NOW))
    with store.writing() as db:
        records.add_override(db, Override("day", Decimal("5"), NOW + 3600, "ops", "go on", NOW))
    assert not stands(store.reading(), budget, mark, NOW)
    assert stands(store.reading(), budget, mark, NOW + 7200)  # the override has expired


def test_only_the_latest_hard_mark_of_a_period_stands(store: Store) -> None:
    budget = _budget()
    bucket = bucket_at(budget, NOW)
    first = _stop(store, budget, bucket, "100@0.50")
    later = _stop(store, budget, bucket, "100@0.40")
    db = store.reading()
    assert not stands(db, budget, first, NOW)
    assert stands(db, budget, later, NOW)
    assert standing_stops(db, budget, NOW) == [later]


def test_a_pending_mark_is_not_a_standing_stop(store: Store) -> None:
    budget = _budget()
    row = Mark("day", bucket_at(budget, NOW), "100@0.50", NOW, Decimal(1), Decimal("0.50"), "pause")
    with store.writing() as db:
        records.insert_mark(db, row)
    assert not stands(store.reading(), budget, row, NOW)  # the crossing's own action is due


def test_a_rolling_window_stop_lasts_while_its_episode_is_open(store: Store) -> None:
    budget = _budget("1h")
    bucket = bucket_at(budget, NOW)
    with store.writing() as db:
        records.open_episode(db, budget.name, bucket)
    mark = _stop(store, budget, bucket)
    assert stands(store.reading(), budget, mark, NOW)
    with store.writing() as db:
        records.close_episode(db, budget.name)
    assert not stands(store.reading(), budget, mark, NOW)
