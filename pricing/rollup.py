"""Group priced usage events into report rows: the one row shape of `node-agent scan --json`
and `fleet-hub report --json`.

A row carries its group keys, `calls`, `tokens` per bucket and `cost` per class as exact
decimal strings in USD. `cost.api_equivalent` is the list-price value of every priced call in
the row; each priced call's figure also sits in exactly one of `metered`,
`subscription_included`, `estimated`. Calls with no known price are never given a dollar
figure: they are counted in `unknown_calls` / `unknown_tokens`, and `cost.unknown` is null when
there are any (an amount exists but is not known), "0" when there are none.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any, Final, Protocol

import msgspec

from pricing import CostClass, PricedCall
from shared.events import Agent, Role, Tokens, UsageEvent

ZERO: Final = Decimal(0)
TOKEN_KEYS: Final = (
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
)
CLASS_KEYS: Final = {
    CostClass.METERED: "metered",
    CostClass.SUBSCRIPTION_INCLUDED: "subscription_included",
    CostClass.ESTIMATED: "estimated",
}


class Attribution(msgspec.Struct, frozen=True):
    """Who an event belongs to, where the event itself does not say (a scan's profile, a node)."""

    machine: str | None = None
    profile: str | None = None
    account: str | None = None


class Keyed(Protocol):
    """What a row's keys read of a call: a `UsageEvent`, or a reader's lighter view of one."""

    @property
    def ts(self) -> float: ...
    @property
    def model(self) -> str: ...
    @property
    def agent(self) -> Agent: ...
    @property
    def profile(self) -> str | None: ...
    @property
    def account(self) -> str | None: ...
    @property
    def machine(self) -> str: ...
    @property
    def project(self) -> str | None: ...
    @property
    def session_id(self) -> str: ...
    @property
    def role(self) -> Role: ...


RowKey = tuple[str | None, ...]
KeyFn = Callable[[Keyed, Attribution, tzinfo], str | None]


def _local(event: Keyed, tz: tzinfo) -> datetime:
    return datetime.fromtimestamp(event.ts, tz)


def _week(event: Keyed, _: Attribution, tz: tzinfo) -> str:
    year, week, _day = _local(event, tz).isocalendar()
    return f"{year}-W{week:02d}"


GROUP_KEYS: Final[dict[str, KeyFn]] = {
    "day": lambda e, a, tz: _local(e, tz).date().isoformat(),
    "week": _week,
    "month": lambda e, a, tz: _local(e, tz).strftime("%Y-%m"),
    "model": lambda e, a, tz: e.model,
    "agent": lambda e, a, tz: e.agent.value,
    "profile": lambda e, a, tz: e.profile or a.profile,
    "account": lambda e, a, tz: e.account or a.account,
    "machine": lambda e, a, tz: e.machine or a.machine,
    "project": lambda e, a, tz: e.project,
    "session": lambda e, a, tz: e.session_id,
    "role": lambda e, a, tz: e.role.value,
}


class UnknownGroupKeyError(ValueError):
    pass


def check_keys(keys: Sequence[str]) -> None:
    if bad := [k for k in keys if k not in GROUP_KEYS]:
        raise UnknownGroupKeyError(
            f"unknown grouping {', '.join(bad)}: choose from {', '.join(GROUP_KEYS)}"
        )


class Row(msgspec.Struct):
    keys: dict[str, str | None]
    calls: int = 0
    tokens: Tokens = msgspec.field(default_factory=Tokens)
    api_equivalent: Decimal = ZERO
    by_class: dict[CostClass, Decimal] = msgspec.field(default_factory=dict)
    unknown_calls: int = 0
    unknown_tokens: int = 0

    def add(self, event: UsageEvent, priced: PricedCall) -> None:
        self.add_calls(1, event.tokens, priced)

    def add_calls(self, calls: int, tokens: Tokens, priced: PricedCall) -> None:
        """`calls` calls with these summed tokens, priced together at `priced`."""
        self.calls += calls
        self.tokens = self.tokens + tokens
        if priced.api_equivalent is None or priced.cost_class is CostClass.UNKNOWN:
            self.unknown_calls += calls
            self.unknown_tokens += tokens.total
            return
        self.api_equivalent += priced.api_equivalent
        self.by_class[priced.cost_class] = (
            self.by_class.get(priced.cost_class, ZERO) + priced.api_equivalent
        )

    def move(self, overage: Decimal, untold: Decimal, *, estimated: bool) -> None:
        """Move what the Agent SDK credit takes out of subscription_included
        (`pricing.sdk_credit.Moved`): `overage` to metered (estimated when the price is),
        `untold` to estimated."""
        by_class = self.by_class
        included = CostClass.SUBSCRIPTION_INCLUDED
        by_class[included] = by_class.get(included, ZERO) - overage - untold
        to = CostClass.ESTIMATED if estimated else CostClass.METERED
        by_class[to] = by_class.get(to, ZERO) + overage
        by_class[CostClass.ESTIMATED] = by_class.get(CostClass.ESTIMATED, ZERO) + untold

    def merge(self, other: Row) -> None:
        self.calls += other.calls
        self.tokens = self.tokens + other.tokens
        self.api_equivalent += other.api_equivalent
        for cls, amount in other.by_class.items():
            self.by_class[cls] = self.by_class.get(cls, ZERO) + amount
        self.unknown_calls += other.unknown_calls
        self.unknown_tokens += other.unknown_tokens

    def cost(self, cls: CostClass) -> Decimal:
        return self.by_class.get(cls, ZERO)

    def to_json(self) -> dict[str, Any]:
        cost: dict[str, str | None] = {"api_equivalent": _dec(self.api_equivalent)}
        for cls, name in CLASS_KEYS.items():
            cost[name] = _dec(self.cost(cls))
        cost["unknown"] = None if self.unknown_calls else "0"
        return {
            **self.keys,
            "calls": self.calls,
            "tokens": {k: getattr(self.tokens, k) for k in TOKEN_KEYS},
            "web_search_requests": self.tokens.web_search_requests,
            "cost": cost,
            "unknown_calls": self.unknown_calls,
            "unknown_tokens": self.unknown_tokens,
        }


def _dec(value: Decimal) -> str:
    """Exact, without exponent notation and without trailing zeros past the cent."""
    if not value and not value.is_signed():  # most class figures of most rows
        return "0.00"
    text = format(value.normalize(), "f")
    if "." not in text:
        return text + ".00"
    whole, frac = text.split(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def money_text(value: Decimal) -> str:
    """A dollar figure as a row shows it."""
    return _dec(value)


class Rollup(msgspec.Struct):
    by: Sequence[str]
    tz: tzinfo
    rows: dict[RowKey, Row] = msgspec.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_keys(self.by)

    def add(self, event: UsageEvent, priced: PricedCall, attribution: Attribution) -> None:
        self.add_calls(self.key(event, attribution), 1, event.tokens, priced)

    def key(self, event: Keyed, attribution: Attribution) -> RowKey:
        """The row `event` belongs in."""
        return tuple(GROUP_KEYS[k](event, attribution, self.tz) for k in self.by)

    def add_calls(self, key: RowKey, calls: int, tokens: Tokens, priced: PricedCall) -> None:
        row = self.rows.get(key)
        if row is None:
            row = self.rows[key] = Row(keys=dict(zip(self.by, key, strict=True)))
        row.add_calls(calls, tokens, priced)

    @property
    def total(self) -> Row:
        """Every row added up: derived, so that an event is added once, not twice."""
        total = Row(keys={})
        for row in self.rows.values():
            total.merge(row)
        return total

    def sorted_rows(self) -> list[Row]:
        return [self.rows[k] for k in sorted(self.rows, key=lambda k: tuple(v or "" for v in k))]
