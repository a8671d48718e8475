"""What a restarted node tells the hub, end to end (a real hub, real node-agent processes, a real
fake agent): an agent left paused by a node killed with -9 shows as "paused since T by WHO" and
in the feed, and a broken profile heartbeat file shows in the hub's feed, not only in the node's
log."""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from hub.dashboard import Dashboard, Table, process_key
from hub.serve import Hub
from hub.service import FleetService
from node_agent.simulate.fake_agent import launch
from shared.events import Agent
from tests import test_fleet_commands as fleet_commands
from tests.fleet_harness import (
    ProfileSpec,
    child_env,
    processes,
    start_node,
    stop,
    wait_for,
    write_node,
)
from tests.test_fleet_commands import NODE, _process, _setup_of

hub = fleet_commands.hub  # the fixture: a real hub with a command endpoint


def _feed(service: FleetService, words: str) -> list[str]:
    return [item.text for item in service.recent_feed(200) if words in item.text]


def test_a_paused_agent_outlives_its_node_and_the_hub_says_who_paused_it(
    hub: tuple[Hub, FleetService], tmp_path: Path
) -> None:
    running, service = hub
    home = tmp_path / "homes" / "claude-a"
    home.mkdir(parents=True)
    config = write_node(
        tmp_path,
        NODE,
        _setup_of(running),
        [ProfileSpec("claude-a", Agent.CLAUDE_CODE, home)],
        events=running.events_url,
        commands=running.commands_url,
    )
    agent = launch(
        Agent.CLAUDE_CODE, home, "--pace", "0.5", "--children", "0", env=child_env(tmp_path)
    )
    with processes() as started:
        try:
            node = start_node(config, tmp_path)
            started.append(node)
            wait_for(lambda: _process(service, agent.pid) is not None, 30, "the agent in a hello")
            info = _process(service, agent.pid)
            assert info is not None
            outcome = service.command(NODE, "pause", agent.pid, info.create_time, who="alice")
            assert outcome.outcome == "paused", outcome
            stop(node, signal.SIGKILL)  # the node dies; the agent stays stopped

            (config.parent / "profiles.json").write_text("{ not json")
            node = start_node(config, tmp_path)
            started.append(node)
            wait_for(lambda: bool(_feed(service, "started with")), 30, "the found-paused line")
            (line,) = _feed(service, "started with")
            assert f"pid {agent.pid} paused (paused since " in line and "by alice" in line
            assert "press r to resume" in line
            wait_for(lambda: bool(_feed(service, "profile status file")), 30, "the broken file")
            assert "profiles.json" in _feed(service, "profile status file")[0]

            dash = Dashboard(service)
            dash.tick()
            key = process_key(NODE, info)
            rows, _ = dash.rows(Table.SESSIONS, [key])
            cells = [c.text for c in rows[key].cells]
            assert any(t.startswith("paused since ") and t.endswith(" by alice") for t in cells)

            assert service.command(NODE, "resume", agent.pid, info.create_time, who="bob").ok
            assert psutil.Process(agent.pid).status() != psutil.STATUS_STOPPED
            assert service.paused_by(NODE, info) is None
            assert stop(node) == 0
        finally:
            agent.destroy()
