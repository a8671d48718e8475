"""A DataTable that is updated in place from `TableDiff`s: stable row keys, only changed cells.

It keeps every row it was given (`rows_by_key`) and shows those that pass the drill-down scope
and the `/` filter, so narrowing and widening the view never loses a row, and a row that
changes while hidden is right when it comes back. Sorting uses each cell's sort value (numbers
as numbers, blanks last in either direction) and keeps the cursor on the same row.

Made for thousands of rows changing every second (`bench/tui.py` measures it):

- rows a diff names as stale (changed, not built yet: see `hub.dashboard`) are built when
  they come into view, when a filter, scope or sort needs every row, or by later ticks;
- a changed cell is changed in place (`write_cell`), and only the lines of the changed rows
  in view are redrawn (`update_cell` refreshes the whole table, for each cell);
- a sort keeps its ranking up to date by bisection instead of sorting every row each tick,
  redraws only the lines in view that show another row, and sets the rows' locations from
  the new order at C speed (`_RowOrder`: the stock map hashes each `RowKey` in Python);
  rows go in and out many at a time (a drill-down) in one pass rather than one by one;
- the row order, and each line's styles, are worked out once, not for every cell written or
  every line drawn; a body cell is drawn straight into simplified segments and kept until it
  changes, and a body line is its cells' segments (no crop or simplify pass).

The stock DataTable does these things one row or cell at a time through its private parts;
these overrides use the same parts (`_row_locations` and `TwoWayDict`, `_data`, `rows`,
`_update_count`, `_updated_cells`, `_get_offsets`, `_get_row_region`, `_line_cache`, the
render caches and methods) as Textual 8.2 has them. `tests/test_dashboard_scale.py` checks that the
table draws exactly what the stock code draws, and that rows land where they would.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import repeat
from operator import itemgetter
from typing import Any, Final, Self

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.text import Text, TextType
from textual._two_way_dict import TwoWayDict
from textual._types import SegmentLines
from textual.color import Color
from textual.coordinate import Coordinate
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, CursorType, RowKey, StringKey
from textual.widgets.data_table import Row as DataRow

from hub.dashboard import Cell, Column, Row, RowSource, TableDiff

TONES: Final = {
    "": "",
    "good": "green",
    "warn": "yellow",
    "bad": "bold red",
    "dim": "grey50",
}
_TONE_STYLES: Final = {
    tone: Style.parse(style) if style else Style() for tone, style in TONES.items()
}
_NO_TONE: Final = Style()
_RENDER_CACHE: Final = 20_000  # rendered cells kept (a screenful is a few hundred)


class Shown:
    """One cell as the DataTable holds it. `_render_cell` draws it; Rich (the header's
    measurements, the stock path) gets a Text, and its width without making one."""

    __slots__ = ("cell", "right", "row")

    def __init__(self, cell: Cell, right: bool, row: str) -> None:
        self.cell = cell
        self.right = right
        self.row = row  # the row's key: what a sort ranks by

    def text(self) -> Text:
        return Text(
            self.cell.text,
            style=TONES.get(self.cell.tone, ""),
            justify="right" if self.right else "left",
            no_wrap=True,
            end="",
        )

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.text()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        width = cell_len(self.cell.text)
        return Measurement(width, width)

    def __str__(self) -> str:
        return self.cell.text


def _order(value: Any) -> tuple[int, Any]:
    """Numbers before text, so one column's mixed blanks and values compare."""
    if isinstance(value, (int, float, Decimal)):
        return (0, value)
    return (1, str(value))


RowFilter = Callable[[Row], bool]
# (row index, column index, row style, width, cursor, hover)
_RenderKey = tuple[int, int, Style, int, bool, bool]


class _RowOrder(TwoWayDict[RowKey, int]):
    """`DataTable._row_locations` made from the rows' order at once (a sort, rows taken out
    by the many). The stock one is two dicts with a `RowKey` on one side, whose hash is
    Python code: for thousands of rows a tick that adds up. Here index -> key is the list of
    keys, and key -> index a dict by the key's string (a `RowKey` equals its string)."""

    def __init__(self, keys: list[RowKey | None], names: list[str]) -> None:
        self._keys = keys
        self._index: dict[object, int] = dict(zip(names, range(len(names)), strict=True))

    @staticmethod
    def _name(key: object) -> object:
        if isinstance(key, StringKey) and key.value is not None:
            return key.value
        return key

    def __setitem__(self, key: RowKey, value: int) -> None:
        self._index[self._name(key)] = value
        if value == len(self._keys):
            self._keys.append(key)
        else:
            self._keys[value] = key

    def __delitem__(self, key: RowKey) -> None:
        self._keys[self._index.pop(self._name(key))] = None

    def __iter__(self) -> Iterator[RowKey]:
        return (key for key in self._keys if key is not None)

    def get(self, key: RowKey) -> int | None:
        return self._index.get(self._name(key))

    def get_key(self, value: int) -> RowKey | None:
        return self._keys[value] if 0 <= value < len(self._keys) else None

    def contains_value(self, value: int) -> bool:
        return self.get_key(value) is not None

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, item: object) -> bool:
        return self._name(item) in self._index


class _Look:
    """A body cell's styles but for its place's mouse metadata: those of one row style,
    cursor and hover. The stock DataTable adds the metadata first; it carries no colour or
    attribute, so adding it last makes the same style, and this part is shared."""

    __slots__ = ("_post", "_pre", "blank", "toned")

    def __init__(self, base: Style, component: Style, post: Style) -> None:
        self._pre = base + component
        self._post = post
        self.blank = self._pre + post  # the padding's
        self.toned: dict[str, tuple[Style, bool]] = {}  # tone -> (style, the padding's too)

    def tone(self, tone: str) -> tuple[Style, bool]:
        hit = self.toned.get(tone)
        if hit is None:
            # as Rich draws a justified Text: the fill takes the text's style, the padding not
            style = self._pre + _TONE_STYLES.get(tone, _NO_TONE) + self._post
            hit = self.toned[tone] = (style, style == self.blank)
        return hit


class _Place:
    """A body cell's styles in one place (row, column, row style, cursor, hover)."""

    __slots__ = ("look", "meta", "styles")

    def __init__(self, look: _Look, meta: Style) -> None:
        self.look = look
        self.meta = meta
        # tone -> (the text's style, the padding's when it is another)
        self.styles: dict[str, tuple[Style, Style | None]] = {}

    def of(self, tone: str) -> tuple[Style, Style | None]:
        hit = self.styles.get(tone)
        if hit is None:
            style, plain = self.look.tone(tone)
            padding = None if plain else self.look.blank + self.meta
            hit = self.styles[tone] = (style + self.meta, padding)
        return hit


@dataclass(slots=True)
class _Pass:
    """One render pass's constants."""

    style: Style  # the widget's own style
    width: int  # the widget's
    widths: list[int]  # each column's, padding included
    total: int  # their sum
    padding: int
    fixed_rows: int
    fixed_columns: int
    zebra_stripes: bool
    cursor_type: CursorType
    columns: list[int]  # the spec index of each column shown
    # show_cursor, show_hover_cursor, css foreground priority, css background priority
    cursor_styles: tuple[bool, bool, bool, bool]
    components: dict[str, Style] = field(default_factory=dict)


class LiveTable(DataTable[Shown]):
    class ColumnsChanged(Message):
        """The columns shown changed (the screen was resized, or `show_all` flipped)."""

    def __init__(self, columns: Sequence[Column], **kwargs: Any) -> None:
        # before the DataTable's own set-up, whose watchers clear the render caches
        self._rendered: dict[_RenderKey, tuple[Cell, SegmentLines]] = {}
        self._places: dict[_RenderKey, _Place] = {}
        self._looks: dict[tuple[Style, bool, bool, bool], _Look] = {}
        # (row index, row style, cursor, hover) -> the style of the line's end past the columns
        self._end_styles: dict[tuple[int, Style, bool, bool], Style] = {}
        self._rendered_for: object = None  # the pseudo-classes the cached cells were drawn in
        self._pass: _Pass | None = None
        self._layout = 0  # counts the changes to the rows' order
        self._auto_height = False
        self._rows_in_order: tuple[tuple[int, int, int], list[DataRow]] | None = None
        self._offsets: tuple[tuple[int, int, int], list[tuple[RowKey, int]]] | None = None
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.spec = tuple(columns)
        self.rows_by_key: dict[str, Row] = {}
        self.scope: RowFilter | None = None
        self.filter_text = ""
        self.sort_column: str | None = None
        self.sort_reverse = False
        self._sort_index: int | None = None
        # Columns: those that fit by priority (`Column.priority`), or all of them (`show_all`:
        # the table then scrolls sideways). Each column is as wide as its widest shown cell,
        # and narrows again when that cell goes (an outcome in the process cell).
        self.show_all = False
        self._visible = list(range(len(self.spec)))  # spec indices of the DataTable's columns
        self._slots: list[int | None] = list(range(len(self.spec)))  # spec -> DataTable index
        self._lengths: list[Counter[int]] = [Counter() for _ in self.spec]  # shown cells' widths
        self._labels = [cell_len(c.label) for c in self.spec]
        self._widths = list(self._labels)  # each column's widest shown cell, or its label
        self._resized: set[int] = set()  # columns whose widest cell changed
        self._needs_sort = False
        self._shown: dict[str, list[Shown]] = {}  # the cells of the rows in the DataTable
        self._data_rows: dict[str, DataRow] = {}  # and their `rows`, by the key's string
        self._seq: dict[str, int] = {}  # shown rows: when each came (ties sort by it)
        self._added = 0
        self._row_keys: dict[str, RowKey] = {}
        self._ranked: list[tuple[tuple[int, Any], int, str]] = []
        self._ranks: dict[str, tuple[tuple[int, Any], int, str]] = {}  # key -> its entry
        self._blanks: dict[str, int] = {}  # shown rows with no sort value -> seq
        self._in_order: tuple[int, list[str]] | None = None  # (layout, order) as last sorted
        self._stale: AbstractSet[str] = frozenset()  # rows changed but not built (see apply)
        self._source: RowSource | None = None

    def on_mount(self) -> None:
        for column in self.spec:
            self.add_column(column.label, key=column.key)

    def on_resize(self) -> None:
        self.fit_columns()

    # -- the columns shown ---------------------------------------------------------------------

    @property
    def hidden_columns(self) -> list[str]:
        """The labels of the columns left out for want of room."""
        return [c.label for i, c in enumerate(self.spec) if self._slots[i] is None]

    def set_show_all(self, show_all: bool) -> None:
        self.show_all = show_all
        self.fit_columns()

    def fit_columns(self) -> None:
        """Show the columns that fit, most important first (all with `show_all`); rebuilds
        the table only when that set changes."""
        wanted = self._fitting()
        if wanted != self._visible:
            self._set_columns(wanted)

    def _fitting(self) -> list[int]:
        room = self.scrollable_content_region.width
        if self.show_all or room <= 0:
            return list(range(len(self.spec)))
        pad = 2 * self.cell_padding
        chosen: list[int] = []
        used = 0
        for i in sorted(range(len(self.spec)), key=lambda i: (self.spec[i].priority, i)):
            width = self._widths[i] + pad
            if not chosen or used + width <= room:
                chosen.append(i)
                used += width
        return sorted(chosen)

    def _set_columns(self, visible: list[int]) -> None:
        selected = self.selected_key
        self.clear(columns=True)
        self._visible = visible
        self._slots = [None] * len(self.spec)
        for slot, i in enumerate(visible):
            self._slots[i] = slot
            self.add_column(self.spec[i].label, key=self.spec[i].key)
        self._reselect(selected)
        self.post_message(self.ColumnsChanged())

    def action_cursor_right(self) -> None:
        """With the row cursor, ← and → scroll sideways a column at a time (the stock table:
        a character at a time)."""
        if self.cursor_type != "row":
            super().action_cursor_right()
            return
        edge = next((x for x in self._column_edges() if x > self.scroll_x), None)
        self.scroll_to(x=min(edge, self.max_scroll_x) if edge else self.max_scroll_x, animate=False)

    def action_cursor_left(self) -> None:
        if self.cursor_type != "row":
            super().action_cursor_left()
            return
        edge = next((x for x in reversed(self._column_edges()) if x < self.scroll_x), 0)
        self.scroll_to(x=edge, animate=False)

    def _column_edges(self) -> list[int]:
        """Where each column starts, from the left edge of the table."""
        edges, x = [], 0
        for column in self.ordered_columns:
            edges.append(x)
            x += column.get_render_width(self)
        return edges

    def _count(self, i: int, text: str, step: int) -> None:
        """Count a shown cell of column `i` in (`step` 1) or out (-1) of its column's widths."""
        lengths = self._lengths[i]
        n = cell_len(text)
        left = lengths[n] + step
        if left:
            lengths[n] = left
        else:
            del lengths[n]
        if (step > 0 and n > self._widths[i]) or (not left and n == self._widths[i]):
            self._resized.add(i)

    def _resize_columns(self) -> None:
        """Give the columns whose widest cell changed their new width."""
        if not self._resized:
            return
        changed = False
        for i in self._resized:
            width = max(self._labels[i], max(self._lengths[i], default=0))
            if width == self._widths[i]:
                continue
            self._widths[i] = width
            slot = self._slots[i]
            if slot is not None:
                self.ordered_columns[slot].content_width = width
                changed = True
        self._resized.clear()
        if changed:
            self._require_update_dimensions = True
            self._update_count += 1
            self.check_idle()
            self.refresh()
        if self._fitting() != self._visible:
            self._set_columns(self._fitting())

    # -- the data ------------------------------------------------------------------------------

    def apply(self, diff: TableDiff) -> int:
        """Apply one tick's changes; returns how many cells were written (text or tone). Rows
        the diff names as stale are built now if they are in view, later otherwise."""
        written = self._apply_rows(diff.upserts, diff.removed)
        if diff.source is not None:
            self._stale, self._source = diff.stale, diff.source
            top, bottom = self._visible_rows()
            if self._stale and bottom > top:
                keys = (self._row_locations.get_key(i) for i in range(max(0, top), bottom))
                in_view = [
                    k.value
                    for k in keys
                    if k is not None and k.value is not None and k.value in self._stale
                ]
                if in_view:
                    written += self._apply_rows(*self._source(in_view))
        return written

    @property
    def stale_rows(self) -> int:
        """Rows that changed and are not drawn yet (none is in view after an `apply`)."""
        return len(self._stale)

    def settle(self) -> None:
        """Re-sort if a row was added or a sorted-by cell changed since the last call."""
        if self._needs_sort or (self.sort_column is None and self._sort_index is not None):
            self._put_in_order()

    def _build_stale(self, keys: Iterable[str] | None = None) -> None:
        """Build stale rows now (all of them when `keys` is None)."""
        if self._source is None:
            return
        wanted = list(self._stale) if keys is None else [k for k in keys if k in self._stale]
        if wanted:
            self._apply_rows(*self._source(wanted))

    def _apply_rows(self, upserts: dict[str, Row], removed: AbstractSet[str]) -> int:
        written = 0
        hide = []  # rows to take out of the DataTable, at the end, at once
        adds: list[Row] = []  # and rows to put in
        for key in removed:
            self.rows_by_key.pop(key, None)
            if key in self._shown:
                hide.append(key)
        top, bottom = self._visible_rows()
        changed = False  # cells changed in place
        redraw: list[int] = []  # the rows in view among them
        sort_index = self._sort_index
        for key, row in upserts.items():
            old = self.rows_by_key.get(key)
            if old is row:
                continue
            self.rows_by_key[key] = row
            shown = self._shown.get(key)
            if not self._passes(row):
                if shown is not None:
                    hide.append(key)
                continue
            if shown is None:
                adds.append(row)
                written += len(row.cells)
                continue
            assert old is not None
            visible: bool | None = None
            for i, (new, was) in enumerate(zip(row.cells, old.cells, strict=True)):
                if new is was:
                    continue
                if i == sort_index and new.sort != was.sort:
                    self._rank(key, new.sort)
                if new.text == was.text and new.tone == was.tone:
                    continue  # reads the same: nothing to draw
                self.write_cell(key, i, new)
                if self._slots[i] is None:
                    continue  # a column not shown
                written += 1
                changed = True
                if visible is None:
                    index = self._row_locations.get(self._row_keys[key])
                    visible = index is not None and top <= index < bottom
                    if visible:
                        assert index is not None
                        redraw.append(index)
        if changed:
            # Rendered lines are cached per `_update_count`: a changed row, in view or not,
            # must not come back from the cache; the rows in view are drawn again.
            self._update_count += 1
            self._refresh_rows(redraw)
        self._remove_many(hide)
        self._add_many(adds)
        self._resize_columns()
        return written

    def write_cell(self, key: str, column: int, cell: Cell) -> None:
        """Put a changed cell of a shown row in place. The DataTable holds the same `Shown`;
        unlike `update_cell` this leaves the redrawing to the caller (`update_cell` refreshes
        the whole table, for each cell), but for a cell that may widen its column."""
        shown = self._shown[key][column]
        self._count(column, shown.cell.text, -1)
        self._count(column, cell.text, 1)
        shown.cell = cell

    def _refresh_rows(self, indices: Iterable[int]) -> None:
        """Redraw these rows' lines where they are on screen, not the whole table."""
        if self._auto_height:
            self.refresh()
            return
        header = self.header_height if self.show_header else 0
        first = int(self.scroll_offset.y)
        width, height = self.size
        regions = [
            Region(0, header + i - first, width, 1)
            for i in indices
            if first <= i < first + height - header
        ]
        if regions:
            self.refresh(*regions)

    def _visible_rows(self) -> tuple[int, int]:
        """The row indices on screen now (none when the table is not shown, as in a hidden
        tab), with a few rows' margin."""
        height = self.region.height
        if not height:
            return 0, 0
        top = int(self.scroll_offset.y) - 2
        return top, top + height + 4

    def _cells_of(self, row: Row) -> list[Shown]:
        return [
            Shown(cell, col.numeric, row.key)
            for cell, col in zip(row.cells, self.spec, strict=True)
        ]

    def _add(self, row: Row) -> None:
        for i, cell in enumerate(row.cells):
            self._count(i, cell.text, 1)
        shown = self._shown[row.key] = self._cells_of(row)
        self._row_keys[row.key] = self.add_row(*(shown[i] for i in self._visible), key=row.key)
        self._seq[row.key] = self._added = self._added + 1
        if self._sort_index is not None:
            self._rank(row.key, row.cells[self._sort_index].sort)

    def _add_many(self, rows: list[Row]) -> None:
        """`_add` for many rows at once (the first frame, leaving a drill-down), as `add_row`
        does it for one, which also moves the cursor and measures the row's cells again."""
        if len(rows) < 16:
            for row in rows:
                self._add(row)
            return
        was_empty = not self.rows
        columns = self.ordered_columns
        index = self.row_count
        for row in rows:
            shown = self._shown[row.key] = self._cells_of(row)
            row_key = self._row_keys[row.key] = RowKey(row.key)
            self._row_locations[row_key] = index
            index += 1
            self._data[row_key] = {
                column.key: shown[i] for column, i in zip(columns, self._visible, strict=True)
            }
            self.rows[row_key] = self._data_rows[row.key] = DataRow(row_key, 1)
            self._seq[row.key] = self._added = self._added + 1
            for i, cell in enumerate(row.cells):
                self._count(i, cell.text, 1)
            if self._sort_index is not None:
                self._rank(row.key, row.cells[self._sort_index].sort)
        self._layout += 1
        self._require_update_dimensions = True  # the virtual size, on idle
        self.cursor_coordinate = self.cursor_coordinate
        if was_empty and self.columns and self.show_cursor and self.cursor_type != "none":
            self._highlight_cursor()
        self._update_count += 1
        self.check_idle()
        self.refresh(layout=True)

    def _uncount(self, key: str) -> None:
        for i, shown in enumerate(self._shown.pop(key)):
            self._count(i, shown.cell.text, -1)

    def _remove(self, key: str) -> None:
        self._uncount(key)
        self._unrank(key)
        del self._seq[key]
        del self._row_keys[key]
        self.remove_row(key)

    def _remove_many(self, keys: list[str]) -> None:
        """`_remove` for many rows at once, as `remove_row` does it for one: that renumbers
        the rows below each time, which for a drill-down into one machine of a few thousand
        rows is seconds."""
        if len(keys) < 16:
            for key in keys:
                self._remove(key)
            return
        gone: set[RowKey] = set()
        for key in keys:
            self._uncount(key)
            self._unrank(key)
            del self._seq[key]
            del self._data_rows[key]
            gone.add(self._row_keys.pop(key))
        names = set(keys)
        kept: list[RowKey | None] = [
            row.key for row in self.ordered_rows if row.key.value not in names
        ]
        for row_key in gone:
            del self.rows[row_key]
            del self._data[row_key]
        self._updated_cells = {cell for cell in self._updated_cells if cell.row_key not in gone}
        self._row_locations = _RowOrder(kept, [str(key.value) for key in kept if key])
        self._require_update_dimensions = True
        self._layout += 1
        self._update_count += 1
        self.cursor_coordinate = self.cursor_coordinate
        self.hover_coordinate = self.hover_coordinate
        self.check_idle()
        self.refresh(layout=True)

    # -- what is shown -------------------------------------------------------------------------

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

    def _reselect(self, selected: str | None = None) -> None:
        """Show exactly the rows that pass, keeping the ones already shown in place (and the
        cursor on the selected row, or on `selected`)."""
        self._build_stale()
        selected = self.selected_key or selected
        hide, adds = [], []
        for key, row in self.rows_by_key.items():
            passes = self._passes(row)
            if passes and key not in self._shown:
                adds.append(row)
            elif not passes and key in self._shown:
                hide.append(key)
        self._remove_many(hide)
        self._add_many(adds)
        self._resize_columns()
        self._resort()
        self._keep_cursor(selected)

    # -- sorting and the cursor ----------------------------------------------------------------

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by `column`; numbers start largest first. `reverse=None` flips the direction
        when the column is already the sort column."""
        spec = next(c for c in self.spec if c.key == column)
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else spec.numeric
        self.sort_column, self.sort_reverse = column, reverse
        self._build_stale()
        self._resort()

    @property
    def selected_key(self) -> str | None:
        if not self.rows or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return key

    @property
    def selected_row(self) -> Row | None:
        key = self.selected_key
        if key is None:
            return None
        self._build_stale([key])
        return self.rows_by_key.get(key)

    def _keep_cursor(self, key: str | None) -> None:
        if key is not None and key in self.rows:
            row = self.get_row_index(key)
            if row != self.cursor_row:
                self.move_cursor(row=row, animate=False)

    # The shown rows in sort order are kept in `_ranked`, sorted (order, tie-break, key)
    # entries, so that a tick's changed figures cost a few bisections, not a sort of every
    # row. Ties, like blanks, keep the order in which the rows came.

    def _resort(self) -> None:
        """Rank every shown row again by the sort column and put them in that order."""
        self._ranked.clear()
        self._ranks.clear()
        self._blanks.clear()
        self._sort_index = None
        self._needs_sort = False
        if self.sort_column is None:
            return
        index = self._sort_index = next(
            i for i, c in enumerate(self.spec) if c.key == self.sort_column
        )
        sign = -1 if self.sort_reverse else 1
        for key in self._shown:
            value = self.rows_by_key[key].cells[index].sort
            if value is None:
                self._blanks[key] = self._seq[key]
            else:
                self._ranks[key] = (_order(value), sign * self._seq[key], key)
        self._ranked = sorted(self._ranks.values())
        self._put_in_order()

    def _rank(self, key: str, value: Any) -> None:
        self._unrank(key)
        seq = self._seq[key]
        if value is None:
            self._blanks[key] = seq
        else:
            entry = (_order(value), -seq if self.sort_reverse else seq, key)
            insort(self._ranked, entry)
            self._ranks[key] = entry
        self._needs_sort = True

    def _unrank(self, key: str) -> None:
        entry = self._ranks.pop(key, None)
        if entry is not None:
            del self._ranked[bisect_left(self._ranked, entry)]
        self._blanks.pop(key, None)

    def _put_in_order(self) -> None:
        self._needs_sort = False
        if self.sort_column is None:  # the sort was dropped (`sort_column = None`)
            self._ranked.clear()
            self._ranks.clear()
            self._blanks.clear()
            self._sort_index = None
            return
        if self._sort_index is None or not self.rows:
            return
        ranked = reversed(self._ranked) if self.sort_reverse else iter(self._ranked)
        order = list(map(itemgetter(2), ranked))
        order += sorted(self._blanks, key=self._blanks.__getitem__)
        before = self._in_order[1] if self._in_order and self._in_order[0] == self._layout else None
        if before == order:
            return  # no row moved: nothing to redraw
        selected = self.selected_key
        # What `DataTable.sort` ends with, without sorting every row again.
        keys: list[RowKey | None] = list(map(self._row_keys.__getitem__, order))
        self._row_locations = _RowOrder(keys, order)
        self._update_count += 1
        self._layout += 1
        self._rows_in_order = (self._layout_key, list(map(self._data_rows.__getitem__, order)))
        self._in_order = (self._layout, order)
        if before is None:
            self.refresh()
        else:  # only the lines in view that show another row now
            top, bottom = self._visible_rows()
            top, bottom = max(0, top), min(bottom, len(order))
            self._refresh_rows(i for i in range(top, bottom) if before[i] != order[i])
        self._keep_cursor(selected)

    # -- the order of the rows, for the DataTable ----------------------------------------------

    # The stock DataTable works out its rows' order again (`ordered_rows`, `_y_offsets`: a
    # pass over every row) whenever `_update_count` moves, that is for any cell written; here
    # they are kept until rows are added, removed or sorted.

    def clear(self, columns: bool = False) -> Self:
        self._shown.clear()
        for lengths in self._lengths:
            lengths.clear()
        self._widths = list(self._labels)
        self._resized.clear()
        self._data_rows.clear()
        self._seq.clear()
        self._row_keys.clear()
        self._ranked.clear()
        self._ranks.clear()
        self._blanks.clear()
        self._layout += 1
        return super().clear(columns)

    def add_row(
        self,
        *cells: Shown,
        height: int | None = 1,
        key: str | None = None,
        label: TextType | None = None,
    ) -> RowKey:
        self._layout += 1
        self._auto_height |= height is None
        row_key = super().add_row(*cells, height=height, key=key, label=label)
        if row_key.value is not None:
            self._data_rows[row_key.value] = self.rows[row_key]
        return row_key

    def remove_row(self, row_key: RowKey | str) -> None:
        self._layout += 1
        super().remove_row(row_key)
        name = row_key.value if isinstance(row_key, RowKey) else row_key
        if name is not None:
            self._data_rows.pop(name, None)

    def sort(
        self,
        *columns: ColumnKey | str,
        key: Callable[[Any], Any] | None = None,
        reverse: bool = False,
    ) -> Self:
        self._layout += 1
        return super().sort(*columns, key=key, reverse=reverse)

    @property
    def ordered_rows(self) -> list[DataRow]:
        if self._rows_in_order is None or self._rows_in_order[0] != self._layout_key:
            self._rows_in_order = (self._layout_key, super().ordered_rows)
        return self._rows_in_order[1]

    @property
    def _y_offsets(self) -> list[tuple[RowKey, int]]:
        if self._offsets is None or self._offsets[0] != self._layout_key:
            rows = self.ordered_rows
            if self._auto_height:
                offsets = [(row.key, y) for row in rows for y in range(row.height)]
            else:  # every row one line high
                offsets = list(zip([row.key for row in rows], repeat(0)))
            self._offsets = (self._layout_key, offsets)
        return self._offsets[1]

    def _get_row_region(self, row_index: int) -> Region:
        """The stock one adds up the heights of every row above (the cursor asks for it on
        each move): with one-line rows that is the row's index."""
        if self._auto_height or not self.is_valid_row_index(row_index):
            return super()._get_row_region(row_index)
        width = sum(column.get_render_width(self) for column in self.columns.values())
        width += self._row_label_column_width
        y = row_index + (self.header_height if self.show_header else 0)
        return Region(0, y, max(self.size.width, width), 1)

    @property
    def _layout_key(self) -> tuple[int, int, int]:
        # an auto-height row gets its height later, on idle: then follow every update
        return (self._layout, self.row_count, self._update_count if self._auto_height else 0)

    # -- drawing -------------------------------------------------------------------------------

    # The stock DataTable draws a line by looking up its styles again (walking the widget's
    # ancestors) and each cell through Rich's padding and layout machinery; here the styles
    # are taken once per pass and a body cell is made straight from its segments, cached
    # while its content, place and style stay the same. Header, labels, fixed columns and
    # auto-height rows go the stock way.

    def _clear_caches(self) -> None:
        super()._clear_caches()
        self._forget_drawn()

    def _forget_drawn(self) -> None:
        self._rendered.clear()
        self._places.clear()
        self._looks.clear()
        self._end_styles.clear()

    def render_lines(self, crop: Region) -> list[Strip]:
        # What the stock DataTable works out again for every line, once per pass.
        widths = [c.get_render_width(self) for c in self.ordered_columns]
        self._pass = _Pass(
            self.rich_style,
            self.size.width,
            widths,
            sum(widths),
            self.cell_padding,
            self.fixed_rows,
            self.fixed_columns,
            self.zebra_stripes,
            self.cursor_type,
            self._visible,
            (
                self.show_cursor,
                self._show_hover_cursor,
                self.cursor_foreground_priority == "css",
                self.cursor_background_priority == "css",
            ),
        )
        one = self._pass
        drawn_for = (
            self._pseudo_class_state,
            one.padding,
            one.fixed_rows,
            one.fixed_columns,
            one.cursor_styles,
        )
        if drawn_for != self._rendered_for:
            # focus, hover and cursor settings change the styles: redraw every cell
            self._forget_drawn()
            self._rendered_for = drawn_for
        try:
            return super().render_lines(crop)
        finally:
            self._pass = None

    def render_line(self, y: int) -> Strip:
        one = self._pass
        if one is None or self.fixed_rows:
            return super().render_line(y)
        scroll_x, scroll_y = self.scroll_offset
        if y >= (self.header_height if self.show_header else 0):
            y += scroll_y
        return self._render_line(y, scroll_x, scroll_x + self.size.width, one.style)

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        """The stock `_render_line`, but a body line that needs no cropping is its cells'
        segments as they are: `_draw_cell` makes each to its column's width and simplified
        (neighbouring cells never share a style: their mouse metadata differ)."""
        one = self._pass
        if one is None:
            return super()._render_line(y, x1, x2, base_style)
        width = one.width
        if (
            x1
            or one.total > width
            or self.fixed_columns
            or self._auto_height
            or (self._labelled_row_exists and self.show_row_labels)
        ):
            return super()._render_line(y, x1, x2, base_style)
        try:
            row_key, line_no = self._get_offsets(y)
        except LookupError:
            return Strip.blank(width, base_style)
        if row_key is self._header_row_key or row_key.value not in self._shown:
            return super()._render_line(y, x1, x2, base_style)
        cursor, hover = self.cursor_coordinate, self.hover_coordinate
        cache_key = (
            y,
            x1,
            x2,
            width,
            cursor,
            hover,
            base_style,
            self.cursor_type,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        strip: Strip | None = self._line_cache.get(cache_key)
        if strip is None:
            _, cells = self._render_line_in_row(row_key, line_no, base_style, cursor, hover)
            strip = Strip([segment for cell in cells for segment in cell], width)
            self._line_cache[cache_key] = strip
        return strip

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        one = self._pass
        if one is None:
            return super()._get_row_style(row_index, base_style)
        if row_index == -1:
            name = "datatable--header"
        elif row_index < one.fixed_rows:
            name = "datatable--fixed"
        elif one.zebra_stripes:
            name = "datatable--odd-row" if row_index % 2 else "datatable--even-row"
        else:
            return base_style
        style = one.components.get(name)
        if style is None:
            style = one.components[name] = self.get_component_styles(name).rich_style
        return style

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[SegmentLines, SegmentLines]:
        """A body row's line as the stock DataTable draws it when there are no row labels and
        no fixed columns (this table's case), with its per-line style look-ups done once."""
        one = self._pass
        if (
            one is None
            or row_key is self._header_row_key
            or self.fixed_columns
            or (self._labelled_row_exists and self.show_row_labels)
        ):
            return super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        cursor_type = one.cursor_type
        cache_key = (
            row_key,
            line_no,
            base_style,
            cursor_location,
            hover_location,
            cursor_type,
            self.show_cursor,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cached = self._row_render_cache.get(cache_key)
        if cached is not None:
            return cached
        index = self._row_locations.get(row_key)
        row_index = -1 if index is None else index
        row_style = self._get_row_style(row_index, base_style)
        should_highlight = self._should_highlight
        shown = self._shown.get(row_key.value) if row_key.value is not None else None
        scrollable: SegmentLines = []
        if cursor_type == "row" and shown is not None and not self._auto_height:
            # the cursor and the hover cover the whole row or none of it
            cursor = row_index == cursor_location.row
            hover = row_index == hover_location.row
            draw = self._draw_cell
            for column_index, width in enumerate(one.widths):
                scrollable.append(
                    draw(one, shown, row_index, column_index, row_style, width, cursor, hover)[0]
                )
        else:
            for column_index, width in enumerate(one.widths):
                cell = Coordinate(row_index, column_index)
                scrollable.append(
                    self._render_cell(
                        row_index,
                        column_index,
                        row_style,
                        width,
                        cursor=should_highlight(cursor_location, cell, cursor_type),
                        hover=should_highlight(hover_location, cell, cursor_type),
                    )[line_no]
                )
        remaining = max(0, one.width - one.total - self._row_label_column_width)
        end = self._end_style(row_index, row_style, cursor_type, cursor_location, hover_location)
        scrollable.append([Segment(" " * remaining, end)])
        pair: tuple[SegmentLines, SegmentLines] = ([], scrollable)
        self._row_render_cache[cache_key] = pair
        return pair

    def _end_style(
        self,
        row_index: int,
        row_style: Style,
        cursor_type: CursorType,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> Style:
        """The style of a body line past its last column, as the stock DataTable makes it."""
        hover = self._should_highlight(hover_location, Coordinate(row_index or 0, 0), cursor_type)
        cursor = row_index == cursor_location.row
        key = (row_index, row_style, hover, cursor)
        style = self._end_styles.get(key) if cursor_type == "row" else None
        if style is not None:
            return style
        if cursor_type == "row":
            style, _ = self._get_styles_to_render_cell(
                row_index == -1,
                False,
                False,
                hover,
                cursor,
                self.show_cursor,
                self._show_hover_cursor,
                False,
                False,
            )
            style = row_style + style
        elif row_style.bgcolor is not None:
            faded = Color.from_rich_color(row_style.bgcolor).blend(
                self.background_colors[1], factor=0.25
            )
            style = Style.from_color(color=row_style.color, bgcolor=faded.rich_color)
        else:
            style = Style.from_color(row_style.color, row_style.bgcolor)
        style += Style.from_meta({"row": row_index, "column": 0, "out_of_bounds": True})
        if cursor_type == "row":
            # the cursor settings are part of the pass: a change clears this (`render_lines`)
            self._end_styles[key] = style
        return style

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        one = self._pass
        row_key = self._row_locations.get_key(row_index) if row_index >= 0 else None
        shown = self._shown.get(row_key.value) if row_key and row_key.value else None
        if one is None or shown is None or column_index < 0 or self._auto_height:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        return self._draw_cell(
            one, shown, row_index, column_index, base_style, width, cursor, hover
        )

    def _draw_cell(
        self,
        one: _Pass,
        shown: list[Shown],
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool,
        hover: bool,
    ) -> SegmentLines:
        """One body cell as the stock DataTable draws it (padding, row and cursor styles, the
        cell's tone, cropped to the column), from the cache while it is unchanged. A cell whose
        padding and text share a style is one segment, as `Strip.simplify` would make it."""
        column = shown[one.columns[column_index]]
        cell = column.cell
        cache_key: _RenderKey = (row_index, column_index, base_style, width, cursor, hover)
        hit = self._rendered.get(cache_key)
        if hit is not None and hit[0] is cell:
            return hit[1]
        place = self._places.get(cache_key)
        if place is None:
            fixed = row_index < one.fixed_rows or column_index < one.fixed_columns
            look = self._looks.get((base_style, fixed, cursor, hover))
            if look is None:
                component_style, post_style = self._get_styles_to_render_cell(
                    False, False, fixed, hover, cursor, *one.cursor_styles
                )
                look = self._looks[base_style, fixed, cursor, hover] = _Look(
                    base_style, component_style, post_style
                )
            meta = Style.from_meta({"row": row_index, "column": column_index})
            place = self._places[cache_key] = _Place(look, meta)
        style, padding = place.of(cell.tone)
        pad = one.padding
        inner = max(0, width - 2 * pad)
        text = cell.text
        length = cell_len(text)
        if length > inner:
            text = set_cell_size(text, inner)
            length = inner
        space = " " * (inner - length)
        body = space + text if column.right else text + space
        if not pad:
            line = [Segment(body, style)]
        elif padding is None:
            blank = " " * pad
            line = [Segment(blank + body + blank, style)]
        else:
            blank_segment = Segment(" " * pad, padding)
            line = [blank_segment, Segment(body, style), blank_segment]
        lines = [line]
        if len(self._rendered) >= _RENDER_CACHE:
            self._forget_drawn()
        self._rendered[cache_key] = (cell, lines)
        return lines
