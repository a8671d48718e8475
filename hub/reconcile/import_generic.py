"""The generic billing CSV (docs/billing-imports.md, "The generic CSV"): fleetmeter's own shape
for exports it does not read directly (DeepSeek, Zhipu / Z.ai, a hand-made sheet).

One row per UTC day, provider, model and key: `day,provider,model,key,input_tokens,
output_tokens,cache_read_tokens,cache_write_tokens,amount,currency[,fx_rate,fx_date]`. Columns
are matched by name (case, spaces and underscores aside), in any order; `provider` may come from
`--provider` instead, `key` may be empty ("-": the export names none), token columns may be
absent (0). The amount is the provider's charge for the row before any balance or credit pays
it (DeepSeek deducts granted balance first: that changes who pays, not the charge).
"""

from __future__ import annotations

from typing import Final

from hub.reconcile.imports import (
    IMPORT_PROVIDERS,
    UNSPLIT,
    BilledRow,
    ImportOptions,
    ParsedFile,
    RowError,
    amount_cell,
    count_cell,
    currency_cell,
    day_cell,
    header_and_rows,
    model_cell,
    name_cell,
    rate_for,
    zone_of,
)
from shared.events import Tokens

WANTED: Final = {
    "day": ("day", "date", "usage_date"),
    "provider": ("provider",),
    "model": ("model", "model_name"),
    "key": ("key", "api_key", "api_key_id", "apikey_id"),
    "input_tokens": ("input_tokens", "input", "cache_miss_tokens"),
    "output_tokens": ("output_tokens", "output"),
    "cache_read_tokens": ("cache_read_tokens", "cache_read", "cache_hit_tokens", "cached_tokens"),
    "cache_write_tokens": ("cache_write_tokens", "cache_write", "cache_creation_tokens"),
    "amount": ("amount", "cost"),
    "currency": ("currency",),
    "fx_rate": ("fx_rate", "rate"),
    "fx_date": ("fx_date", "rate_date"),
}
REQUIRED: Final = ("day", "model", "amount")


def parse_generic(data: bytes, where: str, options: ImportOptions) -> ParsedFile:
    columns, rows, width, parsed = header_and_rows(data, where, WANTED, REQUIRED)
    zone = zone_of(options, "UTC")
    for line, cells in rows:
        if len(cells) != width:
            parsed.refuse(
                f"{where}:{line}: {len(cells)} fields where the header has {width} (a comma "
                "inside an unquoted number?)"
            )
            continue

        def cell(name: str, cells: list[str] = cells) -> str:
            return columns.cell(cells, name)

        try:
            provider = _provider(cell("provider"), options)
            amount, symbol = amount_cell(cell("amount"), "amount")
            named = cell("currency").strip()
            currency = currency_cell(named, "currency") if named else symbol
            if currency is None:
                raise RowError("currency", "missing: say USD or CNY (never assumed)")
            if symbol is not None and symbol != currency:
                raise RowError("amount", f"{cell('amount')!r} is {symbol}, the row says {currency}")
            row = BilledRow(
                provider=provider,
                day=day_cell(cell("day"), "day", zone),
                model=model_cell(cell("model")),
                key=name_cell(cell("key"), "key") if cell("key").strip() else "-",
                token_class=UNSPLIT,
                tokens=Tokens(
                    input=count_cell(cell("input_tokens"), "input_tokens"),
                    output=count_cell(cell("output_tokens"), "output_tokens"),
                    cache_read=count_cell(cell("cache_read_tokens"), "cache_read_tokens"),
                    cache_write_5m=count_cell(cell("cache_write_tokens"), "cache_write_tokens"),
                ),
                amount=amount,
                currency=currency,
                rate=rate_for(currency, cell("fx_rate"), cell("fx_date"), options, zone),
                line=line,
            )
        except RowError as exc:
            parsed.refuse(f"{where}:{line}: {exc}")
            continue
        parsed.rows.append(row)
    return parsed


def _provider(text: str, options: ImportOptions) -> str:
    named = text.strip().casefold()
    if named and options.provider and named != options.provider:
        raise RowError("provider", f"{text!r}, but --provider {options.provider} was given")
    provider = named or options.provider
    if provider is None:
        raise RowError("provider", "missing: add the column or give --provider")
    if provider not in IMPORT_PROVIDERS:
        raise RowError("provider", f"{text!r} is not one of {', '.join(IMPORT_PROVIDERS)}")
    return provider
