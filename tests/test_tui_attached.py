"""The dashboard attached to a real `fleet-hub serve`: a node-agent subprocess and a fake agent
feed the hub; two dashboards (an operator's and a viewer's) mirror it through the API. Their
figures equal the hub's report; `p` / `r` reach the agent through POST /commands (state T)
and are audited under the token's name, while the viewer's halt keys say they need an
operator token; a kill -9 of the hub leaves them saying since when it is unreachable, with
the last figures; the hub restarted, they reconnect by themselves and equal the report again
(nothing lost or doubled)."""

from __future__ import annotations

import contextlib
import signal
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
from textual.pilot import Pilot
from textual.widgets import Static

from hub.ledger import Dimension, Period
from hub.remote import RemoteFleet
from hub.tui.app import FleetApp
from hub.tui.screens import DetailScreen
from node_agent.simulate.fake_agent import LaunchedAgent, launch
from shared.events import Agent
from tests import fleet_harness as fleet
from tests.api_harness import ServedHub, little_fleet, serve_hub
from tests.pilot_waits import asking, until
from tests.test_tui_halt import feed_text, process_says, select, states

NODE = "spark07"
PROFILE = "claude-api"


def scope_line(app: FleetApp) -> str:
    return str(app.query_one("#scope", Static).render())


def reported(served: ServedHub) -> tuple[int, Decimal]:
    """(calls, metered dollars) in the hub's report, read as `fleet-hub report --json` does."""
    total = fleet.hub_report(served.setup, served.tmp)["total"]
    return int(total["calls"]), Decimal(total["cost"]["metered"] or "0")


def api_get(served: ServedHub, path: str) -> Any:
    """What the hub answers a viewer at `path` (JSON)."""
    return httpx.get(served.url + path, headers=served.headers("viewer"), timeout=30).json()


def audit_rows(served: ServedHub) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = api_get(served, "/api/v1/audit")["rows"]
    return rows


def shown(app: FleetApp) -> tuple[int, Decimal]:
    """(calls, metered dollars) the dashboard's mirror holds."""
    today = app.service.fleet(Period.TODAY)
    return today.calls, today.metered


def header_metered(app: FleetApp) -> Decimal | None:
    return None if app.header_figures is None else app.header_figures.metered


async def settle_equal(pilot: Pilot[Any], apps: list[FleetApp], served: ServedHub) -> None:
    """With the agent stopped, the report stops moving: each dashboard must then equal it."""
    last: list[tuple[int, Decimal]] = []

    def same() -> bool:
        now = reported(served)
        last.append(now)
        return (
            len(last) >= 2
            and last[-2] == now
            and all(shown(a) == now and header_metered(a) == now[1] for a in apps)
        )

    try:
        await until(pilot, same, "the dashboards to equal the hub's report", within=30)
    except AssertionError as exc:
        shown_now = [shown(a) for a in apps]
        raise AssertionError(f"{exc}: report {last[-3:]}, shown {shown_now}") from None


async def pause_once_the_node_listens(
    pilot: Pilot[Any], app: FleetApp, agent: LaunchedAgent
) -> None:
    """p until the agent is paused: the node redials the restarted hub's command port on
    its own schedule (the answer before that is "no answer from node"), and tells it its
    processes with its next hello."""
    sessions = app.table("sessions")

    def cell() -> str:
        return sessions.get_cell(agent.session_id, "process").text

    # the restarted hub knows the agent's process from the node's next hello
    await until(pilot, lambda: app.dashboard.process_of(agent.session_id) is not None, "process")
    for _ in range(10):
        await pilot.press("p")
        await until(pilot, lambda: cell() in ("pause…", "paused"), "the command sent")
        await until(pilot, lambda: cell() in ("paused", "no answer from node"), "an outcome")
        if cell() == "paused":
            assert states(agent) == {psutil.STATUS_STOPPED}
            return
        await pilot.pause(1.0)
    raise AssertionError(f"the agent was never paused: the row says {cell()!r}")


async def test_two_dashboards_attached_through_a_hub_kill_and_restart(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)
    home = tmp_path / "homes" / PROFILE
    home.mkdir(parents=True)
    config = fleet.write_node(
        tmp_path, NODE, served.setup, [fleet.ProfileSpec(PROFILE, Agent.CLAUDE_CODE, home)]
    )
    text = config.read_text()
    config.write_text(text.replace("\n[hub]\n", "\nonly_profile_processes = true\n\n[hub]\n"))
    agent: LaunchedAgent | None = None
    with fleet.processes() as started, contextlib.ExitStack() as stack:
        started.append(served.proc)
        try:
            agent = launch(
                Agent.CLAUDE_CODE, home, "--pace", "0.2", "--children", "1",
                "--machine", NODE, "--profile", PROFILE, env=fleet.child_env(tmp_path),
            )  # fmt: skip
            started.append(fleet.start_node(config, tmp_path))
            fleet.wait_for(lambda: reported(served)[0] >= 3, 30, "calls in the hub")
            remotes = [
                stack.enter_context(RemoteFleet(served.url, served.tokens[role]))
                for role in ("operator", "viewer")
            ]
            ops, viewer = (FleetApp(r) for r in remotes)
            for app in (ops, viewer):
                app.animation_level = "none"
            async with ops.run_test(size=(200, 50)) as pilot, viewer.run_test(size=(200, 50)):
                apps = [ops, viewer]
                for app in apps:
                    assert scope_line(app).startswith(f"attached to {served.url}")
                    await until(pilot, lambda a=app: shown(a)[0] >= 3, "figures on the screen")
                profiles = ops.table("profiles")
                await until(pilot, lambda: f"{NODE}/{PROFILE}" in profiles.rows_by_key, "profile")
                assert profiles.get_cell(f"{NODE}/{PROFILE}", "billing").text == "API"
                await pilot.press("3")
                sessions = ops.table("sessions")
                await until(pilot, lambda: sessions.is_shown(agent.session_id), "the session")
                await select(pilot, sessions, agent.session_id)

                # p: the hub sends it to the node; the whole tree stops (state T)
                await pilot.press("p")
                await process_says(pilot, sessions, agent.session_id, "paused")
                assert states(agent) == {psutil.STATUS_STOPPED}
                audit = audit_rows(served)
                assert (audit[0]["who"], audit[0]["action"]) == ("t-operator", "pause")
                await settle_equal(pilot, apps, served)
                machine_today = remotes[1].total(Dimension.MACHINE, NODE, Period.TODAY)
                assert machine_today.metered == reported(served)[1]

                # the viewer's halt keys say what they need, and send nothing
                viewer.action_tab("sessions")
                mirrored = viewer.table("sessions")
                await until(pilot, lambda: mirrored.is_shown(agent.session_id), "its row")
                mirrored.move_cursor(row=mirrored.get_row_index(agent.session_id))
                viewer.action_halt("resume")
                await process_says(pilot, mirrored, agent.session_id, "needs an operator token")
                assert states(agent) == {psutil.STATUS_STOPPED}

                # R on its machine (asks first): the agent runs again, and keeps writing
                # through what follows
                await until(
                    pilot,
                    lambda: (
                        [p.state for _, p in ops.dashboard.processes_of(machine=NODE)] == ["paused"]
                    ),
                    "the node to report the agent paused (R resumes what it reports paused)",
                )
                await pilot.press("1")
                await select(pilot, ops.table("machines"), NODE)
                await pilot.press("R")
                await asking(pilot)
                await pilot.press("y")
                await pilot.press("3")
                await process_says(pilot, sessions, agent.session_id, "running")
                assert psutil.STATUS_STOPPED not in states(agent)
                assert audit_rows(served)[0]["action"] == "resume"

                # kill -9 of the hub: both say so, and keep the last figures
                before = [shown(a) for a in apps]
                fleet.stop(served.proc, signal.SIGKILL)
                for app in apps:
                    await until(
                        pilot,
                        lambda a=app: "hub unreachable since" in scope_line(a),
                        "unreachable since",
                        within=90,
                    )
                    assert app.query_one("#figures").has_class("unreachable")
                    assert app.has_class("unreachable")  # the tables greyed
                assert [shown(a) for a in apps] == before  # the mirror keeps the last figures
                for app in apps:  # and the header shows them
                    await until(
                        pilot, lambda a=app: header_metered(a) == shown(a)[1], "the last figures"
                    )
                calls_before = before[0][0]

                # the hub comes back: they reconnect, and equal its report again
                served.proc = fleet.start_hub(served.setup, served.tmp)
                started.append(served.proc)
                for app in apps:
                    await until(
                        pilot,
                        lambda a=app: scope_line(a).startswith("attached to"),
                        "the dashboard to reconnect",
                        within=30,
                    )
                    assert not app.query_one("#figures").has_class("unreachable")
                await until(
                    pilot, lambda: reported(served)[0] > calls_before, "new calls", within=30
                )
                await select(pilot, sessions, agent.session_id)
                await pause_once_the_node_listens(pilot, ops, agent)
                await settle_equal(pilot, apps, served)
        finally:
            if agent is not None:
                agent.destroy()


async def test_detail_views_read_the_hub_off_the_ui_thread(tmp_path: Path) -> None:
    """Machine and session detail on an attached dashboard: the series and the other periods'
    figures come from the hub (in a worker thread), equal to what the hub says."""
    threads: dict[str, set[str]] = {}

    def note(request: httpx.Request) -> None:
        threads.setdefault(request.url.path, set()).add(threading.current_thread().name)

    with (
        little_fleet(tmp_path) as served,
        RemoteFleet(served.url, served.tokens["viewer"], event_hooks={"request": [note]}) as r,
    ):
        app = FleetApp(r)
        app.animation_level = "none"
        async with app.run_test(size=(200, 50)) as pilot:
            await until(pilot, lambda: app.table("machines").row_count == 1, "spark01's row")
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen), "machine detail")
            assert isinstance(app.screen, DetailScreen)
            detail = app.screen.detail
            assert detail.title == "machine spark01"
            month = dict(detail.figures)["month"]
            spend = api_get(served, "/api/v1/spend?by=machine&period=month")
            assert f"{spend[0]['calls']} calls" in month
            await pilot.press("escape")
            await pilot.press("3")
            await until(pilot, lambda: app.table("sessions").row_count == 1, "the session")
            await pilot.press("d")
            await until(pilot, lambda: isinstance(app.screen, DetailScreen), "session detail")
            assert isinstance(app.screen, DetailScreen)
            series = app.screen.detail.series
            hub_series = api_get(served, "/api/v1/sessions/sess-spark01/series")["bins"]
            assert [str(b.normalize()) for b in series] == [
                str(Decimal(b).normalize()) for b in hub_series
            ]
            assert sum(series) > 0
            await pilot.press("escape")

            # the feed came with the snapshot; Spend by follows the groupings asked for
            assert "new claude-code session" in feed_text(app)
            await pilot.press("4")
            spend = app.table("spend")
            await until(pilot, lambda: "(none)" in spend.rows_by_key, "by account: none say")
            await pilot.press("g")  # by machine
            await until(pilot, lambda: "spark01" in spend.rows_by_key, "by machine")
            await pilot.press("t")  # this week's: a grouping the mirror did not follow yet
            await until(pilot, lambda: "spark01" in spend.rows_by_key, "this week by machine")
            assert spend.get_cell("spark01", "calls").text == "3"
    ui = threading.main_thread().name  # where run_test runs the app's loop
    assert ui not in threads["/api/v1/sessions/sess-spark01/series"], threads
    assert ui not in threads["/api/v1/mirror/figures"], threads  # the month's figures
