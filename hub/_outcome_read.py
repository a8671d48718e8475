"""An outcome view read from the outcome roll-up (`hub._outcome_rollup`): sums for the sessions
whose calls are all filed there in order, the calls themselves for the others (a session with
calls before the report's first day or the retention edge, or marked dirty). The result is the
one reading every call gives (`hub.outcomes.build_outcome_report(..., from_sums=False)`), which
the tests check on stores with re-sent, revised, re-priced and pruned calls.
"""

from __future__ import annotations

import math
import sqlite3
from bisect import bisect_left
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

import orjson

from hub._credit_store import CallMove
from hub._outcome_rollup import QUARTER_S, RETRY_UNSEEN, RETRY_YES, TOKEN_COLUMNS, commit_index
from hub._pricing import billing_of
from hub._rollup import cost_class
from pricing import PricedCall
from pricing.outcomes import TOOL_CALL_AGENTS, OutcomeReport, Part, commit_times
from shared.config import Billing
from shared.events import Role, Tokens
from shared.outcomes import SessionOutcome, root_session

if TYPE_CHECKING:
    from hub.store import Store

_FAR: Final = 1e300  # past any time (SQLite is given no infinities)
_ROWS: Final = f"""
SELECT quarter, machine, session, cut, profile, priced, estimated, subagent, retry, calls,
       {", ".join(TOKEN_COLUMNS)}, amount
FROM outcome_rollup WHERE quarter >= ? AND quarter < ? AND calls != 0
"""

SessionKey = tuple[str, str]
CallKey = tuple[float, str]
# (commit index, profile, priced, estimated, subagent, retry) -> [calls, *tokens, amount]
_PartKey = tuple[int, str, int, int, int, int]


def report_from_sums(
    store: Store,
    report: OutcomeReport,
    start: float | None,
    end: float | None,
    billing: Mapping[tuple[str, str], Billing],
    outcomes: Mapping[SessionKey, SessionOutcome],
) -> bool:
    """Feed `report` the calls with start <= ts < end (call under `localcontext(MONEY)`);
    False, with nothing fed, when the edges are not whole quarter-hours (the sums cannot
    tell)."""
    if any(t is not None and t % QUARTER_S for t in (start, end)):
        return False
    db = store.reading()
    low = -_FAR if start is None else start
    high = _FAR if end is None else end
    pruned = _pruned_before(db)  # as this read's snapshot has it
    edge = max(low, pruned)
    summed: dict[SessionKey, tuple[CallKey, list[float]]] = {}
    spans: list[tuple[float, float]] = []
    for machine, session, first_ts, last_ts, earliest, dirty in db.execute(
        "SELECT machine, session, first_ts, last_ts, earliest, dirty FROM outcome_sessions "
        "WHERE first_ts < ? AND last_ts >= ?",
        (high, low),
    ):
        outcome = outcomes.get((machine, session))
        times = [] if outcome is None else commit_times(outcome.commits)
        calls = orjson.loads(earliest)
        if not dirty and calls and first_ts >= edge and times == sorted(times):
            summed[(machine, session)] = ((calls[0][0], calls[0][1]), times)
        else:  # read raw: all its calls in the range lie in this span
            spans.append((max(low, first_ts), last_ts))
    if pruned > low:  # calls a prune in progress has not reached yet
        spans.append((low, pruned))
    firsts: dict[SessionKey, CallKey] = {}
    raw = _raw_calls(store, spans, high, summed, billing)
    moves = credit_moves(store, db, low, high)
    for key, calls in raw.items():
        firsts[key] = min((event.ts, event.event_id) for event, _ in calls)
    # a view whose rows are not commits puts all of a session's commits in one row: its
    # calls are summed across them, and the commits they reached told apart (`also`)
    merge = report.by != "commit"
    parts, reached = _summed_parts(store, start, end, summed, merge)
    for key in parts:
        firsts[key] = summed[key][0]
    for key in sorted(firsts, key=firsts.__getitem__):  # as the calls come: by first call
        outcome = outcomes.get(key)
        mine = moves.get(key, [])
        if key in raw:
            report.add_session(outcome, raw[key], {m.event_id: m.moved for m in mine})
        else:
            commits = sorted(reached.get(key, ()))
            feed = _parts(key[0], parts[key], billing, commits[0] if commits else -1)
            report.add_session_parts(outcome, key[1], feed, commits[1:])
            _move_summed(store, report, outcome, key[1], summed[key][1], mine)
    return True


def credit_moves(
    store: Store, db: sqlite3.Connection, low: float, high: float
) -> dict[SessionKey, list[CallMove]]:
    """What the Agent SDK credit moved out of subscription_included of each call in range (its
    overage, its untold part), by outcome session: the rule of every other spend surface."""
    out: dict[SessionKey, list[CallMove]] = {}
    for move in store.credit_call_moves(db, max(low, -_FAR), min(high, _FAR)):
        out.setdefault((move.machine, move.session), []).append(move)
    return out


def _move_summed(
    store: Store,
    report: OutcomeReport,
    outcome: SessionOutcome | None,
    session: str,
    times: list[float],
    moves: list[CallMove],
) -> None:
    """Move a summed session's moved calls in the rows their parts went to."""
    db = store.reading()
    for move in moves:
        retry: bool | None = None
        if move.agent in {a.value for a in TOOL_CALL_AGENTS}:
            found = db.execute(
                "SELECT 1 FROM outcome_retries WHERE ts = ? AND event_id = ?",
                (move.ts, move.event_id),
            ).fetchone()
            retry = found is not None
        at = bisect_left(times, move.ts)
        subagent = move.role == Role.SUBAGENT.value
        report.move(outcome, session, (at, move.moved, move.estimated), subagent, retry)


def _pruned_before(db: sqlite3.Connection) -> float:
    row = db.execute("SELECT value FROM meta WHERE key = 'pruned_before'").fetchone()
    return -math.inf if row is None else float(row[0])


def _raw_calls(
    store: Store,
    spans: list[tuple[float, float]],
    high: float,
    summed: Mapping[SessionKey, object],
    billing: Mapping[tuple[str, str], Billing],
) -> dict[SessionKey, list[tuple[Any, PricedCall]]]:
    """The calls in `spans` (before `high`) of the sessions not summed, priced as stored."""
    out: dict[SessionKey, list[tuple[Any, PricedCall]]] = {}
    merged: list[list[float]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    for a, b in merged:
        for event, amount, estimated in store.priced_usage(a, min(high, b + 1.0)):
            if event.ts > b:
                continue
            key = (event.machine, root_session(event))
            if key in summed:
                continue
            cls = cost_class(
                amount is not None, estimated, billing_of(billing, event.machine, event.profile)
            )
            out.setdefault(key, []).append((event, PricedCall(amount, cls, None, estimated)))
    return out


def _summed_parts(
    store: Store,
    start: float | None,
    end: float | None,
    summed: Mapping[SessionKey, tuple[CallKey, list[float]]],
    merge: bool,
) -> tuple[dict[SessionKey, dict[_PartKey, list[Any]]], dict[SessionKey, set[int]]]:
    """Each summed session's parts; with `merge`, a session's calls on any commit are one
    part (commit index -1) and the commits reached are listed apart."""
    low = -(2**62) if start is None else int(start // QUARTER_S)
    high = 2**62 if end is None else int(end // QUARTER_S)
    out: dict[SessionKey, dict[_PartKey, list[Any]]] = {}
    reached: dict[SessionKey, set[int]] = {}
    width = len(TOKEN_COLUMNS) + 2
    for row in store.reading().execute(_ROWS, (low, high)):
        key = (row[1], row[2])
        got = summed.get(key)
        if got is None:
            continue
        at = commit_index(got[1], row[0], row[3])
        if merge and at < len(got[1]):
            reached.setdefault(key, set()).add(at)
            at = -1
        part_key = (at, row[4], row[5], row[6], row[7], row[8])
        session = out.get(key)
        if session is None:
            session = out[key] = {}
        sums = session.get(part_key)
        if sums is None:
            session[part_key] = [*row[9:-1], Decimal(row[-1])]
        else:
            for i in range(width - 1):
                sums[i] += row[9 + i]
            sums[-1] += Decimal(row[-1])
    return out, reached


def _parts(
    machine: str,
    sums: Mapping[_PartKey, list[Any]],
    billing: Mapping[tuple[str, str], Billing],
    merged_at: int,
) -> list[Part]:
    """The parts of one session; a merged part (-1) goes on commit `merged_at`."""
    out: list[Part] = []
    for (at, profile, priced, estimated, subagent, retry), (calls, *rest) in sums.items():
        at = merged_at if at == -1 else at
        tokens, amount = Tokens(*rest[:-1]), rest[-1]
        cls = cost_class(
            bool(priced), bool(estimated), billing_of(billing, machine, profile or None)
        )
        price = PricedCall(amount if priced else None, cls, None, bool(estimated))
        flag = None if retry == RETRY_UNSEEN else retry == RETRY_YES
        out.append((at, calls, tokens, price, bool(subagent), flag))
    return out
