"""A session's cache-read ratio and run-rate, as both MCP servers tell an agent (the node's
from its own tally, the hub's from its ledger): one definition, so the two never disagree on
what the words mean."""

from __future__ import annotations

from decimal import Decimal
from typing import Final, Protocol

RUN_RATE_WINDOW: Final = 3600.0  # seconds: the run-rate is the spend of the last hour, per hour
MIN_SPAN_S: Final = 60.0  # a younger session is rated over a minute: one call is not a rate


class InputSide(Protocol):
    """Token counts by bucket (`shared.events.Tokens`, the hub's `Totals`)."""

    @property
    def input(self) -> int: ...
    @property
    def cache_read(self) -> int: ...
    @property
    def cache_write_5m(self) -> int: ...
    @property
    def cache_write_1h(self) -> int: ...


def cache_read_ratio(tokens: InputSide) -> float | None:
    """Cache reads over every input-side token (uncached input, cache reads and writes), to 4
    places; None before the first prompt token."""
    prompt = tokens.input + tokens.cache_read + tokens.cache_write_5m + tokens.cache_write_1h
    return round(tokens.cache_read / prompt, 4) if prompt else None


def run_rate_per_hour(recent: Decimal, first: float, now: float) -> Decimal:
    """Dollars an hour: `recent` is the spend of the last RUN_RATE_WINDOW, taken over that
    window or over the session's life when it is younger (at least MIN_SPAN_S)."""
    hours = max(min(now - first, RUN_RATE_WINDOW), MIN_SPAN_S) / 3600
    return (recent / Decimal(str(hours))).quantize(Decimal("0.0001"))
