"""`PriceBook`: the loaded tables, name resolution and the engine behind one small API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cache, lru_cache
from operator import attrgetter
from pathlib import Path
from typing import Final

from pricing._classes import Billing, CostClass, PricedCall, classify
from pricing._engine import quote
from pricing._match import ModelIndex
from pricing._tables import load_directory, load_package
from pricing._types import TOKEN_CLASSES, ModelEntry, PricePeriod, ProviderTable
from shared.events import UsageEvent


class PriceBook:
    """Effective-dated prices for every model in a set of provider tables."""

    def __init__(self, tables: Sequence[ProviderTable]) -> None:
        self._tables = tuple(tables)
        self._index = ModelIndex(self._tables)
        # A fleet logs a handful of model names millions of times: resolve each name once.
        self._resolve = lru_cache(maxsize=4096)(self._index.resolve)

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
        q = quote(
            period,
            event.tokens,
            service_tier=event.service_tier,
            speed=event.speed,
            inference_geo=event.inference_geo,
            cache_write_unsplit=event.cache_write_unsplit,
        )
        estimated = q.estimated or resolution.ambiguous
        notes = resolution.notes + q.notes
        return PricedCall(
            api_equivalent=q.amount,
            cost_class=classify(priced=True, estimated=estimated, billing=billing),
            model_id=entry.id,
            estimated=estimated,
            notes=notes,
        )


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
