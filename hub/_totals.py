"""Running totals: what priced calls add to a scope, and the sums the ledger keeps.

A call is added to one `Totals` (`add_call`), and sums are added to the scopes they belong to
(`add`); withdrawing a call adds it with sign -1, so a superseded or retracted call leaves no
trace. All money is exact `Decimal` USD; callers add under `MONEY` so no sum is ever rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal
from enum import StrEnum
from typing import Final

from pricing import CostClass, PricedCall
from pricing.rollup import Row
from shared.events import Tokens

ZERO: Final = Decimal(0)
# 60 digits: a fleet's yearly bill to the picodollar fits many times over, so no sum rounds.
MONEY: Final = Context(prec=60)


class Basis(StrEnum):
    """What a budget or a burn rate counts."""

    API_EQUIVALENT = "api_equivalent"  # every priced call at list API rates
    METERED = "metered"  # money actually paid: metered plus estimated (API calls, approximate)


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

    def add_call(self, t: Tokens, priced: PricedCall, sign: int = 1) -> None:
        """Add one priced call with tokens `t`, or withdraw it (`sign` -1). Call under
        `localcontext(MONEY)`: the sums must not round."""
        self.calls += sign
        self.input += sign * t.input
        self.output += sign * t.output
        self.cache_read += sign * t.cache_read
        self.cache_write_5m += sign * t.cache_write_5m
        self.cache_write_1h += sign * t.cache_write_1h
        self.reasoning += sign * t.reasoning
        self.web_search_requests += sign * t.web_search_requests
        amount, cost_class = priced.api_equivalent, priced.cost_class
        if amount is None or cost_class is CostClass.UNKNOWN:
            self.unknown_calls += sign
            self.unknown_tokens += sign * t.total
            return
        if sign < 0:
            amount = -amount
        self.api_equivalent += amount
        if cost_class is CostClass.METERED:
            self.metered += amount
        elif cost_class is CostClass.SUBSCRIPTION_INCLUDED:
            self.subscription_included += amount
        elif cost_class is CostClass.ESTIMATED:
            self.estimated += amount

    def add(self, f: Totals) -> None:
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

    def move(self, overage: Decimal, untold: Decimal, *, estimated: bool) -> None:
        """Move what the Agent SDK credit takes out of subscription_included
        (`pricing.sdk_credit.Moved`): `overage` to metered (estimated when the price is),
        `untold` to estimated. Negative amounts move back. Call under `localcontext(MONEY)`."""
        self.subscription_included -= overage + untold
        if estimated:
            self.estimated += overage
        else:
            self.metered += overage
        self.estimated += untold

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
