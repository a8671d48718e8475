"""Running totals: what one priced call adds to a scope, and the sums the ledger keeps.

`Figures` is computed once per call and added to every scope the call belongs to; subtracting
a call adds its `negated()` figures, so a superseded or retracted call leaves no trace. All
money is exact `Decimal` USD; callers add under `MONEY` so no sum is ever rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from enum import StrEnum
from typing import Final

from pricing import CostClass, PricedCall
from pricing.rollup import Row
from shared.events import Tokens, UsageEvent

ZERO: Final = Decimal(0)
# 60 digits: a fleet's yearly bill to the picodollar fits many times over, so no sum rounds.
MONEY: Final = Context(prec=60)


class Basis(StrEnum):
    """What a budget or a burn rate counts."""

    API_EQUIVALENT = "api_equivalent"  # every priced call at list API rates
    METERED = "metered"  # money actually paid: metered plus estimated (API calls, approximate)


@dataclass(slots=True)
class Figures:
    """One call's contribution to a total (or, negated, its withdrawal). Never mutated; not
    frozen because a frozen dataclass costs 6x more to build, once per ingested call."""

    calls: int
    input: int
    output: int
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    reasoning: int
    web_search_requests: int
    api_equivalent: Decimal
    metered: Decimal
    subscription_included: Decimal
    estimated: Decimal
    unknown_calls: int
    unknown_tokens: int

    @classmethod
    def of(cls, event: UsageEvent, priced: PricedCall) -> Figures:
        t = event.tokens
        amount = priced.api_equivalent
        unknown = amount is None or priced.cost_class is CostClass.UNKNOWN
        api = ZERO if unknown or amount is None else amount
        cost_class = priced.cost_class
        return cls(
            1,
            t.input,
            t.output,
            t.cache_read,
            t.cache_write_5m,
            t.cache_write_1h,
            t.reasoning,
            t.web_search_requests,
            api,
            api if cost_class is CostClass.METERED else ZERO,
            api if cost_class is CostClass.SUBSCRIPTION_INCLUDED else ZERO,
            api if cost_class is CostClass.ESTIMATED else ZERO,
            1 if unknown else 0,
            t.total if unknown else 0,
        )

    def negated(self) -> Figures:
        return Figures(
            -self.calls,
            -self.input,
            -self.output,
            -self.cache_read,
            -self.cache_write_5m,
            -self.cache_write_1h,
            -self.reasoning,
            -self.web_search_requests,
            -self.api_equivalent,
            -self.metered,
            -self.subscription_included,
            -self.estimated,
            -self.unknown_calls,
            -self.unknown_tokens,
        )

    @property
    def tokens(self) -> int:
        return (
            self.input
            + self.output
            + self.cache_read
            + self.cache_write_5m
            + self.cache_write_1h
            + self.reasoning
        )


@dataclass(slots=True)
class Totals:
    """The sums of one scope over one period. Unknown-price calls carry no dollar figure: they
    are counted in `unknown_calls` / `unknown_tokens` (their tokens are in the buckets too)."""

    calls: int = 0
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    web_search_requests: int = 0
    api_equivalent: Decimal = ZERO
    metered: Decimal = ZERO
    subscription_included: Decimal = ZERO
    estimated: Decimal = ZERO
    unknown_calls: int = 0
    unknown_tokens: int = 0

    def add(self, f: Figures | Totals) -> None:
        """Add `f` (call under `localcontext(MONEY)`: the sums must not round)."""
        self.calls += f.calls
        self.input += f.input
        self.output += f.output
        self.cache_read += f.cache_read
        self.cache_write_5m += f.cache_write_5m
        self.cache_write_1h += f.cache_write_1h
        self.reasoning += f.reasoning
        self.web_search_requests += f.web_search_requests
        self.api_equivalent += f.api_equivalent
        self.metered += f.metered
        self.subscription_included += f.subscription_included
        self.estimated += f.estimated
        self.unknown_calls += f.unknown_calls
        self.unknown_tokens += f.unknown_tokens

    def copy(self) -> Totals:
        out = Totals()
        out.add(self)
        return out

    @property
    def tokens(self) -> int:
        return (
            self.input
            + self.output
            + self.cache_read
            + self.cache_write_5m
            + self.cache_write_1h
            + self.reasoning
        )

    def amount(self, basis: Basis) -> Decimal:
        if basis is Basis.API_EQUIVALENT:
            return self.api_equivalent
        return self.metered + self.estimated

    def to_row(self, keys: dict[str, str | None] | None = None) -> Row:
        """The report row with these sums: `to_row(keys).to_json()` is the scan's row shape."""
        by_class = {
            CostClass.METERED: self.metered,
            CostClass.SUBSCRIPTION_INCLUDED: self.subscription_included,
            CostClass.ESTIMATED: self.estimated,
        }
        return Row(
            keys=dict(keys or {}),
            calls=self.calls,
            tokens=Tokens(
                self.input,
                self.output,
                self.cache_read,
                self.cache_write_5m,
                self.cache_write_1h,
                self.reasoning,
                self.web_search_requests,
            ),
            api_equivalent=self.api_equivalent,
            by_class={cls: amount for cls, amount in by_class.items() if amount},
            unknown_calls=self.unknown_calls,
            unknown_tokens=self.unknown_tokens,
        )
