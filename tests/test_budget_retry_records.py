"""The rows behind a stop's retries, on a real hub store on disk: the backoff, the command id's
generation (new only after an answered failure), a confirmed stop ending its retries, retries
of stops that no longer stand dropped, the last action that says one is pending, and a store
from before retries whose failed stops are retried."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from hub.budgets import records
from hub.budgets.model import parse_budget
from hub.budgets.records import Mark
from hub.budgets.standing import standing_of
from hub.store import Store

NOW = 1_796_428_800.0 + 5400  # 01:30 UTC on a day (the budget's period)
BUCKET = str(int(1_796_428_800.0))
KEY = ("spark07", 4242, NOW - 600.25)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "hub.db") as opened:
        with opened.writing() as db:
            records.create_tables(db)
        yield opened


def _fail(store: Store, outcome: str, at: float, answered: bool) -> records.Retry:
    before = records.retries(store.reading(), "day", BUCKET, "pause").get(KEY)
    with store.writing() as db:
        return records.note_failure(
            db, "day", BUCKET, "pause", before, KEY, outcome, f"{outcome}: why", answered, at
        )


def test_a_failed_stop_waits_longer_each_time_up_to_a_minute(store: Store) -> None:
    waits = []
    for n in range(7):
        at = NOW + 100 * n
        retry = _fail(store, "no answer", at, answered=False)
        waits.append(retry.next_at - at)
        assert retry.failures == n + 1 and retry.first_at == NOW
    assert waits == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    # read back as written (a restarted hub goes on from here)
    assert records.retries(store.reading(), "day", BUCKET, "pause") == {KEY: retry}


def test_the_command_id_is_new_only_after_the_node_answered_a_failure(store: Store) -> None:
    assert _fail(store, "no answer", NOW, answered=False).generation == 0
    assert _fail(store, "no answer", NOW + 5, answered=False).generation == 0
    assert _fail(store, "refused", NOW + 15, answered=True).generation == 1
    assert _fail(store, "no answer", NOW + 35, answered=False).generation == 1
    assert _fail(store, "failed", NOW + 75, answered=True).generation == 2


def test_a_confirmed_stop_ends_its_retries_and_is_noted_once(store: Store) -> None:
    _fail(store, "no answer", NOW, answered=False)
    with store.writing() as db:
        records.confirm_stop(db, "day", BUCKET, KEY, "pause", "paused", NOW + 5)
        records.confirm_stop(db, "day", BUCKET, KEY, "pause", "paused", NOW + 6)
    assert records.retries(store.reading(), "day", BUCKET, "pause") == {}
    assert records.stopped(store.reading(), "day", BUCKET, "pause") == {KEY}
    assert records.stops_since(store.reading(), "day", BUCKET, "pause", 0) == [("paused", NOW + 5)]


def test_retries_of_stops_that_no_longer_stand_are_dropped(store: Store) -> None:
    _fail(store, "no answer", NOW, answered=False)
    before = records.retries(store.reading(), "day", "older", "pause").get(KEY)
    with store.writing() as db:
        records.note_failure(
            db, "day", "older", "pause", before, KEY, "no answer", "", False, NOW - 86400
        )
    assert records.retry_buckets(store.reading(), "day") == {BUCKET, "older"}
    with store.writing() as db:
        records.forget_retries(db, "day", {"older"})
    assert records.retry_buckets(store.reading(), "day") == {BUCKET}
    with store.writing() as db:
        records.forget_retries(db, "day")
    assert records.retry_buckets(store.reading(), "day") == set()


def test_the_last_action_says_a_stop_is_pending_a_retry(store: Store) -> None:
    budget = parse_budget(
        {"name": "day", "scope": "machine=spark07", "period": "day", "basis": "api",
         "limit": "0.50", "action": "pause"}
    )  # fmt: skip
    mark = Mark("day", BUCKET, "100@0.50", NOW - 60, Decimal("0.52"), Decimal("0.50"), "pause")
    with store.writing() as db:
        records.insert_mark(db, mark)
        records.finish_mark(db, mark, "paused 0 agents, 1 no answer", NOW - 59)
    _fail(store, "no answer", NOW - 59, answered=False)
    row = standing_of(store.reading(), budget, NOW, Decimal(0), [])
    assert row.last_action == "100 %: paused 0 agents, 1 retrying after no answer"
    with store.writing() as db:
        records.confirm_stop(db, "day", BUCKET, KEY, "pause", "paused", NOW)
    row = standing_of(store.reading(), budget, NOW, Decimal(0), [])
    assert (row.last_action, row.last_action_at) == ("100 %: paused 1 agent", NOW)


def test_a_store_from_before_retries_has_its_failed_stops_retried(tmp_path: Path) -> None:
    with Store(tmp_path / "hub.db") as store:
        with store.writing() as db:
            records.create_tables(db)
            for pid, outcome in ((1, "no answer"), (2, "failed"), (3, "paused"), (4, "gone")):
                key = ("spark07", pid, NOW)
                records.note_stop(db, "day", BUCKET, key, "pause", outcome, NOW)
        with store.writing() as db:
            records.create_tables(db)  # the next start
        stopped = records.stopped(store.reading(), "day", BUCKET, "pause")
        assert sorted(pid for _, pid, _ in stopped) == [3, 4]
