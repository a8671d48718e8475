"""The Agent SDK credit of a Claude subscription, and the one rule that classes each call by it.

Since 2026-06-15 a Claude Pro or Max plan has three meters, not one: the interactive 5-hour and
weekly windows; a monthly Agent SDK credit in dollars (per user, no rollover: $20 Pro, $100 Max
5x, $200 Max 20x) that `claude -p`, the Agent SDK and third-party apps on the plan draw from;
and overage billed at API rates once the credit is spent, only when extra usage is on
(research/peers-2026-12.md §0.5, §2.1).

Claude Code logs how it was started (`entrypoint`): "cli" is interactive (the windows cover
it); "sdk-cli", "sdk-ts", "sdk-py" are SDK calls, which draw the credit at their API-equivalent
price until it is spent, then are overage. A call whose log does not say (an older Claude Code,
another agent on the plan) is neither: it is counted apart as estimated, never guessed.

The class of a call (`CLASS_OF_DRAW`), used by the hub's store and ledger, its reports and
`node-agent scan` alike, so that every surface agrees to the cent:
- INTERACTIVE, CREDIT → subscription_included (the plan covers it);
- OVERAGE → metered (estimated when its price is: `classify` with API billing);
- REFUSED (past the credit with extra usage off: billed nowhere, the provider should have
  refused it) → subscription_included, and the credit's figures say so (`refused_usd`): the
  configured terms are likely wrong, which is a finding, not a bill;
- UNTOLD on a subscription with credit terms → estimated, with the reason; so is an SDK call
  of a subscription whose credit is not known (its plan is not one the table knows and no
  amount is configured): whether the credit covered it cannot be told (`draw_under`).

A call that crosses the credit is split: the part the credit covers is subscription_included,
the part past it is overage. Only API-equivalent amounts move between classes; the
API-equivalent figure itself never changes.

This is pricing's module (not the hub's) because `node-agent scan` applies the same rule (hence
msgspec structs, not dataclasses: a scan's start loads none).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from enum import StrEnum
from typing import Final

import msgspec

from pricing._classes import CostClass

# The credit each plan comes with, USD a month (research/peers-2026-12.md §0.5).
PLAN_CREDIT: Final[Mapping[str, Decimal]] = {
    "pro": Decimal(20),
    "max_5x": Decimal(100),
    "max_20x": Decimal(200),
}
INTERACTIVE: Final = frozenset({"cli"})
SDK_PREFIX: Final = "sdk-"
ZERO: Final = Decimal(0)
# The credit exists from this instant on: before it, the plan's windows covered every call.
CREDIT_SINCE: Final = datetime(2026, 6, 15, tzinfo=UTC).timestamp()


class Draw(StrEnum):
    """How a subscription call is paid."""

    INTERACTIVE = "interactive"  # the 5-hour and weekly windows: subscription-included
    CREDIT = "credit"  # the Agent SDK credit: subscription-included while it lasts
    OVERAGE = "overage"  # past the credit, extra usage on: metered at API rates
    REFUSED = "refused"  # past the credit, extra usage off: the provider should have refused
    UNTOLD = "untold"  # the log does not say how the agent was started: estimated


CLASS_OF_DRAW: Final[Mapping[Draw, CostClass]] = {
    Draw.INTERACTIVE: CostClass.SUBSCRIPTION_INCLUDED,
    Draw.CREDIT: CostClass.SUBSCRIPTION_INCLUDED,
    Draw.OVERAGE: CostClass.METERED,
    Draw.REFUSED: CostClass.SUBSCRIPTION_INCLUDED,
    Draw.UNTOLD: CostClass.ESTIMATED,
}
UNTOLD_REASON: Final = (
    "the log does not say whether the call was interactive or the Agent SDK, so whether "
    "the plan or the credit covered it is not known"
)


def draw_of(entrypoint: str | None) -> Draw:
    """What a call's `entrypoint` says about which meter it draws (before the credit is
    weighed): interactive, SDK (CREDIT), or untold."""
    if entrypoint in INTERACTIVE:
        return Draw.INTERACTIVE
    if entrypoint is not None and entrypoint.startswith(SDK_PREFIX):
        return Draw.CREDIT
    return Draw.UNTOLD


def draw_at(entrypoint: str | None, ts: float) -> Draw:
    """`draw_of`, and INTERACTIVE for every call before the credit existed."""
    return Draw.INTERACTIVE if ts < CREDIT_SINCE else draw_of(entrypoint)


class CreditTerms(msgspec.Struct, frozen=True):
    """A profile's credit: dollars a month, whether extra usage is on, the zone of its month.
    `known` False: a subscription whose credit nobody told (`credit_usd` is then 0 and unused)."""

    credit_usd: Decimal
    extra_usage: bool = False
    tz: tzinfo = UTC
    source: str = ""  # where the amount comes from: "plan max_20x" or the hub config
    known: bool = True

    def fingerprint(self) -> str:
        """What the classes depend on (a change re-draws the profile's months)."""
        amount = self.credit_usd.normalize() if self.known else "unknown"
        return f"{amount}|{int(self.extra_usage)}|{self.tz}"


UNKNOWN_CREDIT_REASON: Final = (
    "the profile's Agent SDK credit is not known (its plan is not one fleetmeter knows, and no "
    "sdk_credit is set in [[subscriptions]]), so whether the credit covered its SDK calls is not "
    "known"
)


def draw_under(entrypoint: str | None, ts: float, terms: CreditTerms) -> Draw:
    """`draw_at` for a profile with these terms: an SDK call is UNTOLD (estimated) when the
    credit it would draw is not known."""
    draw = draw_at(entrypoint, ts)
    return Draw.UNTOLD if draw is Draw.CREDIT and not terms.known else draw


def month_of(ts: float, tz: tzinfo) -> str:
    """The month (YYYY-MM) holding `ts` in `tz`: the credit's period."""
    local = datetime.fromtimestamp(ts, tz)
    return f"{local.year:04d}-{local.month:02d}"


def split(amount: Decimal | None, left: Decimal) -> tuple[Decimal, Decimal]:
    """An SDK call of API-equivalent `amount` against `left` of the credit: (the part past the
    credit, the credit left after it). An unpriced call draws nothing (its figure is unknown)."""
    if amount is None:
        return ZERO, left
    covered = min(amount, left)
    return amount - covered, left - covered


class Moved(msgspec.Struct, frozen=True):
    """What leaves subscription_included for a call: `overage` goes to metered (estimated when
    the price is), `untold` to estimated."""

    overage: Decimal = ZERO
    untold: Decimal = ZERO

    def __bool__(self) -> bool:
        return bool(self.overage or self.untold)


NOTHING: Final = Moved()


def moved(draw: Draw, amount: Decimal | None, past: Decimal, extra_usage: bool) -> Moved:
    """The rule (`CLASS_OF_DRAW`) as amounts: for an SDK call (CREDIT) `past` is its part
    past the credit, overage when extra usage is on, else refused (it stays included)."""
    if amount is None:
        return NOTHING
    if draw is Draw.UNTOLD:
        return Moved(untold=amount)
    if draw is Draw.CREDIT and past and extra_usage:
        return Moved(overage=past)
    return NOTHING


class Drawn(msgspec.Struct, frozen=True):
    """One call weighed against its month's credit."""

    draw: Draw  # as logged: INTERACTIVE, CREDIT (an SDK call) or UNTOLD
    past: Decimal  # an SDK call's part past the credit
    moved: Moved


def draw_calls(
    calls: Iterable[tuple[float, str, str | None, Decimal | None]], terms: CreditTerms
) -> Iterator[tuple[str, Drawn]]:
    """Each call (ts, event id, entrypoint, API-equivalent amount or None) of one profile
    weighed against its credit, month by month in the terms' zone, in (time, event id) order
    whatever order they are given in: (event id, how it is drawn)."""
    left: dict[str, Decimal] = {}
    bounds = (0.0, 0.0, "")  # the last month's [start, end) and name: most calls share it
    for ts, event_id, entrypoint, amount in sorted(calls, key=lambda c: (c[0], c[1])):
        draw = draw_under(entrypoint, ts, terms)
        past = ZERO
        if draw is Draw.CREDIT:
            if not bounds[0] <= ts < bounds[1]:
                bounds = _month_bounds(ts, terms.tz)
            month = bounds[2]
            past, left[month] = split(amount, left.get(month, terms.credit_usd))
        yield event_id, Drawn(draw, past, moved(draw, amount, past, terms.extra_usage))


def _month_bounds(ts: float, tz: tzinfo) -> tuple[float, float, str]:
    local = datetime.fromtimestamp(ts, tz)
    start = datetime(local.year, local.month, 1, tzinfo=tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    end = datetime(year, month, 1, tzinfo=tz)
    return start.timestamp(), end.timestamp(), f"{local.year:04d}-{local.month:02d}"
