"""Cost per outcome on the hub: what nodes say their sessions produced (repository, branch,
commits, pull request), kept in the store, and the `--by commit|branch|pr|repo` reports.

Nodes send a whole `SessionOutcome` per session in a batch's `outcomes` (shared.wire); the
newest (by `checked_at`) is kept per (node, session), so a batch sent again changes nothing.
A node speaks only for its own sessions: a report joins a node's outcome only with the calls
that node sent (the store files each call under the node that authenticated it), so a node
that names another's session id attributes nothing of it.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, tzinfo
from decimal import localcontext
from typing import Any, Final

import orjson

from hub import _outcome_rollup as outcome_rollup
from hub._counted_log import CountedLog
from hub._outcome_cache import OutcomeRowsCache, first_day
from hub._outcome_read import credit_moves, report_from_sums
from hub._payloads import Payloads
from hub._pricing import billing_of
from hub._rollup import cost_class
from hub._totals import MONEY
from hub.ledger import Period
from hub.store import Store
from pricing import PricedCall
from pricing.outcomes import OutcomeReport
from shared.config import Billing
from shared.events import UsageEvent
from shared.outcomes import SessionOutcome, outcome_from_map, outcome_to_map, root_session

log = logging.getLogger(__name__)

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS session_outcomes (  -- what a node says its session produced
    node       TEXT NOT NULL,  -- the authenticated node that said it
    session_id TEXT NOT NULL,
    checked_at REAL NOT NULL,  -- the node's time of reading: the newest is kept
    outcome    BLOB NOT NULL,  -- shared.outcomes map, as JSON
    PRIMARY KEY (node, session_id)
) WITHOUT ROWID
"""
_UPSERT: Final = """
INSERT INTO session_outcomes (node, session_id, checked_at, outcome) VALUES (?, ?, ?, ?)
ON CONFLICT (node, session_id) DO UPDATE SET
    checked_at = excluded.checked_at, outcome = excluded.outcome
WHERE excluded.checked_at > session_outcomes.checked_at
"""


def create_table(db: sqlite3.Connection) -> None:
    db.execute(SCHEMA)


def record(db: sqlite3.Connection, node: str, outcomes: Sequence[SessionOutcome]) -> None:
    """Keep `node`'s outcomes (call inside a write transaction: they commit before the ack),
    and cut their sessions' sums at the commit times they name (`hub._outcome_rollup`)."""
    db.executemany(
        _UPSERT,
        [(node, o.session_id, o.checked_at, orjson.dumps(outcome_to_map(o))) for o in outcomes],
    )
    outcome_rollup.on_outcomes(db, node, outcomes, lambda: Payloads(db))


def _has_table(db: sqlite3.Connection) -> bool:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'session_outcomes'"
    ).fetchone()
    return row is not None


def stored_outcomes(
    db: sqlite3.Connection, sessions: Iterable[tuple[str, str]] | None = None
) -> dict[tuple[str, str], SessionOutcome]:
    """(node, session id) -> its kept outcome: all of them, or those of `sessions`."""
    if not _has_table(db):  # a store no node has told an outcome yet
        return {}
    if sessions is None:
        rows: Iterable[tuple[str, str, bytes]] = db.execute(
            "SELECT node, session_id, outcome FROM session_outcomes"
        )
    else:
        rows = [
            row
            for key in sessions
            for row in db.execute(
                "SELECT node, session_id, outcome FROM session_outcomes "
                "WHERE node = ? AND session_id = ?",
                key,
            )
        ]
    out = {}
    for node, session_id, blob in rows:
        try:
            out[(node, session_id)] = outcome_from_map(orjson.loads(blob))
        except ValueError as exc:  # checked on the way in; a damaged row costs only itself
            log.warning("stored outcome of %s/%s unreadable: %s", node, session_id, exc)
    return out


def _day_start(day: date, tz: tzinfo) -> float:
    return datetime.combine(day, datetime.min.time(), tz).timestamp()


def build_outcome_report(
    store: Store,
    by: str,
    tz: tzinfo,
    since: date | None = None,
    until: date | None = None,
    *,
    from_sums: bool = True,
) -> dict[str, Any]:
    """The `by` outcome view of the stored calls from day `since` to `until` (in `tz`): each
    call priced as when stored, its class from its profile's billing now (as `report`).
    `from_sums` False: read every call, not the outcome roll-up (the same result, slower)."""
    start = _day_start(since, tz) if since is not None else None
    end = _day_start(until + timedelta(days=1), tz) if until is not None else None
    billing = store.billing()
    outcomes = stored_outcomes(store.reading())
    with localcontext(MONEY):
        report = OutcomeReport(by)
        # the store's per-session sums, where they tell (`hub._outcome_read`); else every call
        if not (from_sums and report_from_sums(store, report, start, end, billing, outcomes)):
            _add_calls(store, report, start, end, billing, outcomes)
        return report.to_json()


def _add_calls(
    store: Store,
    report: OutcomeReport,
    start: float | None,
    end: float | None,
    billing: Mapping[tuple[str, str], Billing],
    outcomes: Mapping[tuple[str, str], SessionOutcome],
) -> None:
    """Feed `report` every stored call with start <= ts < end, session by session."""
    sessions: dict[tuple[str, str], list[tuple[UsageEvent, PricedCall]]] = {}
    for event, amount, estimated in store.priced_usage(start, end):
        cls = cost_class(
            amount is not None, estimated, billing_of(billing, event.machine, event.profile)
        )
        priced = PricedCall(amount, cls, None, estimated)
        sessions.setdefault((event.machine, root_session(event)), []).append((event, priced))
    low, high = -math.inf if start is None else start, math.inf if end is None else end
    moves = credit_moves(store, store.reading(), low, high)
    for key, calls in sessions.items():
        mine = {m.event_id: m.moved for m in moves.get(key, [])}
        report.add_session(outcomes.get(key), calls, mine)


def session_outcome(store: Store, node: str, session_id: str) -> SessionOutcome | None:
    return stored_outcomes(store.reading(), [(node, session_id)]).get((node, session_id))


def decode_outcomes(items: Any) -> Iterator[SessionOutcome | ValueError]:
    """Each map of a batch's `outcomes`, decoded, or the error that refuses it."""
    for item in items if isinstance(items, list) else []:
        try:
            yield outcome_from_map(item)
        except ValueError as exc:
            yield exc


class OutcomeKeeper:
    """The service's part: keeps the outcomes of each batch (before its ack) and reports
    them. `lock` is the service's, which serialises use of the store's writing connection."""

    def __init__(self, store: Store, lock: Any, tz: tzinfo) -> None:
        self._store = store
        self._lock = lock
        self.tz = tz
        self._cache = OutcomeRowsCache(lambda view, since: self.report(view, tz, since))
        self._bad = CountedLog(log, "malformed session outcomes")
        with lock, store.writing() as db:
            create_table(db)

    def handle(self, node: str, items: Any) -> None:
        good: list[SessionOutcome] = []
        for item in decode_outcomes(items):
            if isinstance(item, ValueError):
                self._bad.note(node, 1, str(item))
            else:
                good.append(item)
        if good:
            with self._lock, self._store.writing() as db:
                record(db, node, good)

    def prune(self, before: float) -> int:
        """Forget outcomes read before `before`: their sessions' calls (all earlier) are
        pruned too, so no outcome view can show them. Returns the rows deleted."""
        with self._lock, self._store.writing() as db:
            return db.execute(
                "DELETE FROM session_outcomes WHERE checked_at < ?", (before,)
            ).rowcount

    def report(
        self, by: str, tz: tzinfo, since: date | None = None, until: date | None = None
    ) -> dict[str, Any]:
        # a snapshot of its own: a month of calls is read without holding ingest back
        with self._store.snapshot() as reader:
            return build_outcome_report(reader, by, tz, since, until)

    def report_now(self, view: str, period: Period, now: float) -> dict[str, Any] | None:
        """The `view` report of `period` as last read (None before the first read), at once."""
        return self._cache.get(view, first_day(period, now, self.tz))

    def of_session(self, node: str, session_id: str) -> SessionOutcome | None:
        with self._store.snapshot() as reader:
            return session_outcome(reader, node, session_id)
