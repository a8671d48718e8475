"""Per-minute spend series for the last few hours, by call time: the sparklines and $/h.

A scope is a (kind, key) pair: ("fleet", ""), ("machine", name), ("profile", "machine/name").
Minutes are epoch minutes (ts // 60), so the series does not care about time zones.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from hub._totals import ZERO, Basis, Totals

Scope = tuple[str, str]
FLEET: Final[Scope] = ("fleet", "")


@dataclass(frozen=True, slots=True)
class MinutePoint:
    start: float  # epoch seconds of the minute's start
    api_equivalent: Decimal
    metered: Decimal
    estimated: Decimal
    tokens: int

    def amount(self, basis: Basis) -> Decimal:
        if basis is Basis.API_EQUIVALENT:
            return self.api_equivalent
        return self.metered + self.estimated


@dataclass(slots=True)
class _Bucket:
    api_equivalent: Decimal = ZERO
    metered: Decimal = ZERO
    estimated: Decimal = ZERO
    tokens: int = 0

    def amount(self, basis: Basis) -> Decimal:
        if basis is Basis.API_EQUIVALENT:
            return self.api_equivalent
        return self.metered + self.estimated


class RunRate:
    """Per-minute buckets per scope; add and prune under `localcontext(MONEY)`."""

    def __init__(self, hours: float) -> None:
        if hours <= 0:
            raise ValueError(f"run-rate window must be positive, got {hours} hours")
        self.minutes = max(1, round(hours * 60))
        self._series: dict[Scope, dict[int, _Bucket]] = {}

    def clear(self) -> None:
        self._series.clear()

    def add(self, scopes: tuple[Scope, ...], minute: int, now_minute: int, f: Totals) -> None:
        if minute <= now_minute - self.minutes:
            return  # older than the window: no point keeping it
        tokens = f.tokens
        for scope in scopes:
            series = self._series.get(scope)
            if series is None:
                series = self._series[scope] = {}
            bucket = series.get(minute)
            if bucket is None:
                bucket = series[minute] = _Bucket()
            bucket.api_equivalent += f.api_equivalent
            bucket.metered += f.metered
            bucket.estimated += f.estimated
            bucket.tokens += tokens

    def prune(self, now_minute: int) -> None:
        oldest = now_minute - self.minutes + 1
        for scope in list(self._series):
            series = self._series[scope]
            for minute in [m for m in series if m < oldest]:
                del series[minute]
            if not series:
                del self._series[scope]

    def points(self, scope: Scope, now_minute: int) -> list[MinutePoint]:
        """One point per minute of the window, oldest first, the current minute last."""
        series = self._series.get(scope, {})
        out = []
        for minute in range(now_minute - self.minutes + 1, now_minute + 1):
            b = series.get(minute)
            if b is None:
                out.append(MinutePoint(minute * 60.0, ZERO, ZERO, ZERO, 0))
            else:
                out.append(
                    MinutePoint(minute * 60.0, b.api_equivalent, b.metered, b.estimated, b.tokens)
                )
        return out

    def total(self, scope: Scope, now_minute: int, minutes: int, basis: Basis) -> Decimal:
        """The sum over the last `minutes` minutes, the current (partial) one included."""
        series = self._series.get(scope, {})
        total = ZERO
        for minute in range(now_minute - minutes + 1, now_minute + 1):
            b = series.get(minute)
            if b is not None:
                total += b.amount(basis)
        return total

    def binned(self, scope: Scope, now_minute: int, bins: int, basis: Basis) -> list[Decimal]:
        """The window's spend in `bins` equal bins, oldest first (for a sparkline); reads only
        the minutes that have calls, so a quiet scope costs nothing."""
        out = [ZERO] * bins
        first = now_minute - self.minutes + 1
        for minute, b in self._series.get(scope, {}).items():
            if first <= minute <= now_minute:  # (a call stamped in the future is no bin's)
                out[(minute - first) * bins // self.minutes] += b.amount(basis)
        return out

    def scopes(self) -> list[Scope]:
        return sorted(self._series)
