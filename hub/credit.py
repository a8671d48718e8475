"""The Agent SDK credit of a Claude subscription, and the overage after it (since 2026-06-15).

A Claude Pro or Max plan has three meters, not one: the interactive 5-hour and weekly windows;
a monthly Agent SDK credit in dollars (per user, no rollover: $20 Pro, $100 Max 5x, $200 Max
20x) that `claude -p`, the Agent SDK and third-party apps on the plan draw from; and overage
billed at API rates once the credit is spent, only when extra usage is on.

The rule that classes each call is `pricing.sdk_credit` (the scan applies it too); the hub's
store keeps each profile-month's draws (`hub._credit_store`). Claude Code logs how it was
started (`entrypoint`): "cli" is interactive (the windows cover it); "sdk-cli", "sdk-ts",
"sdk-py" are SDK calls, which draw the credit at their API-equivalent price until it is spent,
then are overage. A call whose log does not say (an older Claude Code, another agent on the
plan) is neither: it is counted apart as estimated, never guessed.

`meter_month` recomputes a profile's month from its stored calls, in (time, event id) order,
so the result is the same whatever order and however often the calls arrived.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any

from pricing.sdk_credit import (
    PLAN_CREDIT,
    UNKNOWN_CREDIT_REASON,
    ZERO,
    CreditTerms,
    Draw,
    draw_of,
    draw_under,
)
from shared.events import UsageEvent

__all__ = [
    "PLAN_CREDIT",
    "ZERO",
    "CreditMonth",
    "CreditTerms",
    "Draw",
    "draw_of",
    "meter_month",
    "month_bounds",
]


@dataclass(slots=True)
class CreditMonth:
    """One profile's month: the credit drawn and what went past it."""

    month: str  # YYYY-MM in the terms' zone
    terms: CreditTerms
    used_usd: Decimal = ZERO  # credit drawn (API-equivalent of SDK calls, up to the credit)
    overage_usd: Decimal = ZERO  # SDK spend past the credit, extra usage on: billed
    refused_usd: Decimal = ZERO  # SDK spend past the credit with extra usage off
    untold_usd: Decimal = ZERO  # calls whose log does not say how the agent was started
    interactive_usd: Decimal = ZERO  # interactive calls (the windows), API-equivalent
    sdk_calls: int = 0
    overage_calls: int = 0  # calls wholly or partly past the credit
    untold_calls: int = 0
    unpriced_sdk_calls: int = 0  # SDK calls with no known price: the credit drawn is a floor
    # Overage per (UTC day, model as logged): what reconciliation holds against the bill.
    overage_by_day: dict[tuple[date, str], Decimal] = field(default_factory=dict)
    # Untold calls per (UTC day, model): estimated, but not expected on the bill.
    untold_by_day: dict[tuple[date, str], Decimal] = field(default_factory=dict)

    @property
    def remaining_usd(self) -> Decimal | None:
        """None when the credit is not known."""
        if not self.terms.known:
            return None
        return max(self.terms.credit_usd - self.used_usd, ZERO)

    @property
    def estimated(self) -> bool:
        """The figures rest on calls the logs could not place, or could not price, or on a
        credit nobody told."""
        return bool(self.untold_calls or self.unpriced_sdk_calls or not self.terms.known)

    def to_json(self) -> dict[str, Any]:
        return {
            "month": self.month,
            "credit_usd": _usd(self.terms.credit_usd) if self.terms.known else None,
            "credit_known": self.terms.known,
            "credit_from": self.terms.source,
            "used_usd": _usd(self.used_usd),
            "remaining_usd": None if self.remaining_usd is None else _usd(self.remaining_usd),
            "overage_usd": _usd(self.overage_usd),
            "extra_usage": self.terms.extra_usage,
            "refused_usd": _usd(self.refused_usd),
            "untold_usd": _usd(self.untold_usd),
            "sdk_calls": self.sdk_calls,
            "overage_calls": self.overage_calls,
            "untold_calls": self.untold_calls,
            "unpriced_sdk_calls": self.unpriced_sdk_calls,
            "estimated": self.estimated,
            "note": self.note(),
        }

    def note(self) -> str:
        """Why the figures are estimated, in words (empty when they are not)."""
        parts = []
        if not self.terms.known:
            parts.append(
                f"{self.untold_calls} Agent SDK or unplaced call(s) "
                f"(${_usd(self.untold_usd)} API-equivalent) counted as estimated: "
                f"{UNKNOWN_CREDIT_REASON}"
            )
        elif self.untold_calls:
            parts.append(
                f"{self.untold_calls} call(s) (${_usd(self.untold_usd)} API-equivalent) whose "
                "log does not say whether it was interactive or the Agent SDK: not counted "
                "against the credit"
            )
        if self.unpriced_sdk_calls:
            parts.append(
                f"{self.unpriced_sdk_calls} SDK call(s) with no known price: the credit drawn "
                "is at least this"
            )
        if self.refused_usd:
            parts.append(
                f"${_usd(self.refused_usd)} of SDK calls past the credit with extra usage off: "
                "billed nowhere, so counted as included (check the credit amount and "
                "extra_usage in [[subscriptions]])"
            )
        return "; ".join(parts)


def _usd(amount: Decimal) -> str:
    """Exact, without the stored figures' trailing zeros ("25", "0.3375")."""
    return format(amount.normalize(), "f")


def month_bounds(now: float, tz: tzinfo) -> tuple[float, float, str]:
    """[start, end) of the calendar month holding `now` in `tz`, as epoch seconds, and its
    name (YYYY-MM)."""
    local = datetime.fromtimestamp(now, tz)
    start = datetime(local.year, local.month, 1, tzinfo=tz)
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    end = datetime(year, month, 1, tzinfo=tz)
    return start.timestamp(), end.timestamp(), f"{local.year:04d}-{local.month:02d}"


def meter_month(
    calls: Iterable[tuple[UsageEvent, Decimal | None]], terms: CreditTerms, month: str
) -> CreditMonth:
    """The month of one profile from its counted calls in that month (each with its
    API-equivalent price, None when unknown), taken in (time, event id) order."""
    out = CreditMonth(month, terms)
    left = terms.credit_usd
    for event, amount in sorted(calls, key=lambda c: (c[0].ts, c[0].event_id)):
        draw = draw_under(event.entrypoint, event.ts, terms)
        if draw is Draw.INTERACTIVE:
            out.interactive_usd += amount or ZERO
            continue
        if draw is Draw.UNTOLD:
            out.untold_calls += 1
            out.untold_usd += amount or ZERO
            if amount is not None:
                key = (datetime.fromtimestamp(event.ts, UTC).date(), event.model)
                out.untold_by_day[key] = out.untold_by_day.get(key, ZERO) + amount
            continue
        out.sdk_calls += 1
        if amount is None:
            out.unpriced_sdk_calls += 1
            continue
        covered = min(amount, left)
        left -= covered
        out.used_usd += covered
        past = amount - covered
        if not past:
            continue
        out.overage_calls += 1
        if terms.extra_usage:
            out.overage_usd += past
            day = datetime.fromtimestamp(event.ts, UTC).date()
            key = (day, event.model)
            out.overage_by_day[key] = out.overage_by_day.get(key, ZERO) + past
        else:
            out.refused_usd += past
    return out
