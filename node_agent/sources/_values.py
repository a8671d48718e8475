"""Reading values out of parsed log records: logs drift, so every read checks its type."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from node_agent.sources.base import ParseProblem, Sink
from shared.events import MAX_TOKENS


def text(value: object) -> str | None:
    """A non-empty string, else None."""
    return value if isinstance(value, str) and value else None


def count(value: object) -> int | None:
    """A token count as logged: an int (or an integral float); anything else is unknown."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def token_count(value: object) -> int | None:
    """A token count within 0..MAX_TOKENS, else None (negative, huge, not a number)."""
    number = count(value)
    return number if number is not None and 0 <= number <= MAX_TOKENS else None


def number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def iso_time(value: object) -> float | None:
    """Epoch seconds of an ISO-8601 timestamp; one without a zone is UTC (as agents write)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def json_object(path: Path, lineno: int, line: bytes, sink: Sink) -> dict[str, Any] | None:
    """The JSON object on a line, or None after reporting what is wrong with it."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        sink.problem(ParseProblem(str(path), lineno, f"invalid JSON: {exc}"))
        return None
    if not isinstance(record, dict):
        sink.problem(ParseProblem(str(path), lineno, "line is not a JSON object"))
        return None
    return record
