"""The arithmetic: one call's tokens × one price period → exact USD, and why it may be approximate.

cost = Σ tokens × rate / 1,000,000 + web searches × rate / 1,000, then × every applicable
multiplier (service tier, speed, inference geography), in `Decimal` with no rounding anywhere:
rounding is for display. The long-context rule is a cliff on the whole request: once the prompt
(uncached input + cache reads + cache writes) is strictly above a threshold, every bucket of the
call, output included, uses that tier's rates.
"""

from __future__ import annotations

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

import msgspec

from pricing._types import TOKEN_CLASSES, Modifier, PricePeriod, RateSet, Tier
from shared.events import Tokens

# Values that mean "no modifier": what agents log for the ordinary path.
PLAIN_SERVICE_TIERS: Final = frozenset({"", "standard", "default", "auto"})
PLAIN_SPEEDS: Final = frozenset({"", "standard"})
PLAIN_GEOS: Final = frozenset({"", "global", "not_available"})
# Tier names the engine knows of, so a missing entry reads "not priced" rather than "unknown".
KNOWN_SERVICE_TIERS: Final = frozenset({"batch", "flex", "priority", "fast", "scale"})


# A call's counts in the order of `Tokens`' fields (what `Tokens(*counts)` rebuilds).
Counts = tuple[int, ...]
_COUNT_AT: Final = {name: i for i, name in enumerate(Tokens.__struct_fields__)}
_WEB_AT: Final = _COUNT_AT["web_search_requests"]
_CW5_AT: Final = _COUNT_AT["cache_write_5m"]


# Structs, not dataclasses: a dataclass's definition costs ~0.5 ms of every scan that prices.
class Quote(msgspec.Struct, frozen=True, gc=False):
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


class RatePlan(msgspec.Struct, frozen=True, eq=False, gc=False):
    """Everything that fixes a call's price except its token counts: the rates after the
    long-context cliff and the service tier, the multiplier, and the notes that hold whatever the
    counts. Under one plan a call's amount is linear in its counts, so calls that share a plan
    can be priced as one sum, exactly (`amount`)."""

    model_id: str
    priced: tuple[tuple[str, Decimal], ...]  # (token class, rate) for the classes with a rate
    unpriced: tuple[str, ...]  # token classes with no rate under this plan
    search: Decimal | None  # USD per 1,000 web searches
    factor: Decimal
    lead: tuple[str, ...]  # notes before the count-dependent ones (period, service tier, cliff)
    trail: tuple[str, ...]  # and after them (speed, inference geography)
    notes: tuple[str, ...]  # lead and trail: a call's notes when its counts add none
    estimated: bool
    split_rates: tuple[Decimal, Decimal] | None  # the 5m and 1h write rates, when both differ
    _unpriced_at: tuple[int, ...] = ()  # `unpriced` as count indices (set from it, not given)

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(
            self, "_unpriced_at", tuple(_COUNT_AT[c] for c in self.unpriced)
        )

    def amount(self, tokens: Tokens) -> Decimal:
        """Exact USD for these counts (one call's, or the sum of several calls' under this plan)."""
        with localcontext(_EXACT):
            per_million = Decimal(0)
            for cls, rate in self.priced:
                count: int = getattr(tokens, cls)
                if count:
                    per_million += count * rate
            amount = per_million.scaleb(-6)
            if tokens.web_search_requests and self.search is not None:
                # per request: the same under any cliff
                amount += (tokens.web_search_requests * self.search).scaleb(-3)
            return amount * self.factor

    def estimated_for(self, tokens: Tokens, cache_write_unsplit: bool) -> bool:
        """Whether a call with these counts is priced approximately (see `quote` for why)."""
        return self.estimated or self._caveats(tokens, cache_write_unsplit)

    def estimated_for_counts(self, counts: Counts, cache_write_unsplit: bool) -> bool:
        """`estimated_for` of counts in the order of `Tokens`' fields (no `Tokens` built)."""
        if self.estimated:
            return True
        if any(counts[i] for i in self._unpriced_at):
            return True
        if counts[_WEB_AT] and self.search is None:
            return True
        return bool(cache_write_unsplit and counts[_CW5_AT] and self.split_rates)

    def _caveats(self, tokens: Tokens, cache_write_unsplit: bool) -> bool:
        """Whether these counts add notes of their own (`quote` says which)."""
        return (
            any(getattr(tokens, cls) for cls in self.unpriced)
            or bool(tokens.web_search_requests and self.search is None)
            or bool(cache_write_unsplit and tokens.cache_write_5m and self.split_rates)
        )

    def quote(self, tokens: Tokens, cache_write_unsplit: bool = False) -> Quote:
        if not self._caveats(tokens, cache_write_unsplit):  # nearly every call
            return Quote(self.amount(tokens), self.estimated, self.notes)
        return self._full_quote(tokens, cache_write_unsplit)

    def _full_quote(self, tokens: Tokens, cache_write_unsplit: bool) -> Quote:
        notes = _Notes()
        notes.items = list(self.lead)
        notes.estimated = self.estimated
        model = self.model_id
        for cls in self.unpriced:
            count: int = getattr(tokens, cls)
            if count:
                notes.add(f"{count:,} {cls} tokens left unpriced: {model} has no {cls} rate")
        if tokens.web_search_requests and self.search is None:
            notes.add(
                f"{tokens.web_search_requests:,} web searches left unpriced: "
                f"{model} has no web search rate"
            )
        if cache_write_unsplit and tokens.cache_write_5m and self.split_rates:
            five, hour = self.split_rates
            notes.add(
                f"cache writes were logged without their 5m/1h split: "
                f"{tokens.cache_write_5m:,} tokens priced at the 5-minute rate {_money(five)} "
                f"(the 1-hour rate is {_money(hour)})"
            )
        if self.trail:
            notes.add(*self.trail)
        return Quote(self.amount(tokens), notes.estimated, tuple(notes.items))


def rate_plan(
    period: PricePeriod,
    cliff: Tier | None,
    *,
    service_tier: str | None = None,
    speed: str | None = None,
    inference_geo: str | None = None,
) -> RatePlan:
    """The plan of a call under `period` whose prompt crossed `cliff` (`period.tier_for`)."""
    model = period.model_id
    lead = _Notes()
    lead.flagged(
        period.estimated, period.notes, f"the {model} price for this period is approximate"
    )
    service = _service_tier(period, service_tier, lead)
    rates = _rates(period, service, cliff, lead)

    trail = _Notes()
    with localcontext(_EXACT):
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
                trail.add(
                    f"{what} {value!r} has no known price for {model}; priced without it{why}"
                )
                continue
            trail.flagged(mod.estimated, mod.notes, f"the {what} {name!r} price is approximate")
            factor *= mod.multiplier

    five, hour = rates.cache_write_5m, rates.cache_write_1h
    return RatePlan(
        model_id=model,
        priced=tuple((c, r) for c in TOKEN_CLASSES if (r := getattr(rates, c)) is not None),
        unpriced=tuple(c for c in TOKEN_CLASSES if getattr(rates, c) is None),
        search=period.rates.web_search_per_1k,
        factor=factor,
        lead=tuple(lead.items),
        trail=tuple(trail.items),
        notes=tuple(dict.fromkeys((*lead.items, *trail.items))),
        estimated=lead.estimated or trail.estimated,
        split_rates=(five, hour)
        if five is not None and hour is not None and five != hour
        else None,
    )


def quote(
    period: PricePeriod,
    tokens: Tokens,
    *,
    service_tier: str | None = None,
    speed: str | None = None,
    inference_geo: str | None = None,
    cache_write_unsplit: bool = False,
) -> Quote:
    """One call's price: its plan, then its counts."""
    plan = rate_plan(
        period,
        period.tier_for(tokens.prompt),
        service_tier=service_tier,
        speed=speed,
        inference_geo=inference_geo,
    )
    return plan.quote(tokens, cache_write_unsplit)


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


def _rates(
    period: PricePeriod, service: Modifier | None, cliff: Tier | None, notes: _Notes
) -> RateSet:
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
