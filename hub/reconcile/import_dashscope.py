"""Alibaba Cloud's "Bill Details" CSV for Model Studio (DashScope, Qwen): one row per billable
item, whose `Instance ID` packs `ApiKeyID;WorkspaceID;ModelName;Input/Output Type;Channel`
(since 2025-12-16; from 2024-09-07 to then the first part was the billing type, e.g.
`text_token`, and no key). Sources and what is unverified: docs/billing-imports.md.

The usage is in the row's `Usage Unit` (tokens, or thousands of them); the amount is the one
after price reductions (else the pretax, else the payable amount) in the row's `Currency`. A
time without an offset is Beijing time (the China site's, UTC+8) unless `--tz` says otherwise,
so an hourly row lands on its UTC day.
"""

from __future__ import annotations

from datetime import date, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Final

from hub.reconcile.imports import (
    DASHSCOPE_ZONE,
    BilledRow,
    ImportFileError,
    ImportOptions,
    ParsedFile,
    RowError,
    amount_cell,
    currency_cell,
    day_cell,
    header_and_rows,
    model_cell,
    rate_for,
    zone_of,
)
from shared.events import Tokens

PROVIDER: Final = "qwen"
WANTED: Final = {
    "instance": ("Instance ID", "InstanceID", "实例ID"),
    "time": (
        "Usage Start Time",
        "Consumption Time",
        "Billing Date",
        "使用开始时间",
        "消费时间",
        "账单日期",
    ),
    "usage": ("Usage", "用量"),
    "unit": ("Usage Unit", "用量单位"),
    "amount": (
        "Amount After Price Reduction",
        "Pretax Amount",
        "Payable Amount",
        "优惠后金额",
        "应付金额",
    ),
    "currency": ("Currency", "币种"),
}
REQUIRED: Final = ("instance", "time", "usage", "amount")
# Input/Output Type -> token class. `input_token` and `output_token` are documented; the cache
# spellings are matched by their words (unverified, docs/billing-imports.md).
IO_TYPES: Final = {"input_token": "input", "output_token": "output"}
UNITS: Final = {
    "": 1,
    "token": 1,
    "tokens": 1,
    "个": 1,
    "1k tokens": 1000,
    "k tokens": 1000,
    "ktokens": 1000,
    "千tokens": 1000,
    "千token": 1000,
    "1m tokens": 1_000_000,
    "m tokens": 1_000_000,
    "百万tokens": 1_000_000,
}


def token_class_of(io_type: str) -> str:
    kind = io_type.strip().casefold()
    if kind in IO_TYPES:
        return IO_TYPES[kind]
    if "cache" in kind and ("creat" in kind or "write" in kind):
        return "cache_write_5m"
    if "cache" in kind:
        return "cache_read"
    return f"other:{kind or 'unnamed'}"


def parse_dashscope(data: bytes, where: str, options: ImportOptions) -> ParsedFile:
    columns, rows, width, parsed = header_and_rows(data, where, WANTED, REQUIRED)
    if options.provider not in (None, PROVIDER):
        raise ImportFileError(
            f"{where}: the dashscope format is {PROVIDER}'s, not {options.provider}'s"
        )
    zone = zone_of(options, DASHSCOPE_ZONE)
    local_days: list[tuple[datetime, date]] = []  # (the row's own time, its UTC day)
    for line, cells in rows:
        if len(cells) != width:
            parsed.refuse(f"{where}:{line}: {len(cells)} fields where the header has {width}")
            continue

        def cell(name: str, cells: list[str] = cells) -> str:
            return columns.cell(cells, name)

        try:
            key, model, token_class = _instance(cell("instance"))
            amount, symbol = amount_cell(cell("amount"), "amount")
            named = cell("currency").strip()
            currency = currency_cell(named, "Currency") if named else symbol
            if currency is None:
                raise RowError("Currency", "missing: say CNY or USD (never assumed)")
            count = _tokens(cell("usage"), cell("unit"))
            tokens = Tokens(
                input=count if token_class == "input" else 0,
                output=count if token_class == "output" else 0,
                cache_read=count if token_class == "cache_read" else 0,
                cache_write_5m=count if token_class == "cache_write_5m" else 0,
            )
            row = BilledRow(
                provider=PROVIDER,
                day=day_cell(cell("time"), "time", zone),
                model=model,
                key=key,
                token_class=token_class,
                tokens=tokens,
                amount=amount,
                currency=currency,
                rate=rate_for(currency, "", "", options, zone),
                line=line,
            )
        except RowError as exc:
            parsed.refuse(f"{where}:{line}: {exc}")
            continue
        parsed.rows.append(row)
        local_days.append((_local_time(cell("time"), zone), row.day))
    _edges(parsed, local_days)
    return parsed


def _local_time(text: str, zone: tzinfo) -> datetime:
    cleaned = text.strip().replace("/", "-")
    when = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))  # read once already
    return when if when.tzinfo is not None else when.replace(tzinfo=zone)


def _edges(parsed: ParsedFile, local_days: list[tuple[datetime, date]]) -> None:
    """An export of whole days in a zone off UTC covers its first and last UTC days in part."""
    if not local_days:
        return
    first = min(local_days)
    last = max(local_days)
    for when, day in sorted({first, last}):
        offset = when.utcoffset()
        if offset is not None and offset.total_seconds() != 0:
            parsed.partial.add(day)
            parsed.notes.append(
                f"{day}: the export's times are UTC{_offset(offset.total_seconds())}, so it "
                "covers this UTC day in part (partial: shown, not alerted)"
            )


def _offset(seconds: float) -> str:
    sign = "+" if seconds >= 0 else "-"
    minutes = int(abs(seconds)) // 60
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def _instance(text: str) -> tuple[str, str, str]:
    parts = [p.strip() for p in text.split(";")]
    if len(parts) < 4 or not parts[2] or not parts[3]:
        raise RowError(
            "Instance ID",
            f"{text!r} is not ApiKeyID;WorkspaceID;ModelName;Input/Output Type;Channel",
        )
    first = parts[0]
    key = "-" if not first or "token" in first.casefold() else first  # older bills: no key
    return key, model_cell(parts[2], "Instance ID model"), token_class_of(parts[3])


def _tokens(usage: str, unit: str) -> int:
    factor = UNITS.get(" ".join(unit.split()).casefold())
    if factor is None:
        raise RowError("Usage Unit", f"{unit!r} is not a token unit (tokens, 1K tokens)")
    try:
        value = Decimal(usage.strip().replace(",", "") or "0") * factor
    except InvalidOperation:
        raise RowError("Usage", f"{usage!r} is not a number") from None
    if not value.is_finite() or value < 0 or value != value.to_integral_value():
        raise RowError("Usage", f"{usage!r} {unit} is not a whole number of tokens")
    return int(value)
