"""The hub's TUI under Textual's Pilot, on a real `FleetService` (SQLite on disk, the ledger,
the profile board) fed by a made-up fleet while the app runs: every tab and key, rows that
appear and change in place, the header against the ledger, and the halt keys' dialogs.

Halting real processes is in `test_tui_halt.py`.
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Input, Label, OptionList, RichLog, Static

from hub import _format as fmt
from hub._totals import Basis, Totals
from hub.dashboard import (
    COLUMNS,
    GROUPINGS,
    SPEND_COLUMNS,
    Column,
    HeaderFigures,
    Table,
    column_index,
)
from hub.ledger import Dimension, Period, profile_key
from hub.tui.app import FleetApp
from hub.tui.screens import ConfirmScreen, DetailScreen, HelpScreen, SortScreen
from hub.tui.table import LiveTable
from shared.events import Role, Tokens, UsageEvent
from tests.pilot_waits import asking, until
from tests.synthetic_fleet import SyntheticFleet, build

SIZE = (200, 50)
FAKE_MODEL = "made-up-model-9000"


@pytest.fixture
def fleet(tmp_path: Path) -> SyntheticFleet:
    return build(tmp_path, machines=3, profiles_per_machine=3, sessions_per_machine=4)


# -- helpers -----------------------------------------------------------------------------------


def fleet_app(fleet: SyntheticFleet, **kwargs: Any) -> FleetApp:
    app = FleetApp(fleet.service, **kwargs)
    app.animation_level = "none"  # no tab underline sliding: the Pilot waits for animations
    return app


async def started(pilot: Pilot[Any]) -> FleetApp:
    app = pilot.app
    assert isinstance(app, FleetApp)
    await until(pilot, lambda: app.table("sessions").row_count > 0, "the first rows")
    return app


def active_screen(app: FleetApp) -> Screen[Any]:
    """The active screen (a call, so that a type checker does not pin it down)."""
    return app.screen


def focused(app: FleetApp) -> Widget | None:
    return app.focused


def keys_shown(table: LiveTable) -> list[str]:
    """The visible rows' keys, top to bottom."""
    return table.shown_keys


def row_count_is(table: LiveTable, n: int) -> Callable[[], bool]:
    return lambda: table.row_count == n


def top_rows_are(table: LiveTable, keys: list[str]) -> Callable[[], bool]:
    return lambda: keys_shown(table)[: len(keys)] == keys


def cell(table: LiveTable, key: str, column: str) -> str:
    return table.get_cell(key, column).text


def money_cells(table: LiveTable, key: str) -> tuple[str, ...]:
    return tuple(cell(table, key, c) for c in ("metered", "subscription", "estimated"))


def feed_text(app: FleetApp) -> str:
    feed = app.query_one("#feed", RichLog)
    return "\n".join("".join(seg.text for seg in line) for line in feed.lines)


def static_text(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


def screen_text(where: FleetApp | Screen[Any]) -> str:
    """Every Label and Static on the active screen."""
    screen = where.screen if isinstance(where, FleetApp) else where
    return "\n".join(static_text(w) for w in screen.query(Static))


def call(
    fleet: SyntheticFleet,
    machine: str,
    session: str,
    *,
    profile: int = 0,
    model: str | None = None,
    tokens: Tokens | None = None,
) -> UsageEvent:
    p = fleet.profiles[machine][profile]
    event = fleet.usage(machine, session, p, time.time())
    return UsageEvent(
        event_id=event.event_id,
        ts=event.ts,
        agent=p.agent,
        model=model or event.model,
        tokens=tokens or Tokens(input=20_000, output=5_000),
        session_id=session,
        role=Role.MAIN,
        project=f"/work/{machine}/newproj",
        git_branch="main",
        machine=machine,
        profile=p.name,
    )


def column_index_of(columns: tuple[Column, ...], key: str) -> int:
    return next(i for i, c in enumerate(columns) if c.key == key)


def column_values(table: LiveTable, column: str) -> list[Any]:
    """The sort values of `column`, in the order shown."""
    index = next(i for i, c in enumerate(table.spec) if c.key == column)
    return [table.rows_by_key[k].cells[index].sort for k in keys_shown(table)]


# -- live rows ---------------------------------------------------------------------------------


async def test_rows_appear_as_events_arrive(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        machines, sessions = app.table("machines"), app.table("sessions")
        assert keys_shown(machines) == fleet.machines
        assert set(keys_shown(sessions)) == {
            s for m in fleet.machines for s, _ in fleet.sessions[m]
        }

        # A new session starts on a known machine.
        before = money_cells(machines, "spark001")
        fleet.send("spark001", [call(fleet, "spark001", "fresh-session-1")])
        await until(pilot, lambda: "fresh-session-1" in sessions.rows_by_key, "the new session")
        assert "fresh-session-1" in keys_shown(sessions)
        assert cell(sessions, "fresh-session-1", "machine") == "spark001"
        await until(
            pilot,
            lambda: money_cells(machines, "spark001") != before,
            "spark001's spend to move",
        )
        label = app.service.session_label("fresh-session-1")
        await until(pilot, lambda: f"session {label} " in feed_text(app), "feed")
        await pilot.press("3")
        scope = app.query_one("#scope", Static)
        assert static_text(scope).endswith("13 rows")
        fleet.send("spark002", [call(fleet, "spark002", "fresh-session-2")])
        await until(pilot, lambda: static_text(scope).endswith("14 rows"), "the row count")

        # A machine that was never seen before reports.
        fleet.machines.append("spark009")
        fleet.profiles["spark009"] = fleet.profiles["spark001"]
        fleet.sessions["spark009"] = [("s9-a", fleet.profiles["spark001"][0])]
        fleet.send("spark009", [call(fleet, "spark009", "s9-a")])
        await until(pilot, lambda: "spark009" in keys_shown(machines), "the new machine's row")
        assert cell(machines, "spark009", "state") == "online"
        await until(pilot, lambda: "s9-a" in keys_shown(sessions), "its session")
        await until(pilot, lambda: "spark009 is online" in feed_text(app), "the node in the feed")
        await until(
            pilot,
            lambda: app.header_figures is not None and app.header_figures.nodes == 4,
            "the header to count 4 nodes",
        )
        await until(
            pilot, lambda: "nodes 4/4" in static_text(app.query_one("#figures", Static)), ""
        )


async def test_rows_update_in_place(fleet: SyntheticFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("3")
        table = app.table("sessions")
        machines = app.table("machines")
        session = fleet.sessions["spark002"][1][0]
        index = table.get_row_index(session)
        order = keys_shown(table)
        main_before = cell(table, session, "main")

        added: list[str] = []
        needless: list[tuple[str, str, str]] = []
        written: list[tuple[str, str]] = []
        for t in (table, machines):
            original_add = t._add_rows

            def add_rows(rows: Any, _add: Any = original_add) -> Any:
                added.extend(row.key for row in rows)
                return _add(rows)

            monkeypatch.setattr(t, "_add_rows", add_rows)
            original_write = t.write_cell

            def write_cell(
                row: str, index: int, value: Any, _t: LiveTable = t, _w: Any = original_write
            ) -> None:
                column = _t.spec[index].key
                old = _t.get_cell(row, column)
                written.append((row, column))
                if old == value:  # the same text, sort value and tone
                    needless.append((row, column, value.text))
                _w(row, index, value)

            monkeypatch.setattr(t, "write_cell", write_cell)

        big = Tokens(input=50_000, output=20_000)
        fleet.send("spark002", [call(fleet, "spark002", session, profile=1, tokens=big)])
        await until(pilot, lambda: cell(table, session, "main") != main_before, "main $ to change")
        await pilot.pause(0.3)
        # The same row, in the same place: its cells were written, not the row put in again.
        assert table.get_row_index(session) == index
        assert keys_shown(table) == order
        assert added == []
        assert needless == []  # only the cells whose content changed were written
        mine = {column for row, column in written if row == session}
        assert {"main", "tpm", "last"} <= mine < {c.key for c in COLUMNS[Table.SESSIONS]}
        assert {"session", "machine", "profile", "pid"}.isdisjoint(mine)


@dataclass(frozen=True)
class LedgerNow:
    header: HeaderFigures
    today: Totals
    month: Totals
    paid: tuple[Decimal, Decimal]  # $/h over the short and the long window
    api: tuple[Decimal, Decimal]
    at: datetime


def header_of(app: FleetApp) -> HeaderFigures:
    assert app.header_figures is not None
    return app.header_figures


async def header_and_ledger(pilot: Pilot[Any], app: FleetApp) -> LedgerNow:
    """A header computed after the last change, and the ledger's figures read right after it
    (again if a minute boundary slid the burn-rate window in between)."""
    service = app.service
    got: LedgerNow | None = None
    for _attempt in range(3):
        minute = int(time.time() // 60)
        app.header_figures = None
        await until(pilot, lambda: app.header_figures is not None, "a fresh header", within=10)
        header = header_of(app)
        got = LedgerNow(
            header,
            service.fleet(Period.TODAY),
            service.fleet(Period.MONTH),
            (
                service.burn_rate_per_hour(minutes=5, basis=Basis.METERED),
                service.burn_rate_per_hour(minutes=60, basis=Basis.METERED),
            ),
            (service.burn_rate_per_hour(minutes=5), service.burn_rate_per_hour(minutes=60)),
            datetime.now(service.ledger.tz),
        )
        if int(time.time() // 60) == minute:
            break
    assert got is not None
    return got


async def test_header_figures_equal_the_ledger(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        # Some known-price calls and one call of a model no price table knows.
        fleet.second_of_updates(30)
        unknown = Tokens(input=1234, output=566)
        fleet.send("spark003", [call(fleet, "spark003", "odd-1", model=FAKE_MODEL, tokens=unknown)])
        now = await header_and_ledger(pilot, app)
        header, today, month, paid = now.header, now.today, now.month, now.paid
        assert header.metered == today.metered > 0
        assert header.subscription_included == today.subscription_included > 0
        assert header.estimated == today.estimated > 0
        assert header.api_equivalent == today.api_equivalent
        assert (header.unknown_calls, header.unknown_tokens) == (1, 1800)
        assert (header.unknown_calls, header.unknown_tokens) == (
            today.unknown_calls,
            today.unknown_tokens,
        )
        assert (header.burn_paid_short, header.burn_paid_long) == paid
        assert (header.burn_api_short, header.burn_api_long) == now.api
        assert paid[0] > 0 and paid[1] > 0 and now.api[0] > paid[0]
        # Projections (paid = metered + estimated): today so far plus the paid burn of the last
        # hour until midnight; the month so far plus that, plus the average day the figures
        # cover for each day left; none before they cover 15 minutes of today.
        first = app.service.first_call()
        assert first is not None
        midnight = datetime.combine(now.at.date(), datetime.min.time(), now.at.tzinfo)
        if now.at.timestamp() - max(first, midnight.timestamp()) < 15 * 60:
            assert header.projected_day is header.projected_month is None
        else:
            assert header.projected_day is not None and header.projected_month is not None
            rest = paid[1] * Decimal((midnight + timedelta(days=1) - now.at).total_seconds()) / 3600
            slack = paid[1] / 60  # the header was computed up to a minute before `now.at`
            day = today.metered + today.estimated + rest
            assert abs(header.projected_day - day) <= slack
            days_in_month = calendar.monthrange(now.at.year, now.at.month)[1]
            so_far = month.metered + month.estimated + rest
            first_day = datetime.fromtimestamp(first, now.at.tzinfo).date()
            covered = (now.at.date() - max(first_day, now.at.date().replace(day=1))).days + 1
            whole = so_far + so_far / covered * (days_in_month - now.at.day)
            assert abs(header.projected_month - whole) <= slack * days_in_month
        assert (header.online, header.nodes) == (3, 3)

        figures = app.query_one("#figures", Static)
        line = static_text(figures)
        assert line == header.line(figures.content_region.width)
        assert f"metered {fmt.money(today.metered)}" in line
        assert f"subscr. {fmt.money(today.subscription_included)}" in line
        assert "unknown 1 calls" in line
        assert f"burn {fmt.money(paid[0])}/h paid (5 min), {fmt.money(paid[1])}/h (1 h)" in line
        if header.projected_day is not None:
            assert f"→ day {fmt.money(header.projected_day)}" in line
        assert line.endswith("nodes 3/3")


async def test_an_unknown_model_shows_calls_and_tokens_never_dollars(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        tokens = Tokens(input=2000, output=500)
        # Profile p00 is an API profile: an unknown model there is not a free call.
        fleet.send("spark002", [call(fleet, "spark002", "odd-2", model=FAKE_MODEL, tokens=tokens)])
        machines, profiles = app.table("machines"), app.table("profiles")
        await until(pilot, lambda: cell(machines, "spark002", "unknown") != "", "machine unknown")
        assert cell(machines, "spark002", "unknown") == "1 / 2.5k"
        key = profile_key("spark002", "p00")
        await until(pilot, lambda: cell(profiles, key, "unknown") == "1 / 2.5k", "profile unknown")
        line = static_text(app.query_one("#figures", Static))
        (part,) = [p for p in re.split(r" · | +│ +", line) if p.startswith("unknown")]
        assert part == "unknown 1 calls / 2.5k tok"

        # Spend by model: the made-up model's row counts the call, in no dollar column.
        while app.grouping is not Dimension.MODEL:
            await pilot.press("g")
        spend = app.table("spend")
        await until(pilot, lambda: FAKE_MODEL in spend.rows_by_key, "the model's spend row")
        row = spend.rows_by_key[FAKE_MODEL]
        by_key = {c.key: row.cells[i].text for i, c in enumerate(SPEND_COLUMNS)}
        assert by_key["calls"] == "1" and by_key["unknown"] == "1 / 2.5k"
        assert by_key["metered"] == by_key["subscription"] == by_key["estimated"] == ""


# -- keys ---------------------------------------------------------------------------------------


async def test_number_keys_switch_tabs(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        for key, tab in (("2", "profiles"), ("3", "sessions"), ("4", "spend"), ("1", "machines")):
            await pilot.press(key)
            await pilot.pause()
            assert app.current_tab == tab
            assert focused(app) is app.table(tab)
        assert app.table("profiles").row_count == 9
        assert app.table("sessions").row_count == 12
        await until(pilot, lambda: app.table("spend").row_count > 0, "the spend rows")
        totals = fleet.service.totals(Dimension.ACCOUNT, Period.TODAY)
        assert set(app.table("spend").rows_by_key) == {k or "(none)" for k in totals}


async def test_filter_narrows_its_own_tab_and_empty_clears(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("3")
        sessions = app.table("sessions")
        everything = set(keys_shown(sessions))
        await pilot.press("slash")
        filt = app.query_one("#filter", Input)
        assert filt.has_class("shown") and focused(app) is filt
        # Letters that are also keys of the app ("s", "p", "k") go into the input.
        await pilot.press(*"spark002")
        assert filt.value == "spark002"
        assert app.current_tab == "sessions"
        assert app.service.audit_log() == []
        await pilot.press("enter")
        await pilot.pause()
        assert not filt.has_class("shown") and focused(app) is sessions
        shown = set(keys_shown(sessions))
        assert shown == {s for s, _ in fleet.sessions["spark002"]}
        assert shown < everything
        assert "filter “spark002”" in static_text(app.query_one("#scope", Static))

        # The filter is the Sessions tab's: the other tabs show every row, and say no filter.
        assert len(keys_shown(app.table("machines"))) == 3
        await pilot.press("4")
        await until(pilot, lambda: app.table("spend").row_count > 0, "the spend rows")
        totals = fleet.service.totals(Dimension.ACCOUNT, Period.TODAY)
        assert set(keys_shown(app.table("spend"))) == {k or "(none)" for k in totals}
        assert "filter" not in static_text(app.query_one("#scope", Static))
        await pilot.press("3")
        assert "filter “spark002”" in static_text(app.query_one("#scope", Static))

        # A row arriving while filtered out stays out, and one that matches comes in.
        fleet.send("spark001", [call(fleet, "spark001", "late-1")])
        fleet.send("spark002", [call(fleet, "spark002", "late-2")])
        await until(pilot, lambda: "late-2" in keys_shown(sessions), "a matching row")
        assert "late-1" in sessions.rows_by_key and "late-1" not in keys_shown(sessions)

        # Escape while editing leaves the filter (and a drill-down) as they were.
        await pilot.press("1", "down", "enter")
        assert app.scope_text == "machine spark002"
        await pilot.press("slash")
        assert filt.value == ""  # the Profiles tab has no filter
        await pilot.press("x", "y", "escape")
        assert not filt.has_class("shown") and focused(app) is app.table("profiles")
        assert app.scope_text == "machine spark002"
        assert app.table("profiles").filter_text == ""
        await pilot.press("escape", "3")
        assert app.scope_text == ""
        assert sessions.filter_text == "spark002"

        # Empty clears it.
        await pilot.press("slash")
        assert filt.value == "spark002"
        filt.value = ""
        await pilot.press("enter")
        await pilot.pause()
        assert set(keys_shown(sessions)) == everything | {"late-1", "late-2"}
        assert "filter" not in static_text(app.query_one("#scope", Static))


async def test_sort_chooser_orders_by_a_column_and_again_flips(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("3")
        sessions = app.table("sessions")
        index = column_index(Table.SESSIONS, "main")
        await pilot.press("s")
        assert isinstance(active_screen(app), SortScreen)
        options = app.screen.query_one(OptionList)
        assert options.option_count == len(COLUMNS[Table.SESSIONS])
        await pilot.press(*["down"] * index, "enter")
        await pilot.pause()
        assert not isinstance(active_screen(app), SortScreen)
        assert (sessions.sort_column, sessions.sort_reverse) == ("main", True)
        values = column_values(sessions, "main")
        assert values == sorted(values, reverse=True) and values[0] > values[-1]
        assert "sort main $ ↓" in static_text(app.query_one("#scope", Static))

        # The chooser opens on the current column, marked; choosing it again flips the order.
        await pilot.press("s")
        options = app.screen.query_one(OptionList)
        assert options.highlighted == index
        labels = [str(options.get_option_at_index(i).prompt) for i in range(index + 1)]
        assert "current" in labels[index] and "current" not in labels[0]
        await pilot.press("enter")
        await pilot.pause()
        assert (sessions.sort_column, sessions.sort_reverse) == ("main", False)
        assert column_values(sessions, "main") == sorted(values)

        # A row whose sorted-by figure changes moves to its place.
        top = keys_shown(sessions)[-1]  # the largest
        bottom = keys_shown(sessions)[0]
        big = Tokens(input=900_000, output=200_000)
        fleet.send(bottom.split("-s")[0], [call(fleet, bottom.split("-s")[0], bottom, tokens=big)])
        await until(pilot, lambda: keys_shown(sessions)[-1] == bottom, "the row to move")
        assert keys_shown(sessions)[-2] == top

        # Escape leaves the sort as it was.
        await pilot.press("s", "escape")
        await pilot.pause()
        assert (sessions.sort_column, sessions.sort_reverse) == ("main", False)


async def test_a_sorted_table_follows_calls_that_change_ranks(fleet: SyntheticFleet) -> None:
    """Sorted by tok/min, the rows stand in the order of the ledger's figures as calls move
    sessions up and past each other (not only in the order of the figures the rows show)."""
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("3")
        sessions = app.table("sessions")
        sessions.sort_by("tpm", reverse=True)
        picks = [fleet.sessions[m][i][0] for m, i in (("spark001", 3), ("spark002", 2))]
        picks.append(fleet.sessions["spark003"][1][0])

        def in_ledger_order() -> bool:
            now = time.time()
            tpm = {f.key: f.tokens_per_minute(now) for f in app.service.sessions()}
            shown = [tpm.get(k, 0.0) for k in keys_shown(sessions)]
            return shown == sorted(shown, reverse=True)

        # tokens sent to each pick, step by step: 3rd, 2nd, 1st; then the order reversed
        for sizes, top in (((1, 2, 3), picks[::-1]), ((9, 4, 2), picks)):
            for session, size in zip(picks, sizes, strict=True):
                machine = session.split("-s")[0]
                tokens = Tokens(input=size * 100_000, output=0)
                fleet.send(machine, [call(fleet, machine, session, tokens=tokens)])
            await until(pilot, top_rows_are(sessions, top), "the new ranks")
            assert in_ledger_order()


async def test_clicking_a_header_sorts(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        machines = app.table("machines")
        await pilot.pause()
        x = machines.column_x("metered")
        assert await pilot.click("#table-machines", offset=(x + 2, 0))
        await pilot.pause()
        assert (machines.sort_column, machines.sort_reverse) == ("metered", True)
        values = column_values(machines, "metered")
        assert values == sorted(values, reverse=True)
        assert await pilot.click("#table-machines", offset=(x + 2, 0))
        await pilot.pause()
        assert (machines.sort_column, machines.sort_reverse) == ("metered", False)
        assert column_values(machines, "metered") == sorted(values)
        assert app.scope_text == ""  # a header click is not a drill-down


async def test_enter_drills_down_and_escape_backs_out(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        machines, profiles = app.table("machines"), app.table("profiles")
        sessions = app.table("sessions")
        await pilot.press("down", "enter")  # the second machine
        await pilot.pause()
        assert app.current_tab == "profiles"
        assert app.scope_text == "machine spark002"
        assert "machine spark002" in static_text(app.query_one("#scope", Static))
        assert {profiles.rows_by_key[k].machine for k in keys_shown(profiles)} == {"spark002"}
        assert profiles.row_count == 3
        assert set(keys_shown(sessions)) == {s for s, _ in fleet.sessions["spark002"]}
        assert machines.row_count == 3  # the machines table is never scoped

        await pilot.press("escape")
        await pilot.pause()
        assert app.scope_text == ""
        assert profiles.row_count == 9 and sessions.row_count == 12

        # A profile: its sessions on every machine (profile names repeat across machines).
        await pilot.press("2")
        first = keys_shown(profiles)[0]
        name = first.split("/", 1)[1]
        await pilot.press("enter")
        await pilot.pause()
        assert app.current_tab == "sessions"
        assert app.scope_text == f"profile {name} (all machines)"
        want = {s for m in fleet.machines for s, p in fleet.sessions[m] if p.name == name}
        assert set(keys_shown(sessions)) == want
        assert len({sessions.rows_by_key[k].machine for k in want}) == 3
        assert profiles.row_count == 9

        # Enter on a session opens its detail.
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(active_screen(app), DetailScreen)
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(active_screen(app), DetailScreen)
        assert app.scope_text  # that escape only closed the pop-up
        await pilot.press("escape")
        await pilot.pause()
        assert app.scope_text == "" and sessions.row_count == 12


async def test_escape_retraces_the_drill_down_one_level_at_a_time(fleet: SyntheticFleet) -> None:
    """Machines → a machine → a profile, then esc back to that machine's profiles (on the
    profile drilled into), and esc again back to the machines (on the machine)."""
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        machines, profiles = app.table("machines"), app.table("profiles")
        sessions = app.table("sessions")
        scope = app.query_one("#scope", Static)
        await pilot.press("down", "enter")  # spark002
        await pilot.pause()
        assert app.current_tab == "profiles" and profiles.row_count == 3
        profiles.move_cursor(row=1)
        picked = profiles.selected_key
        assert picked is not None and picked.startswith("spark002/")
        name = picked.split("/", 1)[1]
        await pilot.press("enter")
        await pilot.pause()
        assert app.current_tab == "sessions"
        path = f"machine spark002 › profile {name} (all machines)"
        assert path in static_text(scope)
        want = {s for m in fleet.machines for s, p in fleet.sessions[m] if p.name == name}
        assert set(keys_shown(sessions)) == want

        await pilot.press("escape")  # one level up: spark002's profiles, on the profile
        await pilot.pause()
        assert app.current_tab == "profiles"
        assert app.scope_text == "machine spark002"
        assert "▸ machine spark002 (esc: back)" in static_text(scope)
        assert profiles.row_count == 3 and profiles.selected_key == picked
        assert set(keys_shown(sessions)) == {s for s, _ in fleet.sessions["spark002"]}

        await pilot.press("escape")  # the top: the machines, on spark002
        await pilot.pause()
        assert app.current_tab == "machines" and app.scope_text == ""
        assert "▸" not in static_text(scope)
        assert machines.selected_key == "spark002"
        assert profiles.row_count == 9 and sessions.row_count == 12

        await pilot.press("escape")  # nothing left to back out of
        await pilot.pause()
        assert app.current_tab == "machines" and machines.selected_key == "spark002"


async def test_resume_all_asks_then_resumes_the_paused_agents(fleet: SyntheticFleet) -> None:
    service = fleet.service
    paused = frozenset(s for s, _ in fleet.sessions["spark002"][:2])
    service.ingest("spark002", "s1", 50, 50, [], fleet.hello("spark002", paused=paused))
    async with fleet_app(fleet, who="tester@tui").run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("down", "R")  # spark002
        await asking(pilot)
        text = screen_text(app)
        assert "Resume all 2 agents of machine spark002?" in text
        assert "spark002 pid 10000 " in text and "spark002 pid 10001 " in text
        assert "spark002 pid 10002 " not in text  # running: nothing to resume
        await pilot.press("y")
        # This service has no command endpoint: each resume is refused, and audited.
        await until(pilot, lambda: len(service.audit_log()) == 2, "two resumes in the audit log")
        assert {(r.action, r.who) for r in service.audit_log()} == {("resume", "tester@tui")}
        # Nothing paused on spark001: R says so and asks nothing.
        await pilot.press("up", "R")
        await pilot.pause()
        assert not isinstance(active_screen(app), ConfirmScreen)


async def test_detail_view_of_each_kind_of_row(fleet: SyntheticFleet) -> None:
    fleet.limit("spark001", "p01", 600)
    # A window wide enough for every synthetic session (their calls are up to an hour old).
    async with fleet_app(fleet, live_window=7200).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        for tab, title in (
            ("1", "machine spark001"),
            ("2", "profile "),
            ("3", "session "),
        ):
            await pilot.press(tab, "d")
            await until(
                pilot, lambda: isinstance(active_screen(app), DetailScreen), "the detail view"
            )
            screen = app.screen
            assert isinstance(screen, DetailScreen)
            assert static_text(screen.query_one("#detail-title", Label)).startswith(title)
            figures = static_text(screen.query_one("#detail-figures", Static))
            assert "metered $" in figures and "API-eq $" in figures
            table = screen.query_one("#detail-sessions", LiveTable)
            want = len(screen.detail.sessions)
            await until(pilot, row_count_is(table, want), "the detail's rows")
            assert table.row_count >= 1
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(active_screen(app), DetailScreen)
        # The profile with a limit shows it in its timeline.
        await pilot.press("2")
        profiles = app.table("profiles")
        profiles.move_cursor(row=profiles.get_row_index(profile_key("spark001", "p01")))
        await pilot.press("d")
        await until(pilot, lambda: isinstance(active_screen(app), DetailScreen), "the detail view")
        assert isinstance(active_screen(app), DetailScreen)
        timeline = static_text(app.screen.query_one("#detail-timeline", Static))
        assert "spark001/p01  rate_limited" in timeline or "spark001/p01  rate-limited" in timeline
        await pilot.press("d")  # d closes it too
        await pilot.pause()
        assert not isinstance(active_screen(app), DetailScreen)
        # The Spend-by rows have none.
        await pilot.press("4")
        await until(pilot, lambda: app.table("spend").row_count > 0, "spend rows")
        await pilot.press("d")
        await pilot.pause()
        assert not isinstance(active_screen(app), DetailScreen)


async def test_help_lists_every_key(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(active_screen(app), HelpScreen)
        text = static_text(app.screen.query_one("#help-text", Static))
        listed: set[str] = set()
        for line in text.splitlines():
            if line.startswith("  ") and not line.startswith("   "):
                listed |= set(line[2 : 2 + max(len(k) for k, _ in FleetApp.KEY_HELP)].split())
        names = {"slash": "/", "question_mark": "?"}
        for binding in FleetApp.BINDINGS:
            assert not isinstance(binding, tuple)
            for key in binding.key.split(","):
                assert names.get(key, key) in listed, f"{key} ({binding.description}) not in help"
        assert "ctrl+p" in listed
        assert "unknown = no price for the model" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(active_screen(app), HelpScreen)


async def test_g_and_t_change_the_spend_grouping_and_period(fleet: SyntheticFleet) -> None:
    service = fleet.service
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        spend = app.table("spend")
        scope = app.query_one("#scope", Static)
        assert app.grouping is Dimension.ACCOUNT
        for dimension in (*GROUPINGS[1:], GROUPINGS[0]):
            await pilot.press("g")
            await pilot.pause()
            assert app.current_tab == "spend" and app.grouping is dimension
            want = {k or "(none)" for k in service.totals(dimension, Period.TODAY)}
            assert set(spend.rows_by_key) == want
            assert set(keys_shown(spend)) == want
            assert f"group by {dimension.value}" in static_text(scope)
        await pilot.press("g")  # by machine: every machine's calls
        await pilot.pause()
        calls = {k: spend.rows_by_key[k].cells[1].sort for k in spend.rows_by_key}
        assert calls == {
            m: service.total(Dimension.MACHINE, m, Period.TODAY).calls for m in fleet.machines
        }
        for period in (Period.WEEK, Period.MONTH, Period.TODAY):
            await pilot.press("t")
            await pilot.pause()
            assert app.period is period
            assert f"· {period.value} (t)" in static_text(scope)
            got = {k: spend.rows_by_key[k].cells[1].sort for k in keys_shown(spend)}
            assert got == {
                m: service.total(Dimension.MACHINE, m, period).calls for m in fleet.machines
            }


async def run_command(pilot: Pilot[Any], text: str) -> None:
    """ctrl+p, type `text`, enter on the best match."""
    app = pilot.app
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the palette")
    await pilot.press(*text)
    await until(pilot, lambda: app.screen.query_one(CommandList).option_count > 0, "matches")
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(app.screen, CommandPalette), "the palette to close")


async def test_command_palette_runs_commands(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        assert app.current_tab == "machines"
        await run_command(pilot, "show prof")
        await until(pilot, lambda: app.current_tab == "profiles", "the command to run")
        assert focused(app) is app.table("profiles")
        await run_command(pilot, "next group")
        await until(pilot, lambda: app.grouping is Dimension.MACHINE, "the grouping to move")
        assert app.current_tab == "spend"
        # A halt command asks first, as its key does.
        await pilot.press("3")
        await run_command(pilot, "kill agent")
        assert "Kill this agent?" in screen_text(await asking(pilot))
        await pilot.press("escape")
        await pilot.pause()
        assert fleet.service.audit_log() == []


async def test_kill_asks_naming_the_agent_and_cancelling_sends_nothing(
    fleet: SyntheticFleet,
) -> None:
    service = fleet.service
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("3")
        sessions = app.table("sessions")
        sessions.move_cursor(row=sessions.get_row_index(fleet.sessions["spark003"][2][0]))
        row = sessions.selected_row
        assert row is not None
        process_before = cell(sessions, row.key, "process")
        assert process_before == "running"
        proc = app.dashboard.process_of(row.key)
        assert proc is not None
        for cancel in ("n", "escape", "click"):
            await pilot.press("k")
            await asking(pilot)
            text = screen_text(app)
            assert "Kill this agent?" in text
            assert "machine  spark003" in text
            assert f"profile  {proc[1].profile}" in text
            assert f"project  {row.cells[3].sort}" in text
            assert f"spend    {row.cells[6].text} main" in text
            assert f"pid {proc[1].pid}" in text
            assert focused(app) is app.screen.query_one("#no", Button)  # the safe answer
            if cancel == "click":
                await pilot.click("#no")
            else:
                await pilot.press(cancel)
            await until(
                pilot, lambda: not isinstance(active_screen(app), ConfirmScreen), "it to close"
            )
            assert focused(app) is sessions
        await pilot.pause(0.3)
        assert service.audit_log() == []
        assert cell(sessions, row.key, "process") == "running"
        assert "command" not in feed_text(app)


async def test_a_refused_command_says_why(fleet: SyntheticFleet) -> None:
    """This service has no command endpoint: the hub refuses, and the row, feed and audit say so."""
    service = fleet.service
    async with fleet_app(fleet, who="tester@tui").run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("3")
        sessions = app.table("sessions")
        key = keys_shown(sessions)[0]
        await pilot.press("p")
        await until(
            pilot,
            lambda: cell(sessions, key, "process").startswith("refused"),
            "the outcome in the row",
            within=1.5,
        )
        assert "no command endpoint" in cell(sessions, key, "process")
        (record,) = service.audit_log()
        assert (record.who, record.action) == ("tester@tui", "pause")
        assert record.result.startswith("refused: ")
        await until(pilot, lambda: "pause pid" in feed_text(app), "the command in the feed")
        # Kill asks first; yes sends it.
        await pilot.press("k")
        await asking(pilot)
        await pilot.press("y")
        await until(pilot, lambda: len(service.audit_log()) == 2, "the kill in the audit log")
        assert service.audit_log()[0].action == "kill"


async def test_halt_keys_outside_the_sessions_tab_do_nothing(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        for tab in ("1", "2", "4"):
            await pilot.press(tab, "p", "r", "k")
            await pilot.pause()
            assert not isinstance(active_screen(app), ConfirmScreen)
        assert fleet.service.audit_log() == []


async def test_pause_all_asks_then_cancel(fleet: SyntheticFleet) -> None:
    service = fleet.service
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("down", "P")  # spark002
        await asking(pilot)
        text = screen_text(app)
        assert "Pause all 4 agents of machine spark002?" in text
        for i in range(4):  # the synthetic hello's pids
            assert f"spark002 pid {10_000 + i} " in text
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(active_screen(app), ConfirmScreen), "it to close")
        # And for a profile.
        await pilot.press("2")
        profiles = app.table("profiles")
        profiles.move_cursor(row=profiles.get_row_index(profile_key("spark001", "p00")))
        await pilot.press("P")
        await asking(pilot)
        assert "of profile spark001/p00?" in screen_text(app)
        await pilot.press("n")
        await until(pilot, lambda: not isinstance(active_screen(app), ConfirmScreen), "it to close")
        await pilot.pause(0.3)
        assert service.audit_log() == []
        assert "command" not in feed_text(app)


async def test_a_rate_limited_profile_counts_down(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        profiles = app.table("profiles")
        key = profile_key("spark003", "p01")
        assert not cell(profiles, key, "state").startswith("rate-limited")
        fleet.limit("spark003", "p01", 125)
        await until(
            pilot, lambda: cell(profiles, key, "state").startswith("rate-limited"), "the limit"
        )
        first = cell(profiles, key, "state")
        assert re.fullmatch(r"rate-limited 2:0[0-5]", first), first
        assert profiles.rows_by_key[key].cells[5].tone == "bad"
        await until(pilot, lambda: cell(profiles, key, "state") != first, "the countdown", within=3)
        assert re.fullmatch(r"rate-limited [12]:[0-5]\d", cell(profiles, key, "state"))
        # The log's hit and the timeline's limit are one happening: one line, in words.
        said = re.compile(r"spark003 +p01 hit its rate limit \(5-hour window, resets \d\d:\d\d\)")
        await until(pilot, lambda: said.search(feed_text(app)), "the feed")
        await pilot.pause(0.3)
        assert feed_text(app).count("p01 hit its rate limit") == 1


async def test_unpriced_spend_never_reads_as_zero_dollars(fleet: SyntheticFleet) -> None:
    async with fleet_app(fleet).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        fleet.send("spark001", [call(fleet, "spark001", "odd-3", model=FAKE_MODEL)])
        sessions = app.table("sessions")
        await until(pilot, lambda: "odd-3" in sessions.rows_by_key, "the session's row")
        while app.grouping is not Dimension.MODEL:
            await pilot.press("g")
        spend = app.table("spend")
        await until(pilot, lambda: FAKE_MODEL in spend.rows_by_key, "the model's spend row")
        api = spend.rows_by_key[FAKE_MODEL].cells[column_index_of(SPEND_COLUMNS, "api")].text
        main = cell(sessions, "odd-3", "main")
        assert (main, api) == ("unknown", "unknown")


async def test_every_key_on_an_empty_hub(tmp_path: Path) -> None:
    """No machine has reported yet: no key fails, nothing is sent, and rows come when one does."""
    empty = build(tmp_path, machines=0, profiles_per_machine=1, sessions_per_machine=1)
    async with fleet_app(empty).run_test(size=SIZE) as pilot:
        app = pilot.app
        assert isinstance(app, FleetApp)
        await pilot.pause()
        for tab in "1234":
            await pilot.press(tab, "enter", "d", "p", "k", "P", "s", "enter")
            assert type(active_screen(app)) is Screen
        await pilot.press("3", "r", "g", "t", "slash", "x", "enter", "slash", "backspace", "enter")
        await pilot.press("escape", "question_mark", "escape")
        assert type(active_screen(app)) is Screen
        assert empty.service.audit_log() == []
        assert "unknown –" in static_text(app.query_one("#figures", Static))
        assert "nodes 0/0" in static_text(app.query_one("#figures", Static))
        # The first machine to report shows up.
        empty.machines.append("spark001")
        empty.profiles["spark001"] = []
        empty.sessions["spark001"] = []
        empty.send("spark001", [])
        await until(pilot, lambda: "spark001" in keys_shown(app.table("machines")), "the machine")
