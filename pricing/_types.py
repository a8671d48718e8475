"""The shapes a loaded price table takes: rate sets, cliff tiers, modifiers, price periods.

All rates are USD per million tokens (web search: USD per 1,000 requests) as exact `Decimal`s,
written out per token class in the tables; nothing here derives one rate from another.

msgspec Structs rather than dataclasses: every scan imports these types and unpickles the cached
tables into a thousand of them, both several times cheaper with Structs (frozen and equal field
by field all the same; copy with `msgspec.structs.replace`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from typing import Final

import msgspec

# The token classes of `shared.events.Tokens`, in the order bills list them.
TOKEN_CLASSES: Final = (
    "input",
    "output",
    "reasoning",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
)
WEB_SEARCH: Final = "web_search_per_1k"
RATE_KEYS: Final = (*TOKEN_CLASSES, WEB_SEARCH)
# Every base rate set must price these: a model always has input and output, and reasoning
# is written out even where it equals output so the table never relies on a fallback.
REQUIRED_CLASSES: Final = ("input", "output", "reasoning")

MODIFIER_KINDS: Final = ("service_tiers", "speeds", "inference_geos")


class Source(msgspec.Struct, frozen=True):
    """Where figures came from: a name, a URL or repository path, and when they were checked."""

    name: str
    ref: str
    checked: date
    covers: str | None = None  # which figures, when a model cites several sources


class RateSet(msgspec.Struct, frozen=True):
    """Explicit rates per token class (USD/MTok) and web search (USD per 1,000 requests)."""

    input: Decimal | None = None
    output: Decimal | None = None
    reasoning: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    web_search_per_1k: Decimal | None = None

    def get(self, key: str) -> Decimal | None:
        value: Decimal | None = getattr(self, key)
        return value

    def token_classes(self) -> frozenset[str]:
        return frozenset(k for k in TOKEN_CLASSES if self.get(k) is not None)


class Tier(msgspec.Struct, frozen=True):
    """A cliff: once a request's prompt exceeds `above` tokens, every token of it uses `rates`."""

    above: int
    rates: RateSet
    estimated: bool = False
    notes: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()


class Modifier(msgspec.Struct, frozen=True):
    """A service tier, speed or inference geography and what it does to a call's price.

    Either a `multiplier` on the whole call, or explicit `rates` (with their own cliff `tiers`)
    that replace the base rates, or neither: a known option with no public price, which is
    priced at standard and marked estimated.
    """

    kind: str  # "service_tiers" | "speeds" | "inference_geos"
    name: str
    multiplier: Decimal | None = None
    rates: RateSet | None = None
    tiers: tuple[Tier, ...] = ()
    estimated: bool = False
    notes: tuple[str, ...] = ()
    sources: tuple[Source, ...] = ()

    @property
    def priced(self) -> bool:
        return self.multiplier is not None or self.rates is not None


class PricePeriod(msgspec.Struct, frozen=True):
    """The prices of one model from `start` (UTC, inclusive) until `end` (exclusive, or open)."""

    provider: str
    model_id: str
    model_name: str
    start: datetime
    end: datetime | None
    rates: RateSet
    tiers: tuple[Tier, ...] = ()
    service_tiers: Mapping[str, Modifier] = msgspec.field(default_factory=dict)
    speeds: Mapping[str, Modifier] = msgspec.field(default_factory=dict)
    inference_geos: Mapping[str, Modifier] = msgspec.field(default_factory=dict)
    estimated: bool = False
    notes: tuple[str, ...] = ()  # about this period; the engine's reasons when `estimated`
    sources: tuple[Source, ...] = ()  # the period's own, then the model's
    ratio_exception: str | None = None
    model_notes: tuple[str, ...] = ()  # [unverified] / [conflict] remarks on the whole model
    file: str = ""

    def modifiers(self, kind: str) -> Mapping[str, Modifier]:
        found: Mapping[str, Modifier] = getattr(self, kind)
        return found

    def tier_for(self, prompt_tokens: int) -> Tier | None:
        """The highest cliff the prompt is strictly above (exactly at the threshold stays below)."""
        crossed = None
        for tier in self.tiers:
            if prompt_tokens > tier.above:
                crossed = tier
        return crossed


class ModelEntry(msgspec.Struct, frozen=True):
    provider: str
    id: str
    name: str
    names: tuple[str, ...]  # normalised names that resolve to this model, the id included
    periods: tuple[PricePeriod, ...]
    notes: tuple[str, ...] = ()
    ratio_exception: str | None = None

    def at(self, when: datetime) -> PricePeriod | None:
        # Periods are sorted and few (a price change every few months): newest first.
        for period in reversed(self.periods):
            if period.start <= when:
                # a period with an `until` leaves a gap after it: no price there
                return period if period.end is None or when < period.end else None
        return None


class Label(msgspec.Struct, frozen=True):
    """A name agents log in the model field that is not a model (so it has no price)."""

    name: str
    note: str


class ProviderTable(msgspec.Struct, frozen=True):
    provider: str
    file: str
    aliases: tuple[str, ...]  # provider hints that mean this provider
    models: tuple[ModelEntry, ...]
    labels: tuple[Label, ...] = ()
    notes: tuple[str, ...] = ()
