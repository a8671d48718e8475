"""Cursor: the dashboard's usage CSV export (research/log-formats.md §5.2).

Cursor keeps no usable token ledger on disk; the per-event usage export is the source of truth.
The operator drops downloaded exports into a folder (default `~/.config/fleetmeter/cursor/`);
each file is read whole, columns matched by header name (three header variants are known and
columns get added). The four token columns are disjoint: `Input (w/ Cache Write)` is the
cache-write part of the prompt, `Input (w/o Cache Write)` the plain input.

Rows carry no request id. The event id hashes the row's identity (its time, model and token
columns: the values every header variant shares, so a re-download in a newer layout still
dedupes) plus the occurrence index of identical identities within the file, so two identical
rows of one export stay two events while an overlapping re-download maps onto the same ids.
Rows have no session either: the session id is synthetic, `cursor:agent:<Cloud Agent ID>` for
Cloud Agent rows, `cursor:automation:<Automation ID>` for automation rows, else
`cursor:<UTC date>` (one pseudo-session per day).
"""

from __future__ import annotations

import io
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import msgspec

from node_agent.sources.base import FileKind, ParseProblem, Sink, Source, SourceFile
from node_agent.sources.homes import CursorHomes
from shared.events import MAX_TOKENS, Agent, Tokens, UsageEvent

DATE = "Date"
MODEL = "Model"
CACHE_WRITE = "Input (w/ Cache Write)"
INPUT = "Input (w/o Cache Write)"
CACHE_READ = "Cache Read"
OUTPUT = "Output Tokens"
TOTAL = "Total Tokens"
COST = "Cost"
KIND = "Kind"
MAX_MODE = "Max Mode"
CLOUD_AGENT = "Cloud Agent ID"
AUTOMATION = "Automation ID"

# What a row cannot be read without; `Total Tokens` is only a check and `Cost` informational,
# and some exports omit them.
REQUIRED = (DATE, MODEL, CACHE_WRITE, INPUT, CACHE_READ, OUTPUT)
KNOWN = (*REQUIRED, TOTAL, COST, KIND, MAX_MODE, CLOUD_AGENT, AUTOMATION)
TOKEN_COLUMNS = (CACHE_WRITE, INPUT, CACHE_READ, OUTPUT)

_COST_LABELS = {"", "-", "included", "free", "n/a"}
_MAX_MODE_ON = {"yes", "on", "true", "1"}
_HEAD_BYTES = 64 * 1024


def _norm(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()


_CANONICAL = {_norm(name): name for name in KNOWN}


class _Row(msgspec.Struct, frozen=True):
    ts: float
    model: str
    tokens: Tokens
    identity: tuple[int, str, int, int, int, int]
    cost: str | None
    kind: str | None
    max_mode: bool
    session_id: str


def _columns(header: list[str]) -> dict[str, int]:
    """Known column -> index, matched by name (case and spacing tolerated)."""
    found: dict[str, int] = {}
    for index, name in enumerate(header):
        canonical = _CANONICAL.get(_norm(name))
        if canonical is not None and canonical not in found:
            found[canonical] = index
    return found


def looks_like_cursor_header(header: list[str]) -> bool:
    """Date, Model and most token columns: a Cursor export, even one missing a column (which
    read_whole then reports by name)."""
    found = _columns(header)
    return DATE in found and MODEL in found and sum(c in found for c in TOKEN_COLUMNS) >= 2


def _count(text: str, column: str) -> int:
    cleaned = text.strip().replace(",", "")
    if cleaned in ("", "-"):
        return 0
    try:
        value = int(cleaned)
    except ValueError:
        try:
            number = float(cleaned)
        except ValueError:
            raise ValueError(f"{column} is not a number: {text!r}") from None
        if not number.is_integer():
            raise ValueError(f"{column} is not a whole number: {text!r}") from None
        value = int(number)
    if value < 0:
        raise ValueError(f"{column} is negative: {text!r}")
    if value > MAX_TOKENS:
        raise ValueError(f"{column} is out of range: {text!r}")
    return value


def _date(text: str) -> float:
    cleaned = text.strip()
    try:
        dt = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"Date is not an ISO date: {text!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # the export is in UTC; date-only rows mean UTC midnight
    return dt.timestamp()


def _cost(text: str) -> str | None:
    """A dollar figure as a decimal string; labels (`Included`, `-`) are no figure."""
    cleaned = text.strip().replace("$", "").replace(",", "").strip()
    if cleaned.casefold() in _COST_LABELS:
        return None
    try:
        value = Decimal(cleaned)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    return format(value, "f")


class CursorSource(CursorHomes, Source):
    def __init__(self) -> None:
        self._emitted: set[str] = set()  # re-reads of an unchanged export send nothing new

    def discover(self, home: Path) -> list[SourceFile]:
        if home.is_file():
            candidates = [home]
        elif home.is_dir():
            candidates = sorted(p for p in home.iterdir() if p.is_file())
        else:
            return []
        return [SourceFile(p, FileKind.WHOLE) for p in candidates if is_cursor_csv(p)]

    def read_whole(self, path: Path, sink: Sink) -> None:
        try:
            text = path.read_bytes().decode("utf-8-sig")  # spreadsheet tools add a BOM
        except OSError as exc:
            sink.problem(ParseProblem(str(path), 0, f"cannot read: {exc}"))
            return
        except UnicodeDecodeError as exc:
            sink.problem(ParseProblem(str(path), 0, f"not UTF-8 text: {exc}"))
            return
        import csv  # here: every scan loads this source, few read a Cursor export

        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = next(reader, None)
        except csv.Error as exc:
            sink.problem(ParseProblem(str(path), 1, f"unreadable header: {exc}"))
            return
        if header is None:
            sink.problem(ParseProblem(str(path), 0, "empty file: no header"))
            return
        columns = _columns(header)
        missing = [name for name in REQUIRED if name not in columns]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            reason = f"not read: missing required column(s) {names}"
            sink.problem(ParseProblem(str(path), 1, reason))
            return
        seen: Counter[tuple[int, str, int, int, int, int]] = Counter()
        while True:
            try:
                cells = next(reader, None)
            except csv.Error as exc:
                sink.problem(ParseProblem(str(path), reader.line_num, f"bad CSV: {exc}"))
                return  # the csv module cannot resynchronise after a broken quote
            if cells is None:
                break
            lineno = reader.line_num
            if not any(cell.strip() for cell in cells):
                continue
            if len(cells) != len(header):
                reason = f"{len(cells)} fields where the header has {len(header)}"
                sink.problem(ParseProblem(str(path), lineno, reason))
                continue
            try:
                row = self._row(cells, columns, path, lineno, sink)
            except ValueError as exc:
                sink.problem(ParseProblem(str(path), lineno, str(exc)))
                continue
            occurrence = seen[row.identity]
            seen[row.identity] += 1
            self._emit(row, occurrence, f"{path}:{lineno}", sink)

    def _row(
        self, cells: list[str], columns: dict[str, int], path: Path, lineno: int, sink: Sink
    ) -> _Row:
        def cell(name: str) -> str:
            index = columns.get(name)
            return cells[index].strip() if index is not None else ""

        ts = _date(cell(DATE))
        model = cell(MODEL)
        if not model:
            raise ValueError("Model is empty")
        counts = {name: _count(cell(name), name) for name in TOKEN_COLUMNS}
        if TOTAL in columns and cell(TOTAL):
            total = _count(cell(TOTAL), TOTAL)
            parts = sum(counts.values())
            if total != parts:
                # The columns are disjoint by definition; keep the row, flag the export.
                reason = f"Total Tokens {total} != sum of the token columns {parts}"
                sink.problem(ParseProblem(str(path), lineno, reason))
        tokens = Tokens(
            input=counts[INPUT],
            output=counts[OUTPUT],
            cache_read=counts[CACHE_READ],
            cache_write_5m=counts[CACHE_WRITE],  # no TTL in the export
        )
        cloud_agent = cell(CLOUD_AGENT)
        automation = cell(AUTOMATION)
        if cloud_agent:
            session_id = f"cursor:agent:{cloud_agent}"
        elif automation:
            session_id = f"cursor:automation:{automation}"
        else:
            session_id = f"cursor:{datetime.fromtimestamp(ts, UTC).date().isoformat()}"
        identity = (
            round(ts * 1000),
            model,
            counts[CACHE_WRITE],
            counts[INPUT],
            counts[CACHE_READ],
            counts[OUTPUT],
        )
        return _Row(
            ts=ts,
            model=model,
            tokens=tokens,
            identity=identity,
            cost=_cost(cell(COST)),
            kind=cell(KIND) or None,
            max_mode=cell(MAX_MODE).casefold() in _MAX_MODE_ON,
            session_id=session_id,
        )

    def _emit(self, row: _Row, occurrence: int, origin: str, sink: Sink) -> None:
        # A row without tokens is still kept: it is a usage event in Cursor's own ledger
        # (request-priced plans, errored requests) and may carry a cost.
        import hashlib  # here, not at the top: a scan of the other agents starts faster

        key = "\x1f".join(str(part) for part in (*row.identity, occurrence))
        event_id = "cursor:" + hashlib.sha256(key.encode()).hexdigest()[:32]
        if event_id in self._emitted:
            return
        self._emitted.add(event_id)
        sink.usage(
            UsageEvent(
                event_id=event_id,
                ts=row.ts,
                agent=Agent.CURSOR,
                model=row.model,
                tokens=row.tokens,
                session_id=row.session_id,
                # `Kind` (Included / On-Demand) is kept as the tier: pricing derives the
                # cost class from it. Max Mode is a pricing mode, like fast mode.
                service_tier=row.kind,
                speed="max" if row.max_mode else None,
                cache_write_unsplit=row.tokens.cache_write_5m > 0,
                reported_cost_usd=row.cost,
                origin=origin,
            )
        )


def is_cursor_csv(path: Path) -> bool:
    """A Cursor usage export, by its header (`CursorHomes`)."""
    if path.suffix.lower() != ".csv":
        return False
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD_BYTES)
    except OSError:
        return False
    text = head.decode("utf-8-sig", errors="replace")
    import csv  # (a .csv file met: see read_whole)

    try:
        header = next(csv.reader(io.StringIO(text, newline="")), None)
    except csv.Error:
        return False
    return header is not None and looks_like_cursor_header(header)
