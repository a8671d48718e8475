"""Reading the TOML price tables: strict, so a typo is an error that names the file and the key.

One file per provider (`pricing/tables/<provider>.toml`). Rates are decimal strings in USD per
million tokens ("3.75"), never TOML floats, so they load into `Decimal` exactly. The schema is
described in the header comment of `pricing/tables/anthropic.toml`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, NoReturn

import msgspec

from pricing._cache import cached_tables
from pricing._match import normalise
from pricing._types import (
    MODIFIER_KINDS,
    RATE_KEYS,
    REQUIRED_CLASSES,
    WEB_SEARCH,
    Label,
    ModelEntry,
    Modifier,
    PricePeriod,
    ProviderTable,
    RateSet,
    Source,
    Tier,
)

SCHEMA_VERSION: Final = 1
_RATE: Final = re.compile(r"^\d+(?:\.\d+)?$")

_TOP_KEYS: Final = {"schema", "provider", "currency", "aliases", "notes", "labels", "models"}
_MODEL_KEYS: Final = {
    "id",
    "name",
    "match",
    "notes",
    "sources",
    "ratio_exception",
    "periods",
    *MODIFIER_KINDS,
}
_PERIOD_KEYS: Final = {
    "from",
    "until",
    "rates",
    "tiers",
    "estimated",
    "notes",
    "sources",
    *MODIFIER_KINDS,
}
_TIER_KEYS: Final = {"above", "rates", "estimated", "notes", "sources"}
_MODIFIER_KEYS: Final = {"multiplier", "rates", "tiers", "estimated", "notes", "sources"}
_SOURCE_KEYS: Final = {"name", "ref", "checked", "covers"}
_LABEL_KEYS: Final = {"name", "note"}


class PriceTableError(ValueError):
    """A price table that cannot be used. The message names the file and the key at fault."""

    def __init__(self, file: str, key: str, message: str) -> None:
        super().__init__(f"{file}: {key}: {message}")
        self.file = file
        self.key = key
        self.message = message


class _Reader:
    """Typed access to one parsed file, raising `PriceTableError` with the key path."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, key: str, message: str) -> NoReturn:
        raise PriceTableError(self.file, key, message)

    def table(self, value: object, key: str, allowed: set[str]) -> Mapping[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"must be a table, not {_kind(value)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            self.fail(f"{key}.{unknown[0]}" if key else unknown[0], _unknown_key(allowed))
        return value

    def text(self, obj: Mapping[str, Any], key: str, where: str, required: bool = True) -> str:
        value = obj.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.fail(_join(where, key), f"must be a non-empty string, not {_kind(value)}")
        return value

    def texts(self, obj: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        value = obj.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(_join(where, key), "must be a list of non-empty strings")
        return tuple(value)

    def flag(self, obj: Mapping[str, Any], key: str, where: str) -> bool:
        value = obj.get(key, False)
        if not isinstance(value, bool):
            self.fail(_join(where, key), f"must be true or false, not {_kind(value)}")
        return value

    def decimal(self, value: object, key: str, positive: bool = False) -> Decimal:
        # Strings only: a TOML float (3.75) has already lost exactness by the time we see it.
        if not isinstance(value, str) or not _RATE.match(value.strip()):
            self.fail(key, f'must be a decimal string like "3.75", not {_kind(value)} {value!r}')
        number = Decimal(value.strip())
        if positive and number <= 0:
            self.fail(key, "must be greater than 0")
        return number

    def rates(self, value: object, key: str) -> RateSet:
        obj = self.table(value, key, set(RATE_KEYS))
        return RateSet(**{k: self.decimal(v, f"{key}.{k}") for k, v in obj.items()})

    def instant(self, value: object, key: str) -> datetime:
        # `from = 2026-09-01` is midnight UTC; `from = 2026-05-31T16:00:00Z` an exact instant.
        if isinstance(value, datetime):
            if value.tzinfo is None:
                self.fail(key, "a date-time needs an offset (e.g. 2026-05-31T16:00:00Z)")
            return value.astimezone(UTC)
        if isinstance(value, date):
            return datetime.combine(value, time(), UTC)
        self.fail(key, f"must be a TOML date or offset date-time, not {_kind(value)}")

    def sources(self, obj: Mapping[str, Any], where: str) -> tuple[Source, ...]:
        value = obj.get("sources", [])
        key = _join(where, "sources")
        if not isinstance(value, list):
            self.fail(key, "must be a list of tables {name, ref, checked}")
        found = []
        for i, item in enumerate(value):
            here = f"{key}[{i}]"
            src = self.table(item, here, _SOURCE_KEYS)
            checked = src.get("checked")
            if isinstance(checked, datetime) or not isinstance(checked, date):
                self.fail(f"{here}.checked", f"must be a TOML date, not {_kind(checked)}")
            found.append(
                Source(
                    name=self.text(src, "name", here),
                    ref=self.text(src, "ref", here),
                    checked=checked,
                    covers=self.text(src, "covers", here, required=False) or None,
                )
            )
        return tuple(found)


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _unknown_key(allowed: set[str]) -> str:
    return f"unknown key (expected one of: {', '.join(sorted(allowed))})"


def parse_table(file: str, text: str) -> ProviderTable:
    """Parse and check one provider file; `file` is only used in error messages."""
    import tomllib  # only when the parsed-table cache misses (start-up time)

    r = _Reader(file)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        r.fail("(syntax)", str(exc))
    top = r.table(raw, "", _TOP_KEYS)
    if top.get("schema") != SCHEMA_VERSION:
        r.fail("schema", f"must be {SCHEMA_VERSION}, not {top.get('schema')!r}")
    provider = r.text(top, "provider", "")
    if top.get("currency") != "USD":
        r.fail("currency", f'must be "USD" (the engine prices in USD), not {top.get("currency")!r}')
    labels = []
    raw_labels = top.get("labels", [])
    if not isinstance(raw_labels, list):
        r.fail("labels", "must be an array of tables")
    for i, item in enumerate(raw_labels):
        obj = r.table(item, f"labels[{i}]", _LABEL_KEYS)
        name = r.text(obj, "name", f"labels[{i}]")
        if name != name.strip().lower():
            r.fail(f"labels[{i}].name", "must be lower case without surrounding spaces")
        labels.append(Label(name, r.text(obj, "note", f"labels[{i}]")))
    raw_models = top.get("models", [])
    if not isinstance(raw_models, list):
        r.fail("models", "must be an array of tables ([[models]])")
    models = [_model(r, provider, item, i) for i, item in enumerate(raw_models)]
    seen: dict[str, str] = {}
    for model in models:
        for name in model.names:
            if name in seen:
                r.fail(
                    f"models[{model.id}].match",
                    f"name {name!r} is already claimed by model {seen[name]!r}",
                )
            seen[name] = model.id
    return ProviderTable(
        provider=provider,
        file=file,
        aliases=tuple(a.lower() for a in r.texts(top, "aliases", "")),
        models=tuple(models),
        labels=tuple(labels),
        notes=r.texts(top, "notes", ""),
    )


class _ModelContext(msgspec.Struct, frozen=True):
    """What every period of a model inherits. (A Struct: a dataclass's definition costs ~0.5 ms
    of every scan that prices.)"""

    provider: str
    id: str
    name: str
    sources: tuple[Source, ...]
    notes: tuple[str, ...]
    ratio_exception: str | None
    defaults: Mapping[str, Mapping[str, Modifier]]


def _model(r: _Reader, provider: str, item: object, index: int) -> ModelEntry:
    obj = r.table(item, f"models[{index}]", _MODEL_KEYS)
    model_id = r.text(obj, "id", f"models[{index}]")
    where = f"models[{model_id}]"
    names = [model_id, *r.texts(obj, "match", where)]
    for name in names:
        canonical = normalise(name).name
        if canonical != name:
            # A name the matcher would rewrite can never be looked up as written.
            r.fail(
                f"{where}.match", f"{name!r} never matches as written; write it as {canonical!r}"
            )
    sources = r.sources(obj, where)
    if not sources:
        r.fail(f"{where}.sources", "every model needs at least one source {name, ref, checked}")
    ctx = _ModelContext(
        provider=provider,
        id=model_id,
        name=r.text(obj, "name", where),
        sources=sources,
        notes=r.texts(obj, "notes", where),
        ratio_exception=r.text(obj, "ratio_exception", where, required=False) or None,
        defaults={kind: _modifiers(r, obj, kind, where) for kind in MODIFIER_KINDS},
    )
    raw_periods = obj.get("periods")
    if not isinstance(raw_periods, list) or not raw_periods:
        r.fail(f"{where}.periods", "must be a non-empty array of tables ([[models.periods]])")
    drafts = [_period(r, ctx, p, f"{where}.periods[{i}]") for i, p in enumerate(raw_periods)]
    for i in range(1, len(drafts)):
        if drafts[i].start <= drafts[i - 1].start:
            r.fail(f"{where}.periods[{i}].from", "periods must be in strictly increasing order")
        until = drafts[i - 1].end
        if until is not None and until > drafts[i].start:
            r.fail(f"{where}.periods[{i - 1}].until", "overlaps the next period's from")
    # Each period ends at its `until`, else where the next begins; the last is open.
    ends: list[datetime | None] = [
        d.end or n.start for d, n in zip(drafts, drafts[1:], strict=False)
    ]
    ends.append(drafts[-1].end)
    return ModelEntry(
        provider=provider,
        id=model_id,
        name=ctx.name,
        names=tuple(dict.fromkeys(names)),
        periods=tuple(
            msgspec.structs.replace(d, end=end) for d, end in zip(drafts, ends, strict=True)
        ),
        notes=ctx.notes,
        ratio_exception=ctx.ratio_exception,
    )


def _period(r: _Reader, ctx: _ModelContext, item: object, where: str) -> PricePeriod:
    obj = r.table(item, where, _PERIOD_KEYS)
    if "from" not in obj:
        r.fail(f"{where}.from", "every period needs a start (from = 2025-09-29)")
    start = r.instant(obj["from"], f"{where}.from")
    if "rates" not in obj:
        r.fail(f"{where}.rates", "every period needs its rates")
    rates = r.rates(obj["rates"], f"{where}.rates")
    end = r.instant(obj["until"], f"{where}.until") if "until" in obj else None
    if end is not None and end <= start:
        r.fail(f"{where}.until", "must be after the period's from")
    for cls in REQUIRED_CLASSES:
        if rates.get(cls) is None:
            r.fail(f"{where}.rates.{cls}", "is required (write it out even when it equals another)")
    tiers = _tiers(r, obj, where, rates)
    merged: dict[str, Mapping[str, Modifier]] = {}
    for kind in MODIFIER_KINDS:
        # A period's own modifier replaces the model-wide one of the same name.
        mods = {**ctx.defaults[kind], **_modifiers(r, obj, kind, where)}
        for name, mod in mods.items():
            _check_modifier_against(r, f"{where}.{kind}.{name}", mod, rates, tiers)
        merged[kind] = MappingProxyType(mods)
    return PricePeriod(
        provider=ctx.provider,
        model_id=ctx.id,
        model_name=ctx.name,
        start=start,
        end=end,
        rates=rates,
        tiers=tiers,
        service_tiers=merged["service_tiers"],
        speeds=merged["speeds"],
        inference_geos=merged["inference_geos"],
        estimated=r.flag(obj, "estimated", where),
        notes=r.texts(obj, "notes", where),
        sources=tuple(dict.fromkeys((*r.sources(obj, where), *ctx.sources))),
        ratio_exception=ctx.ratio_exception,
        model_notes=ctx.notes,
        file=r.file,
    )


def _tiers(r: _Reader, obj: Mapping[str, Any], where: str, base: RateSet) -> tuple[Tier, ...]:
    raw = obj.get("tiers", [])
    key = f"{where}.tiers"
    if not isinstance(raw, list):
        r.fail(key, "must be an array of tables ([[…tiers]])")
    tiers: list[Tier] = []
    for i, item in enumerate(raw):
        here = f"{key}[{i}]"
        t = r.table(item, here, _TIER_KEYS)
        above = t.get("above")
        if isinstance(above, bool) or not isinstance(above, int) or above <= 0:
            r.fail(f"{here}.above", f"must be a positive whole number of tokens, not {above!r}")
        if tiers and above <= tiers[-1].above:
            r.fail(f"{here}.above", "thresholds must be in strictly increasing order")
        if "rates" not in t:
            r.fail(f"{here}.rates", "every tier needs its rates")
        rates = r.rates(t["rates"], f"{here}.rates")
        _same_classes(r, f"{here}.rates", rates, base)
        if rates.get(WEB_SEARCH) is not None:
            r.fail(f"{here}.rates.{WEB_SEARCH}", "web search is per request; set it on the base")
        tiers.append(
            Tier(
                above=above,
                rates=rates,
                estimated=r.flag(t, "estimated", here),
                notes=r.texts(t, "notes", here),
                sources=r.sources(t, here),
            )
        )
    return tuple(tiers)


def _same_classes(r: _Reader, key: str, rates: RateSet, base: RateSet) -> None:
    # A cliff or an explicit service tier must price every class the base prices, else a
    # request that crosses it would silently lose a bucket.
    missing = sorted(base.token_classes() - rates.token_classes())
    extra = sorted(rates.token_classes() - base.token_classes())
    if missing:
        r.fail(f"{key}.{missing[0]}", "is missing: give every token class the base rates give")
    if extra:
        r.fail(f"{key}.{extra[0]}", "is not in the base rates: add it there too")


def _modifiers(r: _Reader, obj: Mapping[str, Any], kind: str, where: str) -> dict[str, Modifier]:
    raw = obj.get(kind, {})
    key = f"{where}.{kind}"
    if not isinstance(raw, dict):
        r.fail(key, "must be a table of named entries")
    found = {}
    for name, item in raw.items():
        here = f"{key}.{name}"
        if name != name.strip().lower():
            r.fail(here, "names are lower case (service tiers, speeds and geos are matched so)")
        m = r.table(item, here, _MODIFIER_KEYS)
        multiplier = (
            r.decimal(m["multiplier"], f"{here}.multiplier", positive=True)
            if "multiplier" in m
            else None
        )
        rates = r.rates(m["rates"], f"{here}.rates") if "rates" in m else None
        if multiplier is not None and rates is not None:
            r.fail(here, "give either a multiplier or explicit rates, not both")
        if kind != "service_tiers" and rates is not None:
            r.fail(f"{here}.rates", f"{kind} take a multiplier only")
        if rates is not None and rates.get(WEB_SEARCH) is not None:
            r.fail(f"{here}.rates.{WEB_SEARCH}", "web search stays at the base rate")
        tiers = _tiers(r, m, here, rates) if rates is not None else ()
        if "tiers" in m and rates is None:
            r.fail(f"{here}.tiers", "tiers need explicit rates on the same entry")
        notes = r.texts(m, "notes", here)
        if multiplier is None and rates is None and not notes:
            r.fail(here, "an unpriced entry needs notes saying why it has no price")
        sources = r.sources(m, here)
        if not sources:
            r.fail(f"{here}.sources", "every modifier needs at least one source")
        found[name] = Modifier(
            kind=kind,
            name=name,
            multiplier=multiplier,
            rates=rates,
            tiers=tiers,
            estimated=r.flag(m, "estimated", here),
            notes=notes,
            sources=sources,
        )
    return found


def _check_modifier_against(
    r: _Reader, key: str, mod: Modifier, rates: RateSet, tiers: tuple[Tier, ...]
) -> None:
    if mod.rates is None:
        return
    _same_classes(r, f"{key}.rates", mod.rates, rates)
    thresholds = {t.above for t in tiers}
    for i, tier in enumerate(mod.tiers):
        if tier.above not in thresholds:
            r.fail(f"{key}.tiers[{i}].above", f"{tier.above} is not a threshold of the base rates")


def load_texts(items: Iterable[tuple[str, str]]) -> list[ProviderTable]:
    tables = [parse_table(name, text) for name, text in items]
    seen: dict[str, str] = {}
    for table in tables:
        if table.provider in seen:
            raise PriceTableError(
                table.file,
                "provider",
                f"{table.provider!r} is also defined in {seen[table.provider]}",
            )
        seen[table.provider] = table.file
    return tables


def load_directory(directory: Path) -> list[ProviderTable]:
    paths = sorted(directory.glob("*.toml"))
    if not paths:
        raise PriceTableError(str(directory), "(directory)", "no *.toml price tables found")
    return load_texts((str(p), p.read_text(encoding="utf-8")) for p in paths)


def load_package() -> list[ProviderTable]:
    """The tables shipped inside the package (installed or in a checkout; never zipped).

    A plain path rather than importlib.resources, whose import costs a cold scan several ms."""
    root = Path(__file__).parent / "tables"
    entries = sorted((e for e in root.iterdir() if e.name.endswith(".toml")), key=lambda e: e.name)
    if not entries:
        raise PriceTableError("pricing/tables", "(directory)", "no *.toml price tables shipped")
    texts = [(f"pricing/tables/{e.name}", e.read_text(encoding="utf-8")) for e in entries]
    return cached_tables(texts, load_texts)
