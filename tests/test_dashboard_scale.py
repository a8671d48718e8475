"""The TUI benchmark's code path at a small size (so that `bench/tui.py` does not rot), and what
its speed rests on: rows built from their previous versions are the rows built afresh, the
rows changed out of view are built later and right, the table draws each row's cells where
its columns are, and rows put in and taken out many at a time land where one at a time would.
No timings here: the figures are `python -m bench.tui`'s.
"""

from __future__ import annotations

import random
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.style import Style
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.strip import Strip

from bench import tui
from hub._sessions import SessionFigures
from hub._totals import Totals
from hub.dashboard import (
    COLUMNS,
    Cell,
    Column,
    Dashboard,
    Row,
    Table,
    TableDiff,
    _class_cells,
    session_row,
)
from hub.tui.table import LiveTable
from shared.events import Agent
from shared.hello import ProcessInfo
from tests.synthetic_fleet import SyntheticFleet, build

MACHINES, PROFILES, SESSIONS = 20, 10, 25  # per machine, as the benchmark's fleet


@pytest.fixture
def fleet(tmp_path: Path) -> SyntheticFleet:
    return build(
        tmp_path,
        machines=MACHINES,
        profiles_per_machine=PROFILES,
        sessions_per_machine=SESSIONS,
        history_calls=2000,
    )


async def test_the_benchmark_runs_at_a_small_size(fleet: SyntheticFleet) -> None:
    app = tui.BenchApp(fleet.service)
    async with app.run_test(size=tui.SIZE) as pilot:
        first = await tui.first_frame(app, pilot)
        counts = {t: app.table(t).row_count for t in Table}
        want = {
            Table.MACHINES: MACHINES,
            Table.PROFILES: MACHINES * PROFILES,
            Table.SESSIONS: MACHINES * SESSIONS,
        }
        assert counts == want
        assert first.cells == sum(n * len(COLUMNS[t]) for t, n in want.items())

        quiet = await tui.one_tick(app, pilot, fleet, 0)
        assert quiet.cells < first.cells / 20
        busy = await tui.one_tick(app, pilot, fleet, 400)
        assert busy.calls == 400 and quiet.cells < busy.cells < first.cells / 5
        assert {t: app.table(t).row_count for t in Table} == want

        app.action_tab("sessions")
        app.table(Table.SESSIONS).sort_by(tui.SORTED_BY, reverse=True)
        sorted_tick = await tui.one_tick(app, pilot, fleet, 400)
        assert sorted_tick.total > 0 and app.table(Table.SESSIONS).row_count == want[Table.SESSIONS]
        values = _column_sorts(app.table(Table.SESSIONS), tui.SORTED_BY)
        in_view = values[: app.table(Table.SESSIONS).size.height - 1]
        assert in_view == sorted(in_view, reverse=True)


def _column_sorts(table: LiveTable, column: str) -> list[Any]:
    index = next(i for i, c in enumerate(table.spec) if c.key == column)
    return [table.rows_by_key[key].cells[index].sort for key in table.shown_keys]


# -- rows from their previous versions -----------------------------------------------------


def test_a_row_built_from_its_previous_one_is_the_row_built_afresh() -> None:
    rng = random.Random(5)
    now = 1_700_000_000.0
    old: Row | None = None
    for _ in range(300):
        fig = _figures(rng, now) if rng.random() < 0.9 else None
        proc = _process(rng) if rng.random() < 0.7 else None
        now += rng.choice((0.0, 1.0, 30.0, 700.0))
        fresh = session_row("s-1", fig, proc, now)
        again = session_row("s-1", fig, proc, now, old)
        assert again == fresh
        old = again
    totals: tuple[Cell, ...] = ()
    for _ in range(200):
        t = _totals(rng)
        built = _class_cells(t, totals or (None,) * 4)
        assert built == _class_cells(t)
        totals = built


def _figures(rng: random.Random, now: float) -> SessionFigures:
    fig = SessionFigures(
        "s-1",
        rng.choice(("spark001", "spark002")),
        Agent.CLAUDE_CODE,
        profile=rng.choice((None, "p01", "p02")),
        project=rng.choice((None, "/work/a", "/work/" + "b" * 40)),
        git_branch=rng.choice((None, "", "main")),
        model=rng.choice(("", "claude-sonnet-4-5")),
        first_ts=now - 900,
        last_ts=now - rng.choice((0.0, 5.0, 700.0)),
        main=_totals(rng),
        subagents=_totals(rng) if rng.random() < 0.5 else Totals(),
    )
    fig.recent = {int(now) - 30: rng.choice((0, 1000, 50_000))}
    return fig


def _totals(rng: random.Random) -> Totals:
    t = Totals(calls=rng.randint(0, 3))
    t.input = rng.choice((0, 100, 60_000))
    t.cache_read = rng.choice((0, 10, 90_000))
    t.cache_write_5m = rng.choice((0, 70_000))
    t.api_equivalent = Decimal(rng.choice(("0", "0.001", "1.25")))
    t.metered = Decimal(rng.choice(("0", "2.5")))
    t.unknown_calls = rng.choice((0, 0, 1))
    t.unknown_tokens = 100 * t.unknown_calls
    return t


def _process(rng: random.Random) -> tuple[str, ProcessInfo]:
    info = ProcessInfo(
        pid=rng.choice((100, 200)),
        create_time=1.0,
        agent=Agent.CLAUDE_CODE,
        state=rng.choice(("running", "paused", "zombie")),
        profile=rng.choice((None, "p01")),
        session_id="s-1",
        cwd=rng.choice((None, "/work/c")),
    )
    return rng.choice(("spark001", "spark003")), info


def test_rows_changed_out_of_view_come_right_in_the_end(fleet: SyntheticFleet) -> None:
    """A dashboard that took traffic tick by tick, building rows within its budget and from
    their previous versions, builds the same rows as a new one that builds all of them."""
    clock = [time.time()]
    lived = Dashboard(fleet.service, clock=lambda: clock[0])
    fleet.service.subscribe(lived.note)
    lived.tick()
    for _ in range(6):
        clock[0] += 1.0
        fleet.second_of_updates(600)
        lived.tick()
    clock[0] += 10.0  # past the sparklines' redraw interval too
    lived.tick()

    fresh = Dashboard(fleet.service, clock=lambda: clock[0])
    everything = fresh.tick()
    for table, diff in everything.tables.items():
        assert not diff.stale
        rows, gone = lived.rows(table, diff.upserts)
        assert not gone
        assert rows == diff.upserts, table


# -- the table's drawing ---------------------------------------------------------------------


SPEC = (
    Column("name", "name"),
    Column("cost", "cost", numeric=True),
    Column("state", "state"),
    Column("note", "note"),
)
TONES = ("", "good", "warn", "bad", "dim")


def _rows(n: int, seed: int = 1) -> dict[str, Row]:
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        cost = rng.choice((None, Decimal(rng.randint(0, 500)) / 100))
        out[f"k{i:03d}"] = Row(
            f"k{i:03d}",
            (
                Cell(f"name{i}", f"name{i}"),
                Cell("" if cost is None else f"${cost}", cost),
                Cell(rng.choice(("ok", "late", "")), i, rng.choice(TONES)),
                Cell("x" * rng.randint(0, 12), i),
            ),
            f"m{i % 3}",
        )
    return out


class Pair(App[None]):
    CSS = "LiveTable { height: 24; }"

    def __init__(self) -> None:
        super().__init__()
        self.selected: list[str] = []  # rows selected, and headers clicked ("header cost")

    def compose(self) -> ComposeResult:
        yield LiveTable(SPEC, id="fast")
        yield LiveTable(SPEC, id="other")

    def on_live_table_row_selected(self, event: LiveTable.RowSelected) -> None:
        self.selected.append(event.key)

    def on_live_table_header_selected(self, event: LiveTable.HeaderSelected) -> None:
        self.selected.append(f"header {event.column}")


async def _filled(app: Pair, pilot: Pilot[None], rows: dict[str, Row]) -> LiveTable:
    """The first table with these rows, drawn."""
    table = app.query_one("#fast", LiveTable)
    table.apply(TableDiff(rows))
    await pilot.pause()
    return table


def _text(strip: Strip) -> str:
    return "".join(segment.text for segment in strip)


def _style_at(strip: Strip, x: int) -> Style | None:
    for segment in strip:
        if x < len(segment.text):
            return segment.style
        x -= len(segment.text)
    raise IndexError(x)


async def test_the_table_draws_each_row_in_its_columns() -> None:
    """The header, then each row: left-aligned text, right-aligned numbers, a column as wide
    as its widest cell, the cell's tone, the cursor's row set apart, ← → a column at a time."""
    app = Pair()
    async with app.run_test(size=(30, 60)) as pilot:
        rows = _rows(30)
        table = await _filled(app, pilot, rows)
        assert table.hidden_columns  # too narrow for all of them
        table.set_show_all(True)
        table.move_cursor(row=2)
        table.focus()
        await pilot.pause()
        widths = {c.key: table.column_width(c.key) for c in SPEC}
        assert widths["note"] == max(12, *(len(r.cells[3].text) for r in rows.values()))
        header = _text(table.render_line(0))
        assert header.startswith(" name ") and len(header) == table.size.width
        for y, key in enumerate(table.shown_keys[:20], start=1):
            line = _text(table.render_line(y))
            cells = rows[key].cells
            x = table.column_x("cost")
            assert line[x + 1 : x + 1 + widths["cost"]] == cells[1].text.rjust(widths["cost"])
            x = table.column_x("state")
            assert line[x + 1 : x + 1 + widths["state"]] == cells[2].text.ljust(widths["state"])
            style = _style_at(table.render_line(y), x + 1)
            assert style is not None
            if cells[2].tone == "bad" and y != 3:
                assert style.bold and style.color is not None and style.color.name == "red"
        cursor = _style_at(table.render_line(3), 0)
        others = {_style_at(table.render_line(y), 0) for y in (4, 5)}
        assert cursor is not None and cursor not in others  # the cursor's row stands out
        assert len({s.bgcolor for s in others if s is not None}) == 2  # stripes

        app.query_one("#other", LiveTable).focus()  # unfocused: the cursor still shows
        await pilot.pause()
        assert _style_at(table.render_line(3), 0) not in {cursor, *others}
        table.focus()
        await pilot.press("right")
        assert table.scroll_x == min(table.column_x("cost"), table.max_scroll_x)
        await pilot.pause()
        assert _text(table.render_line(0)).startswith(" cost ")
        await pilot.press("left")
        assert table.scroll_x == 0


async def test_keys_and_clicks_move_the_cursor_and_select() -> None:
    """↓ PgDn End Home move the cursor and keep it in view; enter selects; a click moves the
    cursor, a click on the cursor's row selects it, a click on a header asks for a sort."""
    app = Pair()
    async with app.run_test(size=(90, 60)) as pilot:
        table = await _filled(app, pilot, _rows(100))
        table.focus()
        await pilot.pause()
        page = table.scrollable_content_region.height - 1  # the rows under the header
        await pilot.press("down", "down")
        assert table.cursor_row == 2 and table.scroll_y == 0
        await pilot.press("pagedown")
        assert table.cursor_row == 2 + page
        assert table.scroll_y <= table.cursor_row < table.scroll_y + page  # in view
        await pilot.press("end")
        assert table.cursor_row == 99 and table.scroll_y == table.max_scroll_y > 0
        await pilot.press("home")
        assert table.cursor_row == 0 and table.scroll_y == 0
        await pilot.press("enter")
        await pilot.pause()
        assert app.selected == [table.shown_keys[0]]

        app.selected.clear()
        assert await pilot.click("#fast", offset=(2, 1 + 4))  # the fifth row
        await pilot.pause()
        assert table.cursor_row == 4 and app.selected == []
        assert await pilot.click("#fast", offset=(2, 1 + 4))
        await pilot.pause()
        assert app.selected == [table.shown_keys[4]]
        assert await pilot.click("#fast", offset=(table.column_x("cost") + 1, 0))
        await pilot.pause()
        assert app.selected[1:] == ["header cost"] and table.cursor_row == 4


# -- many rows at a time, and the sort ------------------------------------------------------


def _shown(table: LiveTable) -> list[str]:
    return table.shown_keys


async def test_rows_in_and_out_by_the_many_land_as_one_at_a_time() -> None:
    app = Pair()
    async with app.run_test(size=(90, 60)) as pilot:
        fast = app.query_one("#fast", LiveTable)
        rows = _rows(80)
        fast.apply(TableDiff(dict(list(rows.items())[:5])))  # one at a time
        fast.apply(TableDiff(dict(list(rows.items())[5:])))  # the rest at once
        await pilot.pause()
        assert _shown(fast) == list(rows)
        fast.move_cursor(row=10)
        selected = fast.selected_key

        fast.set_scope(lambda r: r.machine == "m1")  # 53 rows out at once
        await pilot.pause()
        assert _shown(fast) == [k for k, r in rows.items() if r.machine == "m1"]
        assert fast.row_count == fast.virtual_size.height - 1
        assert selected is not None and rows[selected].machine == "m1"
        assert fast.selected_key == selected  # the cursor stayed on its row

        fast.set_scope(None)  # and back in
        await pilot.pause()
        assert sorted(_shown(fast)) == sorted(rows)
        assert fast.row_count == fast.virtual_size.height - 1
        assert fast.selected_key == selected
        for key in rows:
            assert [fast.get_cell(key, c.key).text for c in SPEC] == [
                c.text for c in rows[key].cells
            ]

        fast.apply(TableDiff(removed=set(list(rows)[::2])))  # 40 out at once
        await pilot.pause()
        assert sorted(_shown(fast)) == sorted(list(rows)[1::2])
        assert fast.row_count == 40 == fast.virtual_size.height - 1


async def test_the_sort_follows_changed_figures() -> None:
    app = Pair()
    async with app.run_test(size=(90, 60)) as pilot:
        fast = app.query_one("#fast", LiveTable)
        rows = _rows(50)
        fast.apply(TableDiff(rows))
        fast.sort_by("cost")  # numeric: largest first
        rng = random.Random(9)
        for _ in range(20):
            changed = {}
            for key in rng.sample(list(rows), 8):
                row = rows[key]
                cost = rng.choice((None, Decimal(rng.randint(0, 500)) / 100))
                cells = (
                    row.cells[0],
                    Cell("" if cost is None else f"${cost}", cost),
                    *row.cells[2:],
                )
                changed[key] = rows[key] = replace(row, cells=cells)
            fast.apply(TableDiff(changed))
            fast.settle()
            values = _column_sorts(fast, "cost")
            present = [v for v in values if v is not None]
            assert present == sorted(present, reverse=True)
            assert values[len(present) :] == [None] * (len(values) - len(present))
            incremental = _shown(fast)
            fast._resort()  # everything ranked again: the same order, ties and all
            assert _shown(fast) == incremental
        await pilot.pause()


# -- redrawing only what changed ------------------------------------------------------------


async def test_only_changed_lines_are_redrawn_and_the_screen_is_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A changed cell redraws its line, a sort the lines that show another row; what is on
    the screen then is what drawing every line again makes."""
    app = Pair()
    async with app.run_test(size=(90, 60)) as pilot:
        rows = _rows(60)
        fast = await _filled(app, pilot, rows)
        drawn: list[int] = []
        render_line = fast.render_line

        def counted(y: int) -> Strip:
            drawn.append(y)
            return render_line(y)

        monkeypatch.setattr(fast, "render_line", counted)

        async def screen_is_right() -> None:
            await pilot.pause()
            shown = app.export_screenshot()
            fast.refresh()  # every line drawn again
            await pilot.pause()
            assert app.export_screenshot() == shown

        def with_cost(key: str, cost: Decimal | None) -> Row:
            row = rows[key]
            cell = Cell("" if cost is None else f"${cost}", cost)
            rows[key] = replace(row, cells=(row.cells[0], cell, *row.cells[2:]))
            return rows[key]

        # one cell in view: its line alone
        key = _shown(fast)[3]
        fast.apply(TableDiff({key: with_cost(key, Decimal("0.01"))}))
        await pilot.pause()
        assert drawn == [1 + 3]  # below the header
        await screen_is_right()

        rng = random.Random(4)
        for column in (None, "cost", "note"):
            if column is not None:
                fast.sort_by(column)
                await screen_is_right()
            for _ in range(6):
                keys = rng.sample(list(rows), 12)  # in view and out of it
                costs = [rng.choice((None, Decimal(rng.randint(0, 500)) / 100)) for _ in keys]
                drawn.clear()
                fast.apply(
                    TableDiff({k: with_cost(k, c) for k, c in zip(keys, costs, strict=True)})
                )
                fast.settle()
                await pilot.pause()
                if column != "cost":  # no row moved: the changed lines in view alone
                    assert len(drawn) <= len(keys) < fast.size.height
                await screen_is_right()
            fast.scroll_to(y=30, animate=False)  # rows changed out of view come into it
            await screen_is_right()
            fast.scroll_to(y=0, animate=False)
            await screen_is_right()
