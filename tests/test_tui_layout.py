"""The dashboard's layout at 80×24 and 160×45 under Pilot: a header that abbreviates but keeps
every figure, columns by priority with every column reachable (c, then ← →), a footer that
keeps the halt keys, pop-ups inside the screen, and a column that narrows again after a halt
outcome. The real terminal at 80×24 is in `test_tui_tmux.py`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import Static
from textual.widgets._footer import FooterKey

import hub.dashboard
from hub.dashboard import COLUMNS, SPEND_COLUMNS, Column, Table
from hub.tui.app import FleetApp
from hub.tui.screens import ConfirmScreen, HelpScreen
from hub.tui.table import LiveTable
from tests.pilot_waits import asking, until
from tests.synthetic_fleet import SyntheticFleet, build
from tests.test_tui import fleet_app, started, static_text

SMALL = (80, 24)
LARGE = (160, 45)


@pytest.fixture
def fleet(tmp_path: Path) -> SyntheticFleet:
    return build(tmp_path, machines=3, profiles_per_machine=3, sessions_per_machine=4)


def shown_columns(table: LiveTable) -> list[str]:
    return table.shown_columns


def fits(table: LiveTable) -> bool:
    """No column runs past the table's right edge."""
    return table.virtual_size.width <= table.scrollable_content_region.width


def inside(region: Region, size: tuple[int, int]) -> bool:
    return region.x >= 0 and region.y >= 0 and region.right <= size[0] and region.bottom <= size[1]


async def on_tab(pilot: Pilot[Any], app: FleetApp, key: str, tab: str) -> LiveTable:
    await pilot.press(key)
    table = app.table(tab)
    await until(pilot, lambda: table.row_count > 0 and fits(table), f"the {tab} tab to fit")
    return table


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x45"])
async def test_the_header_abbreviates_and_keeps_every_figure(
    fleet: SyntheticFleet, size: tuple[int, int]
) -> None:
    fleet.second_of_updates(30)
    async with fleet_app(fleet).run_test(size=size) as pilot:
        app = await started(pilot)
        widget = app.query_one("#figures", Static)
        await until(pilot, lambda: app.header_figures is not None, "the header")
        line = static_text(widget)
        assert 0 < len(line) <= widget.content_size.width, line
        assert line == app.header_figures.line(widget.content_size.width)  # type: ignore[union-attr]
        # metered, subscription, estimated, unknown, burn, day, month, nodes: all there
        assert re.search(r"met\S* \$[\d.,]+k? .*sub\S* \$.* est\S* \$.* unk", line), line
        assert re.search(r"\$[\d.,]+k?/h", line) and "→" in line, line
        assert line.rstrip().endswith(("3/3", "3/3 nodes")), line


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x45"])
async def test_columns_by_priority_and_every_column_reachable(
    fleet: SyntheticFleet, size: tuple[int, int]
) -> None:
    async with fleet_app(fleet).run_test(size=size) as pilot:
        app = await started(pilot)
        scope = app.query_one("#scope", Static)
        tabs: list[tuple[str, str, tuple[Column, ...]]] = [
            ("1", "machines", COLUMNS[Table.MACHINES]),
            ("2", "profiles", COLUMNS[Table.PROFILES]),
            ("3", "sessions", COLUMNS[Table.SESSIONS]),
            ("4", "spend", SPEND_COLUMNS),
        ]
        for key, tab, spec in tabs:
            table = await on_tab(pilot, app, key, tab)
            shown = shown_columns(table)
            # The most important columns are there, in their order, and nothing runs off.
            assert [c.key for c in spec if c.priority <= 1] == [
                k for k in shown if k in {c.key for c in spec if c.priority <= 1}
            ], (tab, shown)
            assert shown == [c.key for c in spec if c.key in shown]
            left_out = [c for c in spec if c.key not in shown]
            if left_out:
                assert f"{len(left_out)} more columns (c)" in static_text(scope)
        if size == LARGE:
            assert {"pid", "last", "process"} <= set(shown_columns(app.table("sessions")))
        else:
            narrow = set(shown_columns(app.table("sessions")))
            assert {"session", "machine", "main", "tpm", "cache", "process"} <= narrow

        # c: every column, the table scrolls sideways to the last one; c again fits them.
        await pilot.press("3", "c")
        sessions = app.table("sessions")
        await until(pilot, lambda: len(shown_columns(sessions)) == 13, "every column")
        assert "all columns" in static_text(scope)
        if not fits(sessions):
            await pilot.press(*["right"] * 13)  # a column at a time
            await until(
                pilot, lambda: sessions.scroll_x == sessions.max_scroll_x > 0, "the far right"
            )
        await pilot.press("c")
        await until(pilot, lambda: fits(sessions), "the columns to fit again")


async def test_the_footer_keeps_the_halt_keys_and_popups_fit_at_80x24(
    fleet: SyntheticFleet,
) -> None:
    async with fleet_app(fleet).run_test(size=SMALL) as pilot:
        app = await started(pilot)
        await pilot.pause()
        keys = {k.key: k for k in app.query(FooterKey)}
        for key in ("p", "r", "k", "P", "R", "question_mark", "q"):
            assert key in keys, f"{key} not in the footer"
        for key, shown in keys.items():  # and none cut at the right edge
            assert shown.region.width > 0 and inside(shown.region, SMALL), (key, shown.region)

        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
        await pilot.pause()
        dialog = app.screen.query_one("#dialog")
        assert inside(dialog.region, SMALL), dialog.region
        text = app.screen.query_one("#help-text", Static)
        assert text.region.width <= dialog.region.width
        await pilot.press("escape")

        await pilot.press("3", "k")
        screen = await asking(pilot)
        assert isinstance(screen, ConfirmScreen)
        assert inside(screen.query_one("#dialog").region, SMALL)
        for button in ("#yes", "#no"):
            assert inside(screen.query_one(button).region, SMALL), button
        await pilot.press("escape")


async def test_a_halt_outcome_widens_the_process_column_only_while_it_shows(
    fleet: SyntheticFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub.dashboard, "OUTCOME_SHOWN_S", 1.0)
    async with fleet_app(fleet).run_test(size=LARGE) as pilot:
        app = await started(pilot)
        sessions = await on_tab(pilot, app, "3", "sessions")
        before = shown_columns(sessions)
        assert {"process", "pid"} <= set(before)

        def process_width() -> int:
            return sessions.column_width("process")

        width = process_width()
        key = sessions.selected_key
        assert key is not None
        long = "refused: no command endpoint on this hub (no answer)"
        app.dashboard.note_outcome(key, long, "bad")
        await until(pilot, lambda: sessions.get_cell(key, "process").text == long, "the outcome")
        await until(pilot, lambda: fits(sessions), "the columns to fit around it")
        await until(pilot, lambda: sessions.get_cell(key, "process").text == "running", "it to go")
        await until(pilot, lambda: process_width() == width, "the process column to narrow")
        await until(pilot, lambda: shown_columns(sessions) == before, "the columns as before")
