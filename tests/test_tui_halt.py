"""The TUI's halt keys against real processes: the app on an in-process hub, a node-agent
subprocess, and two fake agents (each a tree of five processes). Pause, resume, pause-all and
kill reach the agents through the hub's command path; the row, the feed and the audit log say
what happened; and a node that no longer answers is shown as such.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from textual.pilot import Pilot
from textual.widgets import Label, RichLog

from hub.serve import Hub
from hub.service import ANSWER_WITHIN, FleetService
from hub.tui.app import FleetApp
from hub.tui.screens import ConfirmScreen
from hub.tui.table import LiveTable
from node_agent.simulate.fake_agent import LaunchedAgent, launch
from shared.events import Agent
from tests.fleet_harness import (
    HubSetup,
    ProfileSpec,
    child_env,
    processes,
    running_hub,
    start_node,
    wait_for,
    write_node,
)
from tests.pilot_waits import asking, until

NODE = "spark07"
PROFILE = "claude-max-a"
# The issue: the row shows the outcome within a second (about 0.1 s here when unloaded). The test
# allows 3 s so that a loaded 2-core CI box (1.45 s seen at load 5) does not flake it; it still
# fails when the row waits for the node's next process report (every 5 s) instead of the answer.
OUTCOME_WITHIN_S = 3.0


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Hub, HubSetup]]:
    with running_hub(tmp_path) as running:
        yield running


async def select(pilot: Pilot[Any], table: LiveTable, key: str) -> None:
    table.move_cursor(row=table.get_row_index(key))
    await pilot.pause()
    assert table.selected_key == key


def states(agent: LaunchedAgent) -> set[str]:
    out: set[str] = set()
    for proc in agent.tree():
        with contextlib.suppress(psutil.NoSuchProcess):
            out.add(proc.status())
    return out


def gone(procs: list[psutil.Process]) -> bool:
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
    return True


def process_cell(table: LiveTable, key: str) -> str:
    return table.get_cell(key, "process").text


async def process_says(
    pilot: Pilot[Any], table: LiveTable, key: str, text: str, within: float = 10.0
) -> float:
    """Wait until the session row's process cell reads `text`; returns how long it took."""
    seen: list[str] = []

    def says() -> bool:
        now = process_cell(table, key) if key in table.rows_by_key else "(no row)"
        if not seen or seen[-1] != now:
            seen.append(now)
        return now == text

    try:
        return await until(pilot, says, f"the row to say {text!r}", within)
    except AssertionError as exc:
        app = pilot.app
        assert isinstance(app, FleetApp)
        audit = [(a.action, a.result) for a in app.service.audit_log(5)]
        raise AssertionError(f"{exc}; the cell read {seen}; audit {audit}") from None


def feed_text(app: FleetApp) -> str:
    feed = app.query_one("#feed", RichLog)
    return "\n".join("".join(seg.text for seg in line) for line in feed.lines)


def create_time(service: FleetService, pid: int) -> float | None:
    return next((p.create_time for _, p in service.processes(NODE) if p.pid == pid), None)


async def test_halt_keys_pause_resume_kill_and_a_silent_node(
    hub: tuple[Hub, HubSetup], tmp_path: Path
) -> None:
    running, setup = hub
    service = running.service
    assert service is not None
    home = tmp_path / "homes" / PROFILE
    home.mkdir(parents=True)
    config = write_node(
        tmp_path,
        NODE,
        setup,
        [ProfileSpec(PROFILE, Agent.CLAUDE_CODE, home)],
        events=running.events_url,
        commands=running.commands_url,
    )
    # Only this node's own agents: other tests may run fake agents on this host meanwhile.
    text = config.read_text()
    assert "\n[hub]\n" in text
    config.write_text(text.replace("\n[hub]\n", "\nonly_profile_processes = true\n\n[hub]\n"))
    env = child_env(tmp_path)
    args = ("--pace", "0.3", "--children", "2", "--machine", NODE, "--profile", PROFILE)
    agents: list[LaunchedAgent] = []
    with processes() as started:
        try:
            agents += [launch(Agent.CLAUDE_CODE, home, *args, env=env) for _ in range(2)]
            a, b = agents
            node = start_node(config, tmp_path)
            started.append(node)
            wait_for(
                lambda: all(create_time(service, x.pid) for x in agents), 30, "both agents' hello"
            )
            audit_before = len(service.audit_log())

            app = FleetApp(service, who="tester@tui")
            app.animation_level = "none"
            async with app.run_test(size=(200, 50)) as pilot:
                await pilot.press("3")
                sessions = app.table("sessions")
                await until(
                    pilot,
                    lambda: all(sessions.is_shown(x.session_id) for x in agents),
                    "both sessions' rows",
                )
                assert process_cell(sessions, a.session_id) == "running"
                assert sessions.get_cell(a.session_id, "pid").text == str(a.pid)
                await select(pilot, sessions, a.session_id)

                # p: the whole tree stops, and the row says so within a second.
                await pilot.press("p")
                took = await process_says(pilot, sessions, a.session_id, "paused")
                assert took <= OUTCOME_WITHIN_S, f"the outcome took {took:.2f} s"
                assert states(a) == {psutil.STATUS_STOPPED}
                assert len(a.tree()) >= 5
                assert psutil.STATUS_STOPPED not in states(b)  # only the chosen agent
                record = service.audit_log(1)[0]
                assert (record.who, record.action) == ("tester@tui", "pause")
                assert record.result.startswith("paused: stopped 5 process")
                assert record.target.startswith(f"{NODE}:{a.pid}@")
                assert abs(record.ts - time.time()) < 10
                await until(
                    pilot,
                    lambda: f"pause pid {a.pid} on {NODE}: paused" in feed_text(app),
                    "the command in the feed",
                    within=OUTCOME_WITHIN_S,
                )

                # r: it runs again.
                await pilot.press("r")
                took = await process_says(pilot, sessions, a.session_id, "running")
                assert took <= OUTCOME_WITHIN_S, f"the outcome took {took:.2f} s"
                assert psutil.STATUS_STOPPED not in states(a)
                assert service.audit_log(1)[0].result.startswith("resumed")
                await until(pilot, lambda: "resumed" in feed_text(app), "the resume in the feed")

                # P on the machine asks, naming both agents; y pauses both. (It pauses what the
                # node last reported running: wait for the report that follows the resume.)
                await until(
                    pilot,
                    lambda: (
                        [p.state for _, p in app.dashboard.processes_of(machine=NODE)]
                        == ["running", "running"]
                    ),
                    "the node to report both agents running",
                )
                await pilot.press("1")
                assert app.table("machines").selected_key == NODE
                await pilot.press("P")
                text = "\n".join(str(w.content) for w in (await asking(pilot)).query(Label))
                assert f"Pause all 2 agents of machine {NODE}?" in text
                assert f"{NODE} pid {a.pid} " in text and f"{NODE} pid {b.pid} " in text
                await pilot.press("y")
                for x in agents:
                    took = await process_says(pilot, sessions, x.session_id, "paused")
                    assert took <= OUTCOME_WITHIN_S, f"the outcome took {took:.2f} s"
                    assert states(x) == {psutil.STATUS_STOPPED}
                assert [r.action for r in service.audit_log(2)] == ["pause", "pause"]
                await pilot.press("3")
                for x in agents:
                    await select(pilot, sessions, x.session_id)
                    await pilot.press("r")
                    await process_says(pilot, sessions, x.session_id, "running")
                    assert psutil.STATUS_STOPPED not in states(x)

                # k asks; n leaves it alone; k then y kills the whole tree.
                await select(pilot, sessions, a.session_id)
                await pilot.press("k")
                await asking(pilot)
                await pilot.press("n")
                await until(pilot, lambda: not isinstance(app.screen, ConfirmScreen), "closed")
                assert len(service.audit_log()) == audit_before + 6
                tree = a.tree()
                await pilot.press("k")
                await asking(pilot)
                await pilot.press("y")
                took = await process_says(pilot, sessions, a.session_id, "killed")
                assert took <= OUTCOME_WITHIN_S, f"the outcome took {took:.2f} s"
                await until(pilot, lambda: gone(tree), "the agent's tree to be gone", within=5)
                assert service.audit_log(1)[0].action == "kill"
                assert service.audit_log(1)[0].result.startswith("killed")
                assert psutil.STATUS_STOPPED not in states(b)

                # The node stops answering (its last hello still lists b): p says so.
                node.kill()
                node.wait()
                await select(pilot, sessions, b.session_id)
                await pilot.press("p")
                await process_says(
                    pilot,
                    sessions,
                    b.session_id,
                    "no answer from node",
                    # silence is known after the pause's answer time; then the row says so
                    within=ANSWER_WITHIN["pause"] + OUTCOME_WITHIN_S,
                )
                assert sessions.rows_by_key[b.session_id].cells[10].tone == "bad"
                assert psutil.STATUS_STOPPED not in states(b)
                record = service.audit_log(1)[0]
                assert (record.who, record.action) == ("tester@tui", "pause")
                assert record.result.startswith("no answer")
                await until(
                    pilot,
                    lambda: f"pause pid {b.pid} on {NODE}: no answer" in feed_text(app),
                    "the silence in the feed",
                )
            assert len(service.audit_log()) == audit_before + 8
        finally:
            for agent in agents:
                agent.destroy()
