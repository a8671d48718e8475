"""Price tables a user installs over the shipped ones: a corrected rate without a release.

Where they live: `$FLEETMETER_PRICES_DIR`, else `$XDG_DATA_HOME/fleetmeter/prices/` (by default
`~/.local/share/fleetmeter/prices/`). Every process of that user on that machine (the hub,
`node-agent scan`, the node's daemon) reads the same folder through `PriceBook.default()`, so
the scan and the hub price alike; a node on another machine gets the same file installed there.

An installed file has the shipped schema, and its periods may end (`until = 2026-12-01`). For a
model the shipped tables know, each installed period replaces the shipped rates over its span
and the shipped rates resume after it; a model (or provider) they do not know is added. Stricter
than a shipped file, since nothing reviews it before it prices: every token class the model
bills has an explicit rate, no two installed periods of a model overlap, and the rates keep the
provider's ratios (see `check_installed`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

import msgspec
from msgspec.structs import replace

from pricing._tables import PriceTableError, parse_table
from pricing._types import TOKEN_CLASSES, ModelEntry, PricePeriod, ProviderTable, RateSet

PRICES_ENV: Final = "FLEETMETER_PRICES_DIR"
# Every installed period prices at least these, whatever the provider.
ALWAYS_REQUIRED: Final = ("input", "output", "reasoning", "cache_read")
# Providers whose bills carry both cache-write tiers: an installed period must price both.
BOTH_WRITE_TIERS: Final = frozenset({"anthropic"})
# Anthropic's cache rates as multiples of input (5m write, 1h write, read).
ANTHROPIC_RATIOS: Final = (
    ("cache_write_5m", Decimal("1.25")),
    ("cache_write_1h", Decimal("2")),
    ("cache_read", Decimal("0.1")),
)
# An installed rate this many times above or below the shipped one is a unit slip (per token
# for per million, cents for dollars), not a price change.
MAX_STEP: Final = Decimal(10)
PARTIAL: Final = ".partial"  # an install in progress: never read (the glob wants *.toml)


def prices_dir() -> Path:
    """The installed tables' folder for this user (it may not exist)."""
    if explicit := os.environ.get(PRICES_ENV):
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fleetmeter" / "prices"


def installed_files(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.glob("*.toml") if p.is_file())
    except OSError:
        return []


def installed_state(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """What changes when a table is installed (names, sizes, times): cheap to poll."""
    found = []
    for path in installed_files(directory):
        try:
            st = path.stat()
        except OSError:
            continue
        found.append((path.name, st.st_size, st.st_mtime_ns))
    return tuple(found)


def read_installed(directory: Path) -> list[ProviderTable]:
    """Parse every installed file (unchecked against the shipped tables: see `overlay`)."""
    tables = []
    for path in installed_files(directory):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PriceTableError(str(path), "(file)", f"cannot be read: {exc}") from exc
        tables.append(parse_table(str(path), text))
    return tables


def overlay(
    shipped: Sequence[ProviderTable], installed: Sequence[ProviderTable]
) -> list[ProviderTable]:
    """The shipped tables with the installed ones laid over them, after `check_installed`."""
    check_installed(shipped, installed)
    by_provider = {t.provider: t for t in shipped}
    added: list[str] = []  # providers the shipped tables do not have, in order
    for table in installed:
        base = by_provider.get(table.provider)
        if base is None:
            added.append(table.provider)
            by_provider[table.provider] = table
            continue
        models = {m.id: m for m in base.models}
        for model in table.models:
            old = models.get(model.id)
            models[model.id] = model if old is None else _laid_over(old, model)
        by_provider[table.provider] = replace(base, models=tuple(models.values()))
    return [by_provider[p] for p in (*(t.provider for t in shipped), *added)]


def _laid_over(shipped: ModelEntry, installed: ModelEntry) -> ModelEntry:
    periods: list[PricePeriod] = []
    cursor: datetime | None = None  # the shipped rates apply from here (None: from the start)
    for own in installed.periods:
        periods += _shipped_between(shipped, cursor, own.start)
        periods.append(own)
        if own.end is None:
            break
        cursor = own.end
    else:
        periods += _shipped_between(shipped, cursor, None)
    return replace(
        shipped,
        names=tuple(dict.fromkeys((*shipped.names, *installed.names))),
        periods=tuple(periods),
        ratio_exception=installed.ratio_exception or shipped.ratio_exception,
    )


def _shipped_between(
    model: ModelEntry, start: datetime | None, end: datetime | None
) -> list[PricePeriod]:
    """The shipped periods cut to [start, end) (None: unbounded)."""
    found = []
    for period in model.periods:
        lo = period.start if start is None else max(period.start, start)
        hi = _earlier(period.end, end)
        if hi is None or lo < hi:
            found.append(replace(period, start=lo, end=hi))
    return found


def _earlier(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None:
        return b
    return a if b is None else min(a, b)


def check_installed(shipped: Sequence[ProviderTable], installed: Sequence[ProviderTable]) -> None:
    """Raise `PriceTableError` (file, model and field) at the first installed rate that must not
    price: a token class left out, periods of a model that overlap across files, a name another
    model claims, a ratio the provider never uses, a rate ten times off the shipped one."""
    known = {(t.provider, m.id): m for t in shipped for m in t.models}
    owner = {(t.provider, n): m.id for t in shipped for m in t.models for n in m.names}
    spans: dict[tuple[str, str], list[tuple[PricePeriod, str]]] = {}
    for table in installed:
        for model in table.models:
            where = f"models[{model.id}]"
            for name in model.names:
                claimed = owner.get((table.provider, name))
                if claimed is not None and claimed != model.id:
                    raise PriceTableError(
                        table.file, f"{where}.match", f"{name!r} is the shipped {claimed!r}'s name"
                    )
            base = known.get((table.provider, model.id))
            for i, period in enumerate(model.periods):
                here = f"{where}.periods[{i}]"
                _check_rates(table, model, base, period, here)
                _check_overlap(spans.setdefault((table.provider, model.id), []), period, here)


def _check_rates(
    table: ProviderTable,
    model: ModelEntry,
    base: ModelEntry | None,
    period: PricePeriod,
    where: str,
) -> None:
    shipped = base.at(period.start) or base.periods[0] if base is not None else None
    required = set(ALWAYS_REQUIRED)
    if table.provider in BOTH_WRITE_TIERS:
        required |= {"cache_write_5m", "cache_write_1h"}
    if shipped is not None:
        required |= shipped.rates.token_classes()
    sets = [(f"{where}.rates", period.rates)]
    sets += [(f"{where}.tiers[{i}].rates", t.rates) for i, t in enumerate(period.tiers)]
    for key, rates in sets:
        for cls in TOKEN_CLASSES:
            if cls in required and rates.get(cls) is None:
                _fail(table, f"{key}.{cls}", "is missing: every token class needs its rate")
        _check_ratios(table, model, base, key, rates)
    if shipped is not None:
        for cls in sorted(period.rates.token_classes()):
            new, old = period.rates.get(cls), shipped.rates.get(cls)
            if new is None or not old or not new:
                continue
            if new > old * MAX_STEP or new * MAX_STEP < old:
                _fail(
                    table,
                    f"{where}.rates.{cls}",
                    f"{new} is over {MAX_STEP}x off the shipped {old} (from "
                    f"{shipped.start.date()}): a per-token or cents slip?",
                )


def _check_ratios(
    table: ProviderTable, model: ModelEntry, base: ModelEntry | None, key: str, rates: RateSet
) -> None:
    output, reasoning, read, prompt = rates.output, rates.reasoning, rates.cache_read, rates.input
    assert output is not None and reasoning is not None and prompt is not None  # required
    if reasoning != output:
        _fail(table, f"{key}.reasoning", f"{reasoning} is not the output rate {output}")
    if read is not None and read > prompt:
        _fail(table, f"{key}.cache_read", f"{read} is above the input rate {prompt}")
    exempt = model.ratio_exception or (base.ratio_exception if base is not None else None)
    if table.provider != "anthropic" or exempt:
        return
    for cls, factor in ANTHROPIC_RATIOS:
        value = rates.get(cls)
        if value is not None and value != prompt * factor:
            _fail(
                table,
                f"{key}.{cls}",
                f"{value} is not {factor}x the input rate {prompt} (Anthropic's ratio; "
                "give the model a ratio_exception saying why if it truly differs)",
            )


def _check_overlap(seen: list[tuple[PricePeriod, str]], period: PricePeriod, where: str) -> None:
    for other, other_where in seen:
        if other.file == period.file:
            continue  # one file's periods are in order (the parser checked)
        starts_before_end = other.end is None or period.start < other.end
        ends_after_start = period.end is None or other.start < period.end
        if starts_before_end and ends_after_start:
            until = other.end.date().isoformat() if other.end is not None else "open-ended"
            raise PriceTableError(
                period.file,
                f"{where}.from",
                f"overlaps {Path(other.file).name} {other_where} "
                f"({other.start.date()} to {until}); give one of them an `until`",
            )
    seen.append((period, where))


def _fail(table: ProviderTable, key: str, message: str) -> None:
    raise PriceTableError(table.file, key, message)


class RateChange(msgspec.Struct, frozen=True):
    provider: str
    model: str
    start: datetime
    token_class: str
    old: Decimal | None
    new: Decimal | None

    def __str__(self) -> str:
        return (
            f"{self.model} from {self.start.date()}: {self.token_class} "
            f"{_text(self.old)} -> {_text(self.new)}"
        )


def _text(rate: Decimal | None) -> str:
    return "none" if rate is None else str(rate)


def rate_changes(
    before: Iterable[ProviderTable], after: Iterable[ProviderTable], models: set[str]
) -> list[RateChange]:
    """The base rates of `models` (ids) that differ from one set of tables to the other, per
    period start of the newer set."""
    old = {m.id: m for t in before for m in t.models if m.id in models}
    changes = []
    for table in after:
        for model in table.models:
            if model.id not in models:
                continue
            for period in model.periods:
                prior = old.get(model.id)
                was = prior.at(period.start) if prior is not None else None
                for cls in TOKEN_CLASSES:
                    a = was.rates.get(cls) if was is not None else None
                    b = period.rates.get(cls)
                    if a != b:
                        changes.append(
                            RateChange(table.provider, model.id, period.start, cls, a, b)
                        )
    return changes
