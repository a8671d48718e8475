"""Billed figures the hub holds itself rather than asks a provider for: bills imported with
`fleet-hub reconcile import` (DeepSeek, Qwen, Zhipu) and the dollars Cursor's usage CSV states
for the calls the nodes sent. Both are read from the store at each run, beside the connectors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Protocol

from hub.reconcile.billed import BilledFigure
from hub.reconcile.billed_store import BilledImports
from hub.reconcile.cursor_billed import PROVIDER as CURSOR
from hub.reconcile.cursor_billed import cursor_side
from hub.reconcile.fleet import FleetFigure, RowKey
from hub.reconcile.imports import IMPORT_PROVIDERS
from pricing import PriceBook

LOCAL_PROVIDERS = (*IMPORT_PROVIDERS, CURSOR)


@dataclass(slots=True)
class LocalSide:
    billed: dict[RowKey, BilledFigure] = field(default_factory=dict)
    # the fleet's side where it is worked out here (Cursor: the same calls' estimate)
    fleet: dict[RowKey, FleetFigure] = field(default_factory=dict)
    # per provider, the days a bill covers: the fleet's rows of other days are not compared
    covered: dict[str, set[date]] = field(default_factory=dict)
    partial: dict[str, set[date]] = field(default_factory=dict)


class LocalSource(Protocol):
    def __call__(self, first: date, last: date, providers: Iterable[str] | None) -> LocalSide: ...


class StoreBilled:
    """The local billed figures of the store at `path`."""

    def __init__(self, path: Path, book: PriceBook) -> None:
        self.path = path
        self.book = book

    def __call__(self, first: date, last: date, providers: Iterable[str] | None) -> LocalSide:
        from hub.store import Store  # the store's module is heavy; only a run needs it

        wanted = None if providers is None else set(providers)
        side = LocalSide()
        with BilledImports(self.path) as imports:
            held = imports.imported(first, last, wanted)
        side.billed.update(held.figures)
        side.covered.update(held.covered)
        side.partial.update(held.partial)
        if wanted is None or CURSOR in wanted:
            since = datetime.combine(first, time(), UTC).timestamp()
            until = datetime.combine(last + timedelta(days=1), time(), UTC).timestamp()
            with Store(self.path, cache_kib=2048) as store:
                cursor = cursor_side(
                    store.usage_events(since, until, counted_only=True),
                    self.book,
                    store.billing(),
                    first,
                    last,
                )
            side.billed.update(cursor.billed)
            side.fleet.update(cursor.fleet)
            if cursor.days:
                side.covered[CURSOR] = cursor.days
                # today's calls are still coming in (and the export was taken during it)
                today = datetime.now(UTC).date()
                side.partial[CURSOR] = {d for d in cursor.days if d >= today}
        return side

    def has_any(self) -> bool:
        """Whether the store holds an imported bill (Cursor's dollars are looked for at a run)."""
        with BilledImports(self.path) as imports:
            return bool(imports.providers())
