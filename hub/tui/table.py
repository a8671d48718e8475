"""A DataTable that is updated in place from `TableDiff`s: stable row keys, only changed cells.

It keeps every row it was given (`rows_by_key`) and shows those that pass the drill-down scope
and the `/` filter, so narrowing and widening the view never loses a row, and a row that
changes while hidden is right when it comes back. Sorting uses each cell's sort value (numbers
as numbers, blanks last in either direction) and keeps the cursor on the same row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any, Final

from rich.text import Text
from textual.widgets import DataTable

from hub.dashboard import Cell, Column, Row, TableDiff

TONES: Final = {
    "": "",
    "good": "green",
    "warn": "yellow",
    "bad": "bold red",
    "dim": "grey50",
}


class Shown:
    """One cell as the DataTable holds it: rendered on demand (the table caches renders)."""

    __slots__ = ("cell", "right", "row")

    def __init__(self, cell: Cell, right: bool, row: str) -> None:
        self.cell = cell
        self.right = right
        self.row = row  # the row's key: what a sort ranks by

    def __rich__(self) -> Text:
        return Text(
            self.cell.text,
            style=TONES.get(self.cell.tone, ""),
            justify="right" if self.right else "left",
            no_wrap=True,
            end="",
        )

    def __str__(self) -> str:
        return self.cell.text


def _order(value: Any) -> tuple[int, Any]:
    """Numbers before text, so one column's mixed blanks and values compare."""
    if isinstance(value, (int, float, Decimal)):
        return (0, value)
    return (1, str(value))


RowFilter = Callable[[Row], bool]


class LiveTable(DataTable[Shown]):
    def __init__(self, columns: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.spec = tuple(columns)
        self.rows_by_key: dict[str, Row] = {}
        self.scope: RowFilter | None = None
        self.filter_text = ""
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._widths = [len(c.label) for c in self.spec]
        self._needs_sort = False

    def on_mount(self) -> None:
        for column in self.spec:
            self.add_column(column.label, key=column.key)

    # -- the data ----------------------------------------------------------------------------

    def apply(self, diff: TableDiff) -> int:
        """Apply one tick's changes; returns how many cells were written."""
        written = 0
        for key in diff.removed:
            self.rows_by_key.pop(key, None)
            if key in self.rows:
                self.remove_row(key)
        for key, row in diff.upserts.items():
            old = self.rows_by_key.get(key)
            self.rows_by_key[key] = row
            shown = key in self.rows
            if not self._passes(row):
                if shown:
                    self.remove_row(key)
                continue
            if not shown:
                self._add(row)
                written += len(row.cells)
                continue
            assert old is not None
            for i, (new, was) in enumerate(zip(row.cells, old.cells, strict=True)):
                if new != was:
                    written += 1
                    self._write(key, i, new)
        return written

    def _add(self, row: Row) -> None:
        for i, cell in enumerate(row.cells):
            self._widths[i] = max(self._widths[i], len(cell.text))
        self.add_row(*self._shown(row), key=row.key)
        self._needs_sort = self.sort_column is not None

    def _write(self, key: str, i: int, cell: Cell) -> None:
        column = self.spec[i]
        wider = len(cell.text) > self._widths[i]
        if wider:
            self._widths[i] = len(cell.text)
        self.update_cell(key, column.key, Shown(cell, column.numeric, key), update_width=wider)
        if column.key == self.sort_column:
            self._needs_sort = True

    def _shown(self, row: Row) -> list[Shown]:
        return [
            Shown(cell, col.numeric, row.key)
            for cell, col in zip(row.cells, self.spec, strict=True)
        ]

    def settle(self) -> None:
        """Re-sort if a row was added or a sorted-by cell changed since the last call."""
        if self._needs_sort:
            self._resort()

    # -- what is shown -----------------------------------------------------------------------

    def _passes(self, row: Row) -> bool:
        if self.scope is not None and not self.scope(row):
            return False
        if self.filter_text:
            needle = self.filter_text.lower()
            return any(needle in cell.text.lower() for cell in row.cells)
        return True

    def set_scope(self, scope: RowFilter | None) -> None:
        self.scope = scope
        self._reselect()

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip()
        self._reselect()

    def _reselect(self) -> None:
        """Show exactly the rows that pass, keeping the ones already shown in place."""
        selected = self.selected_key
        for key, row in self.rows_by_key.items():
            passes = self._passes(row)
            if passes and key not in self.rows:
                self._add(row)
            elif not passes and key in self.rows:
                self.remove_row(key)
        self._resort()
        self._keep_cursor(selected)

    # -- sorting and the cursor --------------------------------------------------------------

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by `column`; numbers start largest first. `reverse=None` flips the direction
        when the column is already the sort column."""
        spec = next(c for c in self.spec if c.key == column)
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else spec.numeric
        self.sort_column, self.sort_reverse = column, reverse
        self._resort()

    def _resort(self) -> None:
        self._needs_sort = False
        if self.sort_column is None or not self.rows:
            return
        selected = self.selected_key
        index = next(i for i, c in enumerate(self.spec) if c.key == self.sort_column)
        values = [
            (key.value, self.rows_by_key[key.value].cells[index].sort)
            for key in self.rows
            if key.value is not None and key.value in self.rows_by_key
        ]
        present = sorted(
            ((k, v) for k, v in values if v is not None),
            key=lambda kv: _order(kv[1]),
            reverse=self.sort_reverse,
        )
        blanks = [(k, v) for k, v in values if v is None]
        rank = {k: i for i, (k, _) in enumerate(present + blanks)}
        self.sort(key=lambda cells: rank.get(cells[0].row, len(rank)))
        self._keep_cursor(selected)

    @property
    def selected_key(self) -> str | None:
        if not self.rows or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return key

    @property
    def selected_row(self) -> Row | None:
        key = self.selected_key
        return self.rows_by_key.get(key) if key is not None else None

    def _keep_cursor(self, key: str | None) -> None:
        if key is not None and key in self.rows:
            self.move_cursor(row=self.get_row_index(key), animate=False)
