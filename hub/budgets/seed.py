"""A budget's spend so far, recounted from the store's roll-ups (the numbers the dashboard and
reports read): at hub start and whenever the budgets change. From then on the governor adds
each batch's calls in the batch's own transaction.

Roll-up cells are quarter-hours: a calendar period in any zone is whole quarters; a rolling
window's slots shorter than a quarter get the quarter's spend in its first slot (the window's
edge is approximate until the window has turned over once under the governor).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

from hub._rollup import QUARTER_S
from hub.budgets import records
from hub.budgets.evaluation import counted, counted_move, reading_matches
from hub.budgets.model import CALENDAR, Basis, Budget, PeriodKind, ScopeKind
from hub.budgets.periods import (
    QUOTA_WINDOW_S,
    calendar_bounds,
    quota_bucket,
    slot_seconds,
    window_slots,
)
from pricing import Billing
from pricing.sdk_credit import Moved
from shared.codec import unpack
from shared.events import LimitEvent

SESSION_LOOKBACK_S: Final = 86400.0  # sessions with a call in the last day are seeded
_COLUMN: Final = {
    ScopeKind.MACHINE: "machine",
    ScopeKind.PROFILE: "profile",
    ScopeKind.ACCOUNT: "account",
    ScopeKind.AGENT: "agent",
    ScopeKind.PROJECT: "project",
    ScopeKind.SESSION: "session_row",
    ScopeKind.MODEL: "model",
}

BillingOf = Mapping[tuple[str, str], Billing]


def billing_map(db: sqlite3.Connection) -> dict[tuple[str, str], Billing]:
    return {
        (node, name): Billing(billing)
        for node, name, billing in db.execute("SELECT node, name, billing FROM profiles")
    }


def seed(db: sqlite3.Connection, budget: Budget, now: float) -> None:
    """Replace `budget`'s spend rows with a recount of its current period (call inside a write
    transaction)."""
    records.forget_spend(db, budget.name)
    kind = budget.period.kind
    if budget.basis is Basis.QUOTA:
        _seed_quota(db, budget, now)
        return
    billing = billing_map(db)
    where = " AND ".join(f"{_COLUMN[k]} = ?" for k, _ in budget.scope.parts)
    scope_sql = f" AND {where}" if where else ""
    scope_args = [v for _, v in budget.scope.parts]
    if kind in CALENDAR:
        start, end = calendar_bounds(kind, budget.zone, now)
        sums = _sums(db, "''", scope_sql, scope_args, start, end, billing, budget.basis)
        for _, (amount, unknown, calls) in sums.items():
            records.add_spend(db, budget.name, str(int(start)), amount, unknown, calls, now)
    elif kind is PeriodKind.ROLLING:
        slot = slot_seconds(budget)
        low, _ = window_slots(budget, now)
        sums = _sums(
            db, "quarter", scope_sql, scope_args, low * slot, now + 1, billing, budget.basis
        )
        for quarter, (amount, unknown, calls) in sums.items():
            bucket = max(low, int(int(quarter) * QUARTER_S // slot))
            records.add_spend(db, budget.name, str(bucket), amount, unknown, calls, now)
    elif kind is PeriodKind.SESSION:
        live = [
            row
            for (row,) in db.execute(
                f"SELECT DISTINCT session_row FROM rollup WHERE quarter >= ?{scope_sql}",
                [int((now - SESSION_LOOKBACK_S) // QUARTER_S), *scope_args],
            )
        ]
        for row in live:
            sums = _sums(
                db,
                "''",
                f"{scope_sql} AND session_row = ?",
                [*scope_args, row],
                0,
                now + 1,
                billing,
                budget.basis,
            )
            for _, (amount, unknown, calls) in sums.items():
                records.add_spend(db, budget.name, row, amount, unknown, calls, now)


def _sums(
    db: sqlite3.Connection,
    group: str,
    scope_sql: str,
    scope_args: list[str],
    since: float,
    until: float,
    billing: BillingOf,
    basis: Basis,
) -> dict[str, tuple[Decimal, int, int]]:
    """(amount on `basis`, unknown calls, calls) per `group` value of the cells in range."""
    out: dict[str, tuple[Decimal, int, int]] = {}
    rows = db.execute(
        f"SELECT {group}, machine, profile, priced, estimated, dec_sum(amount), sum(calls) "
        f"FROM rollup WHERE quarter >= ? AND quarter < ?{scope_sql} "
        f"GROUP BY {group}, machine, profile, priced, estimated",
        [int(since // QUARTER_S), -(-int(until) // QUARTER_S), *scope_args],
    )
    for key, machine, profile, priced, estimated, amount, calls in rows:
        if not calls:
            continue
        bill = billing.get((machine, profile), Billing.API)
        got = counted(basis, (Decimal(amount) if priced else None, bool(estimated)), bill)
        total, unknown, n = out.get(str(key), (Decimal(0), 0, 0))
        if got is None:
            unknown += calls
        else:
            total += got
        out[str(key)] = (total, unknown, n + calls)
    if basis is not Basis.API:
        _add_credit_moves(db, group, scope_sql, scope_args, since, until, billing, out)
    return out


def _add_credit_moves(
    db: sqlite3.Connection,
    group: str,
    scope_sql: str,
    scope_args: list[str],
    since: float,
    until: float,
    billing: BillingOf,
    out: dict[str, tuple[Decimal, int, int]],
) -> None:
    """Add to `out` what the Agent SDK credit moved out of subscription_included in range (a
    subscription's overage and untold calls: paid), as the store keeps it per roll-up cell."""
    rows = db.execute(
        f"SELECT {group}, machine, profile, dec_sum(overage), dec_sum(untold) "
        f"FROM rollup_credit WHERE quarter >= ? AND quarter < ?{scope_sql} "
        f"GROUP BY {group}, machine, profile",
        [int(since // QUARTER_S), -(-int(until) // QUARTER_S), *scope_args],
    )
    for key, machine, profile, overage, untold in rows:
        moved = Moved(Decimal(overage or 0), Decimal(untold or 0))
        got = counted_move(Basis.PAID, moved, billing.get((machine, profile), Billing.API))
        if got:
            total, unknown, n = out.get(str(key), (Decimal(0), 0, 0))
            out[str(key)] = (total + got, unknown, n)


def _seed_quota(db: sqlite3.Connection, budget: Budget, now: float) -> None:
    window = budget.period.window
    since = now - QUOTA_WINDOW_S[window]
    for (payload,) in db.execute("SELECT payload FROM limits WHERE ts >= ?", (since,)):
        reading = unpack(payload)
        if (
            isinstance(reading, LimitEvent)
            and reading.window.value == window
            and reading.used_percent is not None
            and reading_matches(budget.scope, reading)
        ):
            bucket = quota_bucket(window, reading.ts, reading.resets_at)
            if float(bucket) > now:
                value = Decimal(str(reading.used_percent))
                records.raise_spend(db, budget.name, bucket, value, reading.ts)
