"""Reading a provider's billing export (CSV) into billed rows, every row checked on its own.

Formats (what each provider's export is and what is unverified: docs/billing-imports.md):

- `generic`: fleetmeter's own documented shape, for any provider whose export is not read
  directly (DeepSeek, Zhipu / Z.ai, or a spreadsheet made by hand): one row per day, provider,
  model and key with its token classes, amount and currency;
- `dashscope`: Alibaba Cloud's "Bill Details" export for Model Studio (Qwen), whose `Instance ID`
  packs `ApiKeyID;WorkspaceID;ModelName;Input/Output Type;Channel` (one row per token type).

A bad row is one line naming the file, the line and the field; the good rows are kept. Money is
a Decimal from the cell's text, never a float. An amount in another currency than USD needs the
rate (units per US dollar) and the day it was read, from the row or from `--rate`: it is never
counted as dollars without one, and both are kept beside the converted figure.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal, InvalidOperation, localcontext
from typing import Final
from zoneinfo import ZoneInfo

from shared.events import Tokens

IMPORT_PROVIDERS: Final = ("deepseek", "qwen", "zhipu")
FORMATS: Final = ("generic", "dashscope")
UNSPLIT: Final = "all_classes"  # by_class key of an amount the export does not split by class
MAX_BYTES: Final = 32 * 1024 * 1024
MAX_TOKENS: Final = 10**15
MAX_ERRORS: Final = 200  # said one by one; past this, counted
# Alibaba Cloud's China site states times in Beijing time (UTC+8): its default zone.
DASHSCOPE_ZONE: Final = "Asia/Shanghai"


class ImportFileError(Exception):
    """The file as a whole cannot be read (not CSV, no header, a required column missing)."""


@dataclass(frozen=True, slots=True)
class Rate:
    """`per_usd` units of `currency` buy one US dollar, as read on `day`."""

    currency: str
    per_usd: Decimal
    day: date


@dataclass(frozen=True, slots=True)
class BilledRow:
    provider: str
    day: date  # UTC
    model: str
    key: str  # the provider's API key id; "-" when the export names none
    token_class: str  # one of model.CLASSES, UNSPLIT, or "other:<what the export says>"
    tokens: Tokens
    amount: Decimal  # in `currency`, exact
    currency: str
    rate: Rate | None  # None for USD
    line: int

    @property
    def usd(self) -> Decimal:
        if self.rate is None:
            return self.amount
        with localcontext() as ctx:
            ctx.prec = 40
            return self.amount / self.rate.per_usd


@dataclass(slots=True)
class ParsedFile:
    rows: list[BilledRow] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "FILE:LINE: field: why"
    refused: int = 0  # rows refused (errors past MAX_ERRORS are only counted)
    notes: list[str] = field(default_factory=list)
    # UTC days the export covers only in part whatever its date (a day cut by the zone of its
    # times: a Beijing-time export starts and ends 8 hours into a UTC day)
    partial: set[date] = field(default_factory=set)

    def refuse(self, message: str) -> None:
        self.refused += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)


class RowError(ValueError):
    def __init__(self, field_name: str, why: str) -> None:
        super().__init__(f"{field_name}: {why}")


# ---- cells ---------------------------------------------------------------------------------

_SYMBOLS: Final = {"$": "USD", "US$": "USD", "¥": "CNY", "￥": "CNY", "RMB": "CNY", "CN¥": "CNY"}


def count_cell(text: str, name: str) -> int:
    """A token count: digits, thousands separators ("1,234" in a quoted cell), or an integral
    number in a spreadsheet's spelling ("1.2E+05", "300.0"); empty is 0."""
    cleaned = text.strip().replace(",", "").replace("_", "")
    if cleaned in ("", "-"):
        return 0
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise RowError(name, f"{text!r} is not a number of tokens") from None
    if not value.is_finite() or value != value.to_integral_value() or value < 0:
        raise RowError(name, f"{text!r} is not a whole number of tokens")
    if value > MAX_TOKENS:
        raise RowError(name, f"{text!r} is out of range")
    return int(value)


def amount_cell(text: str, name: str) -> tuple[Decimal, str | None]:
    """An exact amount and the currency its symbol names (None: no symbol)."""
    cleaned = text.strip().replace(",", "")
    symbol = None
    for mark, currency in sorted(_SYMBOLS.items(), key=lambda kv: -len(kv[0])):
        if cleaned.upper().startswith(mark.upper()):
            symbol, cleaned = currency, cleaned[len(mark) :].strip()
            break
    negative = cleaned.startswith("(") and cleaned.endswith(")")  # accounting's (1.23)
    if negative:
        cleaned = "-" + cleaned[1:-1]
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        raise RowError(name, f"{text!r} is not an amount") from None
    if not value.is_finite() or abs(value) >= Decimal(10) ** 12:
        raise RowError(name, f"{text!r} is not an amount")
    return value, symbol


def currency_cell(text: str, name: str) -> str:
    cleaned = text.strip().upper()
    cleaned = {"RMB": "CNY", "元": "CNY", "人民币": "CNY", "美元": "USD"}.get(cleaned, cleaned)
    if not re.fullmatch(r"[A-Z]{3}", cleaned):
        raise RowError(name, f"{text!r} is not a currency code such as USD or CNY")
    return cleaned


def day_cell(text: str, name: str, zone: tzinfo) -> date:
    """The UTC day of a time (its offset, else `zone`), or a date as written."""
    cleaned = text.strip().replace("/", "-")
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", cleaned):
        try:
            return date.fromisoformat(cleaned)
        except ValueError:
            raise RowError(name, f"{text!r} is not a day like 2026-11-30") from None
    try:
        when = datetime.fromisoformat(cleaned.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(name, f"{text!r} is not a day or a time (ISO 8601)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.astimezone(UTC).date()


def name_cell(text: str, name: str) -> str:
    cleaned = text.strip()
    if not cleaned or len(cleaned) > 200 or not cleaned.isprintable():
        raise RowError(name, f"{text!r} is not a name")
    return cleaned


def model_cell(text: str, name: str = "model") -> str:
    """A model id as the API names it: these providers' ids are lower case ("GLM-4.6" on a
    console is `glm-4.6` in the calls the fleet logs), so a bill's row meets the fleet's."""
    return name_cell(text, name).lower()


def parse_rate(text: str) -> Rate:
    """`--rate CNY=7.2345@2026-11-30`: 7.2345 yuan to the dollar, as read on that day."""
    match = re.fullmatch(r"\s*([A-Za-z]{3})\s*=\s*([0-9.]+)\s*@\s*(\d{4}-\d{2}-\d{2})\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not CUR=RATE@YYYY-MM-DD (e.g. CNY=7.2345@2026-11-30)")
    try:
        per_usd = Decimal(match[2])
        day = date.fromisoformat(match[3])
    except (InvalidOperation, ValueError):
        raise ValueError(f"{text!r}: the rate or its day cannot be read") from None
    if not per_usd.is_finite() or per_usd <= 0:
        raise ValueError(f"{text!r}: the rate must be more than 0")
    return Rate(match[1].upper(), per_usd, day)


# ---- the file ------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").split()).casefold()


@dataclass(frozen=True, slots=True)
class Columns:
    """Header names (normalised) for each field a format reads; the first found is used."""

    index: Mapping[str, int]

    def cell(self, cells: list[str], name: str) -> str:
        at = self.index.get(name)
        return cells[at] if at is not None and at < len(cells) else ""

    def has(self, name: str) -> bool:
        return name in self.index


def _columns(header: list[str], wanted: Mapping[str, tuple[str, ...]]) -> Columns:
    found = {_norm(h): i for i, h in reversed(list(enumerate(header)))}
    index = {}
    for name, aliases in wanted.items():
        for alias in aliases:
            if _norm(alias) in found:
                index[name] = found[_norm(alias)]
                break
    return Columns(index)


def read_rows(data: bytes, where: str, parsed: ParsedFile) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) of each non-empty row; a CSV the reader cannot go on past (a broken
    quote) ends the rows there with an error, the rows before it kept."""
    if len(data) > MAX_BYTES:
        raise ImportFileError(f"{where}: {len(data):,} bytes, more than {MAX_BYTES:,}: split it")
    try:
        text = data.decode("utf-8-sig")  # spreadsheet tools write a BOM
    except UnicodeDecodeError:
        try:
            text = data.decode("gb18030")  # Chinese consoles' spreadsheets
        except UnicodeDecodeError:
            raise ImportFileError(f"{where}: not text (UTF-8 or GB18030)") from None
    # strict: a quote left open is an error, not the rest of the file read into one cell
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for cells in reader:
            if any(c.strip() for c in cells):
                yield reader.line_num, cells
    except csv.Error as exc:
        parsed.refuse(f"{where}:{reader.line_num}: bad CSV ({exc}); the rows after it not read")


Format = Callable[[bytes, str, "ImportOptions"], ParsedFile]


@dataclass(frozen=True, slots=True)
class ImportOptions:
    provider: str | None = None  # --provider: the provider of rows that name none
    rates: Mapping[str, Rate] = field(default_factory=dict)  # --rate, by currency
    zone: str | None = None  # --tz: the zone of times without an offset


def parse_file(data: bytes, where: str, fmt: str, options: ImportOptions) -> ParsedFile:
    """Every row of an export in format `fmt`; ImportFileError when none can be read."""
    if fmt == "generic":
        from hub.reconcile.import_generic import parse_generic

        return parse_generic(data, where, options)
    if fmt == "dashscope":
        from hub.reconcile.import_dashscope import parse_dashscope

        return parse_dashscope(data, where, options)
    raise ImportFileError(f"{where}: unknown format {fmt!r} (known: {', '.join(FORMATS)})")


def header_and_rows(
    data: bytes, where: str, wanted: Mapping[str, tuple[str, ...]], required: tuple[str, ...]
) -> tuple[Columns, Iterator[tuple[int, list[str]]], int, ParsedFile]:
    parsed = ParsedFile()
    rows = read_rows(data, where, parsed)
    first = next(rows, None)
    if first is None:
        raise ImportFileError(f"{where}: empty: no header")
    columns = _columns(first[1], wanted)
    if missing := [name for name in required if not columns.has(name)]:
        spelled = "; ".join(f"{m} ({' / '.join(wanted[m])})" for m in missing)
        raise ImportFileError(f"{where}:{first[0]}: no column for {spelled}")
    return columns, rows, len(first[1]), parsed


def rate_for(
    currency: str, row_rate: str, row_day: str, options: ImportOptions, zone: tzinfo
) -> Rate | None:
    """The rate that turns `currency` into dollars: the row's own, else --rate; None for USD."""
    if currency == "USD":
        return None
    if row_rate.strip():
        per_usd, _ = amount_cell(row_rate, "fx_rate")
        if per_usd <= 0:
            raise RowError("fx_rate", f"{row_rate!r} must be more than 0")
        if not row_day.strip():
            raise RowError("fx_date", "a rate needs the day it was read (fx_date)")
        return Rate(currency, per_usd, day_cell(row_day, "fx_date", zone))
    given = options.rates.get(currency)
    if given is None:
        raise RowError(
            "currency",
            f"{currency} with no rate: give fx_rate and fx_date in the row or "
            f"--rate {currency}=UNITS_PER_USD@YYYY-MM-DD (never counted as dollars without one)",
        )
    return given


def zone_of(options: ImportOptions, default: str) -> tzinfo:
    return ZoneInfo(options.zone or default)
