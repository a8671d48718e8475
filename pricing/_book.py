"""`PriceBook`: the loaded tables, name resolution and the engine behind one small API."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from operator import attrgetter
from pathlib import Path
from typing import Final, Generic, TypeVar

import msgspec

from pricing._classes import Billing, CostClass, PricedCall, classify
from pricing._engine import RatePlan, rate_plan
from pricing._match import ModelIndex
from pricing._tables import load_directory, load_package
from pricing._types import TOKEN_CLASSES, ModelEntry, PricePeriod, ProviderTable
from shared.events import Tokens, UsageEvent

# Distinct price terms a book keeps (a handful in practice; garbage tier names must not grow it).
_MAX_TERMS: Final = 4096


class PriceBook:
    """Effective-dated prices for every model in a set of provider tables."""

    def __init__(self, tables: Sequence[ProviderTable]) -> None:
        self._tables = tuple(tables)
        self._index = ModelIndex(self._tables)
        # A fleet logs a handful of model names millions of times: resolve each name once.
        self._resolve = lru_cache(maxsize=4096)(self._index.resolve)
        # ... and price them under a handful of distinct terms: build each once.
        self._terms: dict[tuple[object, ...], Terms] = {}

    @classmethod
    def default(cls) -> PriceBook:
        """The tables shipped in `pricing/tables/`, loaded once per process."""
        return _default_book()

    @classmethod
    def load(cls, directory: Path) -> PriceBook:
        """Every `*.toml` in `directory`; raises `PriceTableError` naming the file and key."""
        return cls(load_directory(Path(directory)))

    @property
    def tables(self) -> tuple[ProviderTable, ...]:
        return self._tables

    def models(self) -> list[ModelEntry]:
        return [m for t in self._tables for m in t.models]

    def lookup(self, model: str, at: datetime, provider: str | None = None) -> PricePeriod | None:
        """The price period that applies to `model` at the instant `at` (timezone-aware)."""
        if at.tzinfo is None:
            raise ValueError(
                "lookup needs a timezone-aware instant (e.g. datetime(..., tzinfo=UTC))"
            )
        entry = self._resolve(model, provider).entry
        return entry.at(at.astimezone(UTC)) if entry is not None else None

    def price(self, event: UsageEvent, billing: Billing = Billing.API) -> PricedCall:
        terms = self.terms(event)
        if isinstance(terms, PricedCall):
            return terms
        return terms.price(event, billing)

    def terms(self, event: UsageEvent) -> Terms | PricedCall:
        """What fixes the price of `event` apart from its counts; the (unknown) `PricedCall`
        when there is no price for it."""
        resolution = self._resolve(event.model, event.provider)
        entry = resolution.entry
        if entry is None:
            return _unknown(None, resolution.notes)
        problem = _bad_counts(event)
        if problem:
            return _unknown(entry.id, (problem,))
        try:
            at = datetime.fromtimestamp(event.ts, UTC)
        except (OverflowError, OSError, ValueError):  # NaN, infinities, years out of range
            return _unknown(entry.id, (f"the event time {event.ts!r} is not a valid instant",))
        period = entry.at(at)
        if period is None:
            first = entry.periods[0].start.isoformat()
            return _unknown(
                entry.id, (f"no price for {entry.id} before {first} (its first price)",)
            )
        cliff = period.tier_for(event.tokens.prompt)
        # Entries, periods and cliffs live as long as the book: their ids are stable keys.
        key = (
            id(entry),
            resolution.ambiguous,
            resolution.notes,
            id(period),
            id(cliff),
            event.service_tier,
            event.speed,
            event.inference_geo,
        )
        terms = self._terms.get(key)
        if terms is None:
            if len(self._terms) >= _MAX_TERMS:
                self._terms.clear()
            plan = rate_plan(
                period,
                cliff,
                service_tier=event.service_tier,
                speed=event.speed,
                inference_geo=event.inference_geo,
            )
            terms = Terms(entry.id, plan, resolution.ambiguous, resolution.notes)
            self._terms[key] = terms
        return terms


class Terms(msgspec.Struct, frozen=True, eq=False):
    """A call's price terms: its canonical model and rate plan, and how its name resolved."""

    model_id: str
    plan: RatePlan
    ambiguous: bool  # the name matched several providers' models
    notes: tuple[str, ...]  # about the name

    def price(self, event: UsageEvent, billing: Billing) -> PricedCall:
        q = self.plan.quote(event.tokens, event.cache_write_unsplit)
        return self.priced(q.amount, q.estimated, billing, self.notes + q.notes)

    def estimated_for(self, event: UsageEvent) -> bool:
        return self.ambiguous or self.plan.estimated_for(event.tokens, event.cache_write_unsplit)

    def priced(
        self, amount: Decimal, estimated: bool, billing: Billing, notes: tuple[str, ...] = ()
    ) -> PricedCall:
        estimated = estimated or self.ambiguous
        return PricedCall(
            api_equivalent=amount,
            cost_class=classify(priced=True, estimated=estimated, billing=billing),
            model_id=self.model_id,
            estimated=estimated,
            notes=notes,
        )


class _Group(msgspec.Struct):
    calls: int = 0
    counts: list[tuple[int, ...]] = msgspec.field(default_factory=list)


G = TypeVar("G", bound=Hashable)

# A call's counts in the order of Tokens' fields, so that Tokens(*sums) rebuilds them.
_COUNTS: Final = attrgetter(*Tokens.__struct_fields__)


class CallBatch(Generic[G]):
    """Many calls priced together: the calls that share a group (a report row, say), price terms,
    estimated flag and billing are priced as one sum of their counts. That is exact, since under
    fixed terms an amount is linear in the counts, and it costs a dict lookup per call instead
    of a price computation. Notes are not kept (a report has no use for them)."""

    def __init__(self, book: PriceBook) -> None:
        self._book = book
        self._groups: dict[tuple[G, Terms, bool, Billing], _Group] = {}

    def add(self, group: G, event: UsageEvent, billing: Billing) -> PricedCall | None:
        """Count `event` into `group`; returns its `PricedCall` at once when no price is known
        for it (such calls have no figure to sum), else None."""
        terms = self._book.terms(event)
        if isinstance(terms, PricedCall):
            return terms
        key = (group, terms, terms.estimated_for(event), billing)
        found = self._groups.get(key)
        if found is None:
            found = self._groups[key] = _Group()
        found.calls += 1
        found.counts.append(_COUNTS(event.tokens))
        return None

    def settle(self) -> Iterator[tuple[G, int, Tokens, PricedCall]]:
        """(group, calls, summed tokens, their price) for each priced group; then empty."""
        groups, self._groups = self._groups, {}
        for (group, terms, estimated, billing), found in groups.items():
            tokens = Tokens(*map(sum, zip(*found.counts, strict=True)))
            amount = terms.plan.amount(tokens)
            yield group, found.calls, tokens, terms.priced(amount, estimated, billing)


def _unknown(model_id: str | None, notes: tuple[str, ...]) -> PricedCall:
    return PricedCall(
        api_equivalent=None,
        cost_class=CostClass.UNKNOWN,
        model_id=model_id,
        estimated=False,
        notes=notes,
    )


_COUNTED: Final = (*TOKEN_CLASSES, "web_search_requests")
_ALL_INT: Final = (int,) * len(_COUNTED)


def _bad_counts(event: UsageEvent) -> str | None:
    # A figure from impossible input would look precise and be wrong: report it as unknown.
    values = attrgetter(*_COUNTED)(event.tokens)
    if tuple(map(type, values)) == _ALL_INT and min(values) >= 0:
        return None  # every event of a healthy log: checked without a Python-level loop
    for name in _COUNTED:
        value = getattr(event.tokens, name)
        if not isinstance(value, int) or value < 0:
            return f"the {name} count {value!r} is not a non-negative whole number"
    return None


@cache
def _default_book() -> PriceBook:
    return PriceBook(load_package())
