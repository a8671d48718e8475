"""Cursor's own dollars as billed figures: the usage CSV the nodes read states what Cursor charged
for each row (`reported_cost_usd` of the stored calls); here the fleet's estimate for the same
calls is held against it, per UTC day, model and MACHINE/PROFILE (Cursor has no API keys).

What "billed" means (docs/billing-imports.md, "Cursor"):

- an `On-Demand` row (or any kind but `Included`) is usage billed past the plan: its Cost is
  money charged. The fleet's side is its paid figure, or its subscription-included one when the
  profile is on a plan, so that usage the fleet classed as included but Cursor charged is found
  as `overage`;
- an `Included` row is charged against the plan's included usage, not billed as money: its Cost
  is Cursor's valuation of the usage. Those rows are kept apart (key `MACHINE/PROFILE included`)
  and held against the fleet's API-equivalent figure: a drift there is a price the fleet reads
  differently from Cursor, never overage;
- a row whose Cost is a label (`Included`, `-`) has no figure: its calls are compared on
  neither side. So are calls the fleet has no price for (Cursor's `auto`): they are counted in
  the fleet's `unknown_calls`.

The CSV's `Date` is UTC (ISO with `Z`; a date-only row is read as that UTC day by the node), so
rows fall on the same UTC days as every other provider's. Both sides count the same rows, so
tokens always agree: a drift is `price` or `overage`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from hub.reconcile.billed import BilledFigure
from hub.reconcile.fleet import FleetFigure, RowKey
from hub.reconcile.imports import UNSPLIT
from pricing import Billing, CostClass, PriceBook, classify
from shared.events import Agent, UsageEvent

PROVIDER: Final = "cursor"
INCLUDED: Final = "included"
VALUATION: Final = "Cursor's valuation of included usage (charged to the plan, not billed)"


@dataclass(slots=True)
class CursorSide:
    fleet: dict[RowKey, FleetFigure] = field(default_factory=dict)
    billed: dict[RowKey, BilledFigure] = field(default_factory=dict)
    days: set[date] = field(default_factory=set)  # days with a call carrying Cursor's dollars


def cursor_side(
    events: Iterable[UsageEvent],
    book: PriceBook,
    billing: Mapping[tuple[str, str], Billing],
    first: date,
    last: date,
) -> CursorSide:
    side = CursorSide()
    for event in events:
        if event.agent != Agent.CURSOR or event.reported_cost_usd is None:
            continue
        if event.duplicate_of is not None:
            continue  # a retraction counts nothing
        day = datetime.fromtimestamp(event.ts, UTC).date()
        if not first <= day <= last:
            continue
        reported = _dollars(event.reported_cost_usd)
        if reported is None:
            continue
        included = (event.service_tier or "").strip().casefold() == INCLUDED
        profile = event.profile or "-"
        key = f"{event.machine}/{profile}" + (f" {INCLUDED}" if included else "")
        row: RowKey = (PROVIDER, day, event.model, key)
        fleet = side.fleet.setdefault(row, FleetFigure())
        fleet.profiles.add(f"{event.machine}/{profile}")
        try:
            priced = book.price(event, Billing.API)
        except Exception:  # a broken table: the call is unknown, never $0
            priced = None
        amount = None if priced is None else priced.api_equivalent
        if amount is None:
            fleet.unknown_calls += 1
            continue
        assert priced is not None
        side.days.add(day)
        billed = side.billed.setdefault(row, BilledFigure())
        billed.tokens = billed.tokens + event.tokens
        billed.add(UNSPLIT, reported)
        fleet.tokens = fleet.tokens + event.tokens
        fleet.api_equivalent += amount
        if included:
            billed.other.append(VALUATION)
            fleet.paid += amount  # held against Cursor's valuation, not against money
            continue
        plan = billing.get((event.machine, event.profile or ""), Billing.API)
        if classify(True, priced.estimated, plan) == CostClass.SUBSCRIPTION_INCLUDED:
            fleet.subscription += amount
        else:
            fleet.paid += amount
    return side


def _dollars(text: str) -> Decimal | None:
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None
