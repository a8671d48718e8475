"""The arithmetic: one call's tokens × one price period → exact USD, and why it may be approximate.

cost = Σ tokens × rate / 1,000,000 + web searches × rate / 1,000, then × every applicable
multiplier (service tier, speed, inference geography), in `Decimal` with no rounding anywhere:
rounding is for display. The long-context rule is a cliff on the whole request: once the prompt
(uncached input + cache reads + cache writes) is strictly above a threshold, every bucket of the
call, output included, uses that tier's rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import (
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    localcontext,
)
from typing import Final

from pricing._types import TOKEN_CLASSES, Modifier, PricePeriod, RateSet
from shared.events import Tokens

# Values that mean "no modifier": what agents log for the ordinary path.
PLAIN_SERVICE_TIERS: Final = frozenset({"", "standard", "default", "auto"})
PLAIN_SPEEDS: Final = frozenset({"", "standard"})
PLAIN_GEOS: Final = frozenset({"", "global", "not_available"})
# Tier names the engine knows of, so a missing entry reads "not priced" rather than "unknown".
KNOWN_SERVICE_TIERS: Final = frozenset({"batch", "flex", "priority", "fast", "scale"})


@dataclass(frozen=True, slots=True)
class Quote:
    amount: Decimal
    estimated: bool
    notes: tuple[str, ...]


# Enough digits for any realistic bill, and a trap so that a rounding can never pass silently.
# One shared context: `localcontext(_EXACT)` copies it, cheaper than building one per call.
_EXACT: Final = Context(
    prec=60, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact, Rounded]
)


def _word(value: str | None) -> str:
    return (value or "").strip().lower()


def _money(rate: Decimal) -> str:
    return f"${rate}/MTok"


class _Notes:
    def __init__(self) -> None:
        self.estimated = False
        self.items: list[str] = []

    def add(self, *notes: str) -> None:
        self.estimated = True
        for note in notes:
            if note not in self.items:
                self.items.append(note)

    def flagged(self, estimated: bool, notes: tuple[str, ...], fallback: str) -> None:
        if estimated:
            self.add(*(notes or (fallback,)))


def quote(
    period: PricePeriod,
    tokens: Tokens,
    *,
    service_tier: str | None = None,
    speed: str | None = None,
    inference_geo: str | None = None,
    cache_write_unsplit: bool = False,
) -> Quote:
    model = period.model_id
    notes = _Notes()
    notes.flagged(
        period.estimated, period.notes, f"the {model} price for this period is approximate"
    )

    service = _service_tier(period, service_tier, notes)
    rates = _rates(period, service, tokens.prompt, notes)

    with localcontext(_EXACT):
        per_million = Decimal(0)
        for cls in TOKEN_CLASSES:
            count: int = getattr(tokens, cls)
            if not count:
                continue
            rate: Decimal | None = getattr(rates, cls)
            if rate is None:
                notes.add(f"{count:,} {cls} tokens left unpriced: {model} has no {cls} rate")
                continue
            per_million += count * rate
        amount = per_million.scaleb(-6)
        if tokens.web_search_requests:
            search = period.rates.web_search_per_1k  # per request: the same under any cliff
            if search is None:
                notes.add(
                    f"{tokens.web_search_requests:,} web searches left unpriced: "
                    f"{model} has no web search rate"
                )
            else:
                amount += (tokens.web_search_requests * search).scaleb(-3)

        if cache_write_unsplit and tokens.cache_write_5m:
            five, hour = rates.cache_write_5m, rates.cache_write_1h
            if five is not None and hour is not None and five != hour:
                notes.add(
                    f"cache writes were logged without their 5m/1h split: "
                    f"{tokens.cache_write_5m:,} tokens priced at the 5-minute rate {_money(five)} "
                    f"(the 1-hour rate is {_money(hour)})"
                )

        factor = Decimal(1)
        if service is not None and service.multiplier is not None:
            factor *= service.multiplier
        for kind, value, plain, what in (
            ("speeds", speed, PLAIN_SPEEDS, "speed"),
            ("inference_geos", inference_geo, PLAIN_GEOS, "inference geo"),
        ):
            name = _word(value)
            if name in plain:
                continue
            mod = period.modifiers(kind).get(name)
            if mod is None or mod.multiplier is None:
                why = f" ({'; '.join(mod.notes)})" if mod is not None and mod.notes else ""
                notes.add(
                    f"{what} {value!r} has no known price for {model}; priced without it{why}"
                )
                continue
            notes.flagged(mod.estimated, mod.notes, f"the {what} {name!r} price is approximate")
            factor *= mod.multiplier
        amount *= factor
    return Quote(amount, notes.estimated, tuple(notes.items))


def _service_tier(period: PricePeriod, value: str | None, notes: _Notes) -> Modifier | None:
    name = _word(value)
    if name in PLAIN_SERVICE_TIERS:
        return None
    model = period.model_id
    mod = period.service_tiers.get(name)
    if mod is None:
        if name in KNOWN_SERVICE_TIERS:
            notes.add(f"no {name} price is known for {model}; priced at standard")
        else:
            notes.add(f"unrecognised service tier {value!r}; priced at standard")
        return None
    if not mod.priced:
        notes.add(f"{name} tier has no per-token price for {model}; priced at standard", *mod.notes)
        return None
    notes.flagged(mod.estimated, mod.notes, f"the {name} price of {model} is approximate")
    return mod


def _rates(period: PricePeriod, service: Modifier | None, prompt: int, notes: _Notes) -> RateSet:
    cliff = period.tier_for(prompt)
    if cliff is not None:
        notes.flagged(cliff.estimated, cliff.notes, "the long-context price is approximate")
    if service is None or service.rates is None:
        return cliff.rates if cliff is not None else period.rates
    if cliff is None:
        return service.rates
    own = next((t for t in service.tiers if t.above == cliff.above), None)
    if own is None:
        notes.add(
            f"no {service.name} rate is known for prompts above {cliff.above:,} tokens on "
            f"{period.model_id}; priced at its {service.name} base rates"
        )
        return service.rates
    notes.flagged(own.estimated, own.notes, f"the long-context {service.name} price is approximate")
    return own.rates
