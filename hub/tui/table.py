"""The dashboard's table: a scroll view over its own row model, updated in place from
`TableDiff`s (stable row keys, only changed cells), drawing only the lines on screen.

It keeps every row it was given (`rows_by_key`) and shows those that pass the drill-down scope
and the `/` filter, so narrowing and widening the view never loses a row, and a row that
changes while hidden is right when it comes back. Sorting uses each cell's sort value (numbers
as numbers, blanks last in either direction) and keeps the cursor on the same row.

Made for thousands of rows changing every second (`bench/tui.py` measures it):

- rows a diff names as stale (changed, not built yet: see `hub.dashboard`) are built when
  they come into view, when a filter, scope or sort needs every row, or by later ticks;
- a changed cell is written into the row's cells, and only the lines of the changed rows in
  view are redrawn; a sort redraws only the lines in view that show another row;
- a sort keeps its ranking up to date by bisection instead of sorting every row each tick
  (`Ranking`), and rows go in and out many at a time (a drill-down) in one pass;
- a row's line is drawn once for its look (stripe, cursor, hover) and kept until a cell of
  it, the columns or the styles change.

It stands on Textual's public API only: a `ScrollView` whose `render_line` draws the header
(line 0, fixed) and the row at each other line, cropped to the horizontal scroll; the keys,
the cursor and the mouse are its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import ClassVar, Final

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from hub.dashboard import Cell, Column, Row, RowSource, TableDiff
from hub.tui.table_model import ColumnWidths, Ranking

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
_PADDING: Final = 1  # blank cells each side of a column
_HEADER: Final = 1  # lines above the rows
_STRIPS_KEPT: Final = 20_000  # drawn rows kept (a screenful is a few dozen)

RowFilter = Callable[[Row], bool]
# (odd row, cursor, hover): what a row's line looks like besides its cells
_Look = tuple[bool, bool, bool]


class LiveTable(ScrollView, can_focus=True):
    """Rows by key under a header of columns; ↑ ↓ PgUp PgDn Home End move the row cursor,
    ← → scroll sideways a column at a time, enter (or a click on the cursor's row) selects,
    a click on a header asks for a sort."""

    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        color: $foreground;
        height: auto;
        max-height: 100%;
        &:focus {
            background-tint: $foreground 5%;
            & > .live-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .live-table--header { background-tint: $foreground 5%; }
        }
        &:dark > .live-table--even-row { background: $surface-darken-1 40%; }
        & > .live-table--header { text-style: bold; background: $panel; color: $foreground; }
        &:ansi > .live-table--header { background: ansi_bright_blue; color: ansi_default; }
        & > .live-table--odd-row { }
        & > .live-table--even-row { background: $surface-lighten-1 50%; }
        & > .live-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
        & > .live-table--hover { background: $block-hover-background; }
    }
    """
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-table--header",
        "live-table--odd-row",
        "live-table--even-row",
        "live-table--cursor",
        "live-table--hover",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Select", show=False),
        Binding("up", "cursor_up", "Cursor up", show=False),
        Binding("down", "cursor_down", "Cursor down", show=False),
        Binding("left", "column_left", "Column left", show=False),
        Binding("right", "column_right", "Column right", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home,ctrl+home", "first_row", "First row", show=False),
        Binding("end,ctrl+end", "last_row", "Last row", show=False),
    ]

    class ColumnsChanged(Message):
        """The columns shown changed (the screen was resized, or `show_all` flipped)."""

    class RowSelected(Message):
        """Enter on a row, or a click on the cursor's row."""

        def __init__(self, table: LiveTable, key: str) -> None:
            super().__init__()
            self.table = table
            self.key = key

        @property
        def control(self) -> LiveTable:
            return self.table

    class HeaderSelected(Message):
        """A click on a column's header."""

        def __init__(self, table: LiveTable, column: str) -> None:
            super().__init__()
            self.table = table
            self.column = column  # its key

        @property
        def control(self) -> LiveTable:
            return self.table

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 (Textual's name for it)
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.spec = tuple(columns)
        self.rows_by_key: dict[str, Row] = {}
        self.scope: RowFilter | None = None
        self.filter_text = ""
        self.sort_column: str | None = None
        self.sort_reverse = False
        self.cursor_row = 0
        # Columns: those that fit by priority (`Column.priority`), or all of them (`show_all`:
        # the table then scrolls sideways).
        self.show_all = False
        self._visible = list(range(len(self.spec)))  # spec indices of the columns shown
        self._edges: list[int] = []  # where each shown column starts
        self._total = 0  # their width, padding included
        self._widths = ColumnWidths([c.label for c in self.spec])
        self._shown: dict[str, list[Cell]] = {}  # the cells of the rows shown, by key
        self._order: list[str] = []  # the rows shown, top to bottom
        self._index: dict[str, int] = {}  # and each one's line
        self._seq: dict[str, int] = {}  # when each shown row came (ties sort by it)
        self._added = 0
        self._ranking = Ranking()
        self._sort_index: int | None = None
        self._needs_sort = False
        self._stale: AbstractSet[str] = frozenset()  # rows changed but not built (see apply)
        self._source: RowSource | None = None
        self._hover: int | None = None  # the row under the mouse
        # drawn rows: key -> (look, line); styles by look and tone; redrawn on a style change
        self._strips: dict[str, tuple[_Look, Strip, Style]] = {}
        self._looks: dict[_Look, tuple[Style, Style]] = {}
        self._toned: dict[tuple[_Look, str], Style] = {}
        self._edges, self._total = self._layout_columns()

    def on_resize(self) -> None:
        self.fit_columns()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._forget_drawn()

    def on_focus(self) -> None:
        self._forget_drawn()
        self.refresh()

    def on_blur(self) -> None:
        self._forget_drawn()
        self.refresh()

    # -- what the app and the tests read -------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._order)

    @property
    def shown_keys(self) -> list[str]:
        """The keys of the rows shown, top to bottom."""
        return list(self._order)

    def is_shown(self, key: str) -> bool:
        return key in self._index

    def get_row_index(self, key: str) -> int:
        """The line of a shown row (KeyError when it is not shown)."""
        return self._index[key]

    def get_cell(self, key: str, column: str) -> Cell:
        """A shown row's cell as drawn (KeyError when the row is not shown)."""
        return self._shown[key][self._spec_index(column)]

    @property
    def shown_columns(self) -> list[str]:
        """The keys of the columns shown, left to right."""
        return [self.spec[i].key for i in self._visible]

    def column_x(self, column: str) -> int:
        """Where a shown column starts, from the table's left edge (ValueError if hidden)."""
        return self._edges[self._visible.index(self._spec_index(column))]

    def column_width(self, column: str) -> int:
        """A column's width without its padding (shown or not)."""
        return self._widths.widths[self._spec_index(column)]

    @property
    def hidden_columns(self) -> list[str]:
        """The labels of the columns left out for want of room."""
        shown = set(self._visible)
        return [c.label for i, c in enumerate(self.spec) if i not in shown]

    @property
    def selected_key(self) -> str | None:
        if not self._order:
            return None
        return self._order[min(self.cursor_row, len(self._order) - 1)]

    @property
    def selected_row(self) -> Row | None:
        key = self.selected_key
        if key is None:
            return None
        self._build_stale([key])
        return self.rows_by_key.get(key)

    @property
    def stale_rows(self) -> int:
        """Rows that changed and are not drawn yet (none is in view after an `apply`)."""
        return len(self._stale)

    def _spec_index(self, column: str) -> int:
        return next(i for i, c in enumerate(self.spec) if c.key == column)

    # -- the columns shown ---------------------------------------------------------------------

    def set_show_all(self, show_all: bool) -> None:
        self.show_all = show_all
        self.fit_columns()

    def fit_columns(self) -> None:
        """Show the columns that fit, most important first (all with `show_all`)."""
        wanted = self._fitting()
        if wanted != self._visible:
            self._visible = wanted
            self._place_columns()
            self.post_message(self.ColumnsChanged())

    def _fitting(self) -> list[int]:
        room = self.scrollable_content_region.width
        if self.show_all or room <= 0:
            return list(range(len(self.spec)))
        widths = self._widths.widths
        chosen: list[int] = []
        used = 0
        for i in sorted(range(len(self.spec)), key=lambda i: (self.spec[i].priority, i)):
            width = widths[i] + 2 * _PADDING
            if not chosen or used + width <= room:
                chosen.append(i)
                used += width
        return sorted(chosen)

    def _layout_columns(self) -> tuple[list[int], int]:
        """Where each shown column starts, and their width together."""
        edges, x = [], 0
        for i in self._visible:
            edges.append(x)
            x += self._widths.widths[i] + 2 * _PADDING
        return edges, x

    def _place_columns(self) -> None:
        """Lay the columns out again and redraw, after the columns or their widths changed."""
        self._edges, self._total = self._layout_columns()
        self._strips.clear()
        self._size_changed()
        self.refresh()

    def _size_changed(self) -> None:
        self.virtual_size = Size(self._total, len(self._order) + _HEADER)

    def _resize_columns(self) -> None:
        changed = self._widths.settle()
        if changed & set(self._visible):
            self._place_columns()
        if changed:
            self.fit_columns()

    def action_column_right(self) -> None:
        """Scroll sideways to the next column's start."""
        edge = next((x for x in self._edges if x > self.scroll_x), None)
        self.scroll_to(x=min(edge, self.max_scroll_x) if edge else self.max_scroll_x, animate=False)

    def action_column_left(self) -> None:
        edge = next((x for x in reversed(self._edges) if x < self.scroll_x), 0)
        self.scroll_to(x=edge, animate=False)

    # -- the data ------------------------------------------------------------------------------

    def apply(self, diff: TableDiff) -> int:
        """Apply one tick's changes; returns how many cells were written (text or tone). Rows
        the diff names as stale are built now if they are in view, later otherwise."""
        written = self._apply_rows(diff.upserts, diff.removed)
        if diff.source is not None:
            self._stale, self._source = diff.stale, diff.source
            top, bottom = self._visible_rows()
            if self._stale and bottom > top:
                in_view = [k for k in self._order[max(0, top) : bottom] if k in self._stale]
                if in_view:
                    written += self._apply_rows(*self._source(in_view))
        return written

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
        hide = [key for key in removed if key in self._shown]  # taken out at the end, at once
        adds: list[Row] = []  # and put in
        for key in removed:
            self.rows_by_key.pop(key, None)
        redraw: list[int] = []  # the lines of rows changed in place
        sort_index = self._sort_index
        shown_columns = set(self._visible)
        for key, row in upserts.items():
            old = self.rows_by_key.get(key)
            if old is row:
                continue
            self.rows_by_key[key] = row
            if not self._passes(row):
                if key in self._shown:
                    hide.append(key)
                continue
            if key not in self._shown:
                adds.append(row)
                written += len(row.cells)
                continue
            assert old is not None
            seen = False
            for i, (new, was) in enumerate(zip(row.cells, old.cells, strict=True)):
                if new is was:
                    continue
                if i == sort_index and new.sort != was.sort:
                    self._ranking.rank(key, new.sort, self._seq[key])
                    self._needs_sort = True
                if new.text == was.text and new.tone == was.tone:
                    continue  # reads the same: nothing to draw
                self.write_cell(key, i, new)
                if i in shown_columns:
                    written += 1
                    if not seen:
                        seen = True
                        redraw.append(self._index[key])
        self._refresh_rows(redraw)
        self._remove_rows(hide)
        self._add_rows(adds)
        self._resize_columns()
        return written

    def write_cell(self, key: str, column: int, cell: Cell) -> None:
        """Put a changed cell of a shown row in place; the caller redraws its line."""
        cells = self._shown[key]
        self._widths.count(column, cells[column].text, -1)
        self._widths.count(column, cell.text, 1)
        cells[column] = cell
        self._strips.pop(key, None)

    def _refresh_rows(self, indices: Iterable[int]) -> None:
        """Redraw these rows' lines where they are on screen, not the whole table."""
        first = int(self.scroll_y)
        width, height = self.size
        regions = [
            Region(0, _HEADER + i - first, width, 1)
            for i in indices
            if first <= i < first + height - _HEADER
        ]
        if regions:
            self.refresh(*regions)

    def _visible_rows(self) -> tuple[int, int]:
        """The row indices on screen now (none when the table is not shown, as in a hidden
        tab), with a few rows' margin."""
        height = self.region.height
        if not height:
            return 0, 0
        top = int(self.scroll_y) - 2
        return top, top + height + 4

    def _add_rows(self, rows: list[Row]) -> None:
        """Put rows in at the end (a sort puts them in their place on `settle`)."""
        if not rows:
            return
        sort_index = self._sort_index
        for row in rows:
            key = row.key
            self._shown[key] = list(row.cells)
            self._index[key] = len(self._order)
            self._order.append(key)
            self._seq[key] = self._added = self._added + 1
            for i, cell in enumerate(row.cells):
                self._widths.count(i, cell.text, 1)
            if sort_index is not None:
                self._ranking.rank(key, row.cells[sort_index].sort, self._seq[key])
                self._needs_sort = True
        self._size_changed()
        self.refresh()

    def _remove_rows(self, keys: list[str]) -> None:
        """Take rows out, many at a time (a drill-down into one machine of thousands)."""
        if not keys:
            return
        for key in keys:
            for i, cell in enumerate(self._shown.pop(key)):
                self._widths.count(i, cell.text, -1)
            self._ranking.unrank(key)
            del self._seq[key]
            self._strips.pop(key, None)
        self._set_order([key for key in self._order if key in self._shown])
        self._size_changed()
        self.refresh()

    def _set_order(self, order: list[str]) -> None:
        self._order = order
        self._index = dict(zip(order, range(len(order)), strict=True))
        last = max(0, len(order) - 1)
        if self.cursor_row > last:
            self.cursor_row = last
        if self._hover is not None and self._hover > last:
            self._hover = None

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

    def _reselect(self) -> None:
        """Show exactly the rows that pass, keeping the ones already shown in place (and the
        cursor on the selected row)."""
        self._build_stale()
        selected = self.selected_key
        hide, adds = [], []
        for key, row in self.rows_by_key.items():
            passes = self._passes(row)
            if passes and key not in self._shown:
                adds.append(row)
            elif not passes and key in self._shown:
                hide.append(key)
        self._remove_rows(hide)
        self._add_rows(adds)
        self._resize_columns()
        self._resort()
        self._keep_cursor(selected)

    # -- sorting -------------------------------------------------------------------------------

    def sort_by(self, column: str, reverse: bool | None = None) -> None:
        """Sort by `column`; numbers start largest first. `reverse=None` flips the direction
        when the column is already the sort column."""
        spec = self.spec[self._spec_index(column)]
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else spec.numeric
        self.sort_column, self.sort_reverse = column, reverse
        self._build_stale()
        self._resort()

    def _resort(self) -> None:
        """Rank every shown row again by the sort column and put them in that order."""
        self._needs_sort = False
        if self.sort_column is None:
            self._sort_index = None
            self._ranking.clear()
            return
        index = self._sort_index = self._spec_index(self.sort_column)
        rows = ((key, cells[index].sort, self._seq[key]) for key, cells in self._shown.items())
        self._ranking.rank_all(rows, self.sort_reverse)
        self._put_in_order()

    def _put_in_order(self) -> None:
        self._needs_sort = False
        if self.sort_column is None:  # the sort was dropped (`sort_column = None`)
            self._sort_index = None
            self._ranking.clear()
            return
        order = self._ranking.order()
        before = self._order
        if order == before:
            return  # no row moved: nothing to redraw
        selected = self.selected_key
        self._set_order(order)
        if len(before) != len(order):
            self.refresh()
        else:  # only the lines in view that show another row now
            first = int(self.scroll_y)
            bottom = min(first + self.size.height, len(order))
            self._refresh_rows(i for i in range(first, bottom) if before[i] != order[i])
        self._keep_cursor(selected)

    # -- the cursor ----------------------------------------------------------------------------

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        """Put the cursor on line `row` (clamped to the rows) and scroll it into view."""
        row = max(0, min(row, len(self._order) - 1))
        if row != self.cursor_row:
            self._refresh_rows((self.cursor_row, row))
            self.cursor_row = row
        page = self._page()
        if row < self.scroll_y:
            self.scroll_to(y=row, animate=animate)
        elif row >= self.scroll_y + page:
            self.scroll_to(y=row - page + 1, animate=animate)

    def _keep_cursor(self, key: str | None) -> None:
        index = self._index.get(key) if key is not None else None
        if index is not None and index != self.cursor_row:
            self.move_cursor(row=index)

    def _page(self) -> int:
        """The rows a screenful shows."""
        return max(1, self.scrollable_content_region.height - _HEADER)

    def action_cursor_up(self) -> None:
        self.move_cursor(row=self.cursor_row - 1)

    def action_cursor_down(self) -> None:
        self.move_cursor(row=self.cursor_row + 1)

    def action_page_up(self) -> None:
        self.move_cursor(row=self.cursor_row - self._page())

    def action_page_down(self) -> None:
        self.move_cursor(row=self.cursor_row + self._page())

    def action_first_row(self) -> None:
        self.move_cursor(row=0)

    def action_last_row(self) -> None:
        self.move_cursor(row=len(self._order) - 1)

    def action_select_cursor(self) -> None:
        key = self.selected_key
        if key is not None:
            self.post_message(self.RowSelected(self, key))

    # -- the mouse -----------------------------------------------------------------------------

    def _row_at(self, event: events.MouseEvent) -> int | None:
        """The row under the mouse; -1 for the header, None past the rows."""
        offset = event.get_content_offset(self)
        if offset is None:
            return None
        if offset.y < _HEADER:
            return -1
        index = offset.y - _HEADER + int(self.scroll_y)
        return index if index < len(self._order) else None

    def on_click(self, event: events.Click) -> None:
        index = self._row_at(event)
        if index is None:
            return
        event.stop()
        if index == -1:
            offset = event.get_content_offset(self)
            assert offset is not None
            x = offset.x + int(self.scroll_x)
            slot = next(
                (s for s, edge in reversed(list(enumerate(self._edges))) if edge <= x), None
            )
            if slot is not None and x < self._total:
                self.post_message(self.HeaderSelected(self, self.spec[self._visible[slot]].key))
        elif index == self.cursor_row:
            self.action_select_cursor()
        else:
            self.move_cursor(row=index)

    def on_mouse_move(self, event: events.MouseMove) -> None:
        index = self._row_at(event)
        self._set_hover(index if index is not None and index >= 0 else None)

    def on_leave(self) -> None:
        self._set_hover(None)

    def _set_hover(self, index: int | None) -> None:
        if index != self._hover:
            self._refresh_rows(i for i in (self._hover, index) if i is not None)
            self._hover = index

    # -- drawing -------------------------------------------------------------------------------

    def _forget_drawn(self) -> None:
        self._strips.clear()
        self._looks.clear()
        self._toned.clear()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        if y < _HEADER:
            strip, fill = self._header_strip()
        else:
            index = y - _HEADER + scroll_y
            if index >= len(self._order):
                return Strip.blank(self.size.width, self.rich_style)
            strip, fill = self._row_strip(index)
        return strip.crop_extend(scroll_x, scroll_x + self.size.width, fill)

    def _header_strip(self) -> tuple[Strip, Style]:
        style = self.rich_style + self.get_component_rich_style("live-table--header")
        segments = [
            Segment(f" {self._fit(self.spec[i].label, self._widths.widths[i], False)} ", style)
            for i in self._visible
        ]
        return Strip(segments, self._total), style

    def _row_strip(self, index: int) -> tuple[Strip, Style]:
        key = self._order[index]
        look = (bool(index % 2), index == self.cursor_row, index == self._hover)
        drawn = self._strips.get(key)
        if drawn is not None and drawn[0] == look:
            return drawn[1], drawn[2]
        cells = self._shown[key]
        widths = self._widths.widths
        segments = []
        for i in self._visible:
            cell = cells[i]
            body = self._fit(cell.text, widths[i], self.spec[i].numeric)
            segments.append(Segment(f" {body} ", self._toned_style(look, cell.tone)))
        strip = Strip(segments, self._total)
        fill = self._look_styles(look)[0]
        if len(self._strips) >= _STRIPS_KEPT:
            self._strips.clear()
        self._strips[key] = (look, strip, fill)
        return strip, fill

    @staticmethod
    def _fit(text: str, width: int, right: bool) -> str:
        length = cell_len(text)
        if length > width:
            return set_cell_size(text, width)
        space = " " * (width - length)
        return space + text if right else text + space

    def _look_styles(self, look: _Look) -> tuple[Style, Style]:
        """A line's style, and what goes over a cell's tone (the cursor's and the hover's
        colours come from the CSS, not the cell)."""
        styles = self._looks.get(look)
        if styles is None:
            odd, cursor, hover = look
            stripe = "live-table--odd-row" if odd else "live-table--even-row"
            line = self.rich_style + self.get_component_rich_style(stripe)
            over = _NO_TONE
            if hover:
                hovered = self.get_component_rich_style("live-table--hover")
                line += hovered
                over = Style.from_color(bgcolor=hovered.bgcolor)
            if cursor:
                highlight = self.get_component_rich_style("live-table--cursor")
                line += highlight
                over = Style.from_color(highlight.color, highlight.bgcolor)
            styles = self._looks[look] = (line, over)
        return styles

    def _toned_style(self, look: _Look, tone: str) -> Style:
        style = self._toned.get((look, tone))
        if style is None:
            line, over = self._look_styles(look)
            style = self._toned[look, tone] = line + _TONE_STYLES.get(tone, _NO_TONE) + over
        return style
