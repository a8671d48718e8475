"""The parts of the dashboard's table that need no screen: the sort ranking kept up to date a
few rows at a time, and each column's width as its widest shown cell."""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any

from rich.cells import cell_len

# (order of the value, tie-break: when the row came, the row's key)
_Entry = tuple[tuple[int, Any], int, str]


def _order(value: Any) -> tuple[int, Any]:
    """Numbers before text, so one column's mixed blanks and values compare."""
    if isinstance(value, (int, float, Decimal)):
        return (0, value)
    return (1, str(value))


class Ranking:
    """The shown rows in the order of one column's sort values: sorted (order, tie-break, key)
    entries, so that a tick's changed figures cost a few bisections, not a sort of every row.
    Ties, like blanks (no sort value: always last), keep the order in which the rows came."""

    def __init__(self) -> None:
        self.reverse = False
        self._ranked: list[_Entry] = []
        self._ranks: dict[str, _Entry] = {}  # key -> its entry
        self._blanks: dict[str, int] = {}  # rows with no sort value -> when they came

    def clear(self, reverse: bool = False) -> None:
        self.reverse = reverse
        self._ranked.clear()
        self._ranks.clear()
        self._blanks.clear()

    def rank_all(self, rows: Iterable[tuple[str, Any, int]], reverse: bool) -> None:
        """Rank these (key, sort value, arrival) afresh."""
        self.clear(reverse)
        sign = -1 if reverse else 1
        for key, value, seq in rows:
            if value is None:
                self._blanks[key] = seq
            else:
                self._ranks[key] = (_order(value), sign * seq, key)
        self._ranked = sorted(self._ranks.values())

    def rank(self, key: str, value: Any, seq: int) -> None:
        """Put (or move) one row at its place."""
        self.unrank(key)
        if value is None:
            self._blanks[key] = seq
        else:
            entry = (_order(value), -seq if self.reverse else seq, key)
            insort(self._ranked, entry)
            self._ranks[key] = entry

    def unrank(self, key: str) -> None:
        entry = self._ranks.pop(key, None)
        if entry is not None:
            del self._ranked[bisect_left(self._ranked, entry)]
        self._blanks.pop(key, None)

    def order(self) -> list[str]:
        """The keys in display order: the values, then the blanks."""
        ranked = reversed(self._ranked) if self.reverse else iter(self._ranked)
        keys = list(map(itemgetter(2), ranked))
        keys += sorted(self._blanks, key=self._blanks.__getitem__)
        return keys


class ColumnWidths:
    """Each column as wide as its widest shown cell, or its label: it widens when a wider cell
    comes and narrows again when that cell goes (a halt's outcome in the process cell)."""

    def __init__(self, labels: Sequence[str]) -> None:
        self._labels = [cell_len(label) for label in labels]
        self._lengths: list[Counter[int]] = [Counter() for _ in labels]  # cell widths shown
        self.widths = list(self._labels)
        self._resized: set[int] = set()  # columns whose widest cell changed

    def count(self, column: int, text: str, step: int) -> None:
        """Count a shown cell in (`step` 1) or out (-1) of its column."""
        lengths = self._lengths[column]
        n = cell_len(text)
        left = lengths[n] + step
        if left:
            lengths[n] = left
        else:
            del lengths[n]
        if (step > 0 and n > self.widths[column]) or (not left and n == self.widths[column]):
            self._resized.add(column)

    def settle(self) -> set[int]:
        """Give the columns whose widest cell changed their new width; returns those whose
        width did change."""
        changed = set()
        for i in self._resized:
            width = max(self._labels[i], max(self._lengths[i], default=0))
            if width != self.widths[i]:
                self.widths[i] = width
                changed.add(i)
        self._resized.clear()
        return changed
