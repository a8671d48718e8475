"""The node's process inventory as the hub relies on it, on real processes: an agent started
after the node's last scan is named by the next hello once a call of its session is read (a
budget stop pauses what the hello names), and one started after a running node is listed with
its whole tree, which a kill through the hub then ends whole."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hub.config import load_hub_config
from hub.serve import Hub
from hub.service import FleetService
from node_agent.daemon import INVENTORY_AT_MOST, Daemon
from node_agent.simulate.claude import SONNET
from node_agent.simulate.fake_agent import LaunchedAgent, launch
from shared.config import NodeConfig, Profile
from shared.events import Agent, Role, Tokens, UsageEvent
from tests.fleet_harness import (
    HubSetup,
    ProfileSpec,
    child_env,
    make_hub,
    processes,
    start_node,
    stop,
    wait_for,
    write_node,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

NODE = "spark11"


@pytest.fixture
def agents() -> Iterator[list[LaunchedAgent]]:
    """Fake agents launched into the list; their trees are ended afterwards, pass or fail."""
    launched: list[LaunchedAgent] = []
    yield launched
    for one in launched:
        one.destroy()


def call_of(session_id: str) -> UsageEvent:
    """A call of `session_id`, just made, as the node's reader hands it on."""
    tokens = Tokens(input=3, output=120, cache_read=20_000, cache_write_5m=0, cache_write_1h=400)
    return UsageEvent(
        event_id=f"claude:msg_{session_id[:8]}:req_1",
        ts=time.time(),
        agent=Agent.CLAUDE_CODE,
        model=SONNET,
        tokens=tokens,
        session_id=session_id,
        revision=2 * tokens.total + 1,
        role=Role.MAIN,
        machine=NODE,
        profile="claude-a",
    )


def named_pids(hello: dict[str, object]) -> set[int]:
    listed = hello["processes"]
    assert isinstance(listed, list)
    return {int(p["pid"]) for p in listed}


def test_the_next_hello_names_an_agent_that_started_after_the_last_scan_once_it_calls(
    tmp_path: Path, agents: list[LaunchedAgent]
) -> None:
    home = tmp_path / "claude-a"
    home.mkdir()
    config = NodeConfig(
        node=NODE,
        profiles=(Profile("claude-a", Agent.CLAUDE_CODE, home),),
        state_dir=tmp_path / "state",
        status_file=None,
    )
    daemon = Daemon(config)
    daemon._refresh_processes()  # the node's last scan: before the agent starts
    agent = launch(Agent.CLAUDE_CODE, home, "--pace", "0.2", env=child_env(tmp_path))
    agents.append(agent)
    assert agent.pid not in named_pids(daemon.hello())  # no call read yet: no scan

    daemon._saw([call_of(agent.session_id)])
    wait_for(
        lambda: time.monotonic() - daemon._scanned_at >= INVENTORY_AT_MOST,
        10,
        "the inventory's least gap between scans",
        0.05,
    )
    hello = daemon.hello()  # the very next one, not some later one
    assert agent.pid in named_pids(hello)
    (info,) = (p for p in hello["processes"] if p["pid"] == agent.pid)
    assert info["create_time"] == psutil.Process(agent.pid).create_time()
    assert info["profile"] == "claude-a"


def hub_setup(running: Hub) -> HubSetup:
    config = running.config
    secret = bytes.fromhex(config.secret_file.read_text().strip())
    return HubSetup(
        config.path or Path(), running.events_url, running.commands_url, config.data_dir, secret
    )


def alive(procs: list[psutil.Process]) -> list[int]:
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
    return out


def test_an_agent_started_under_a_running_node_is_listed_whole_and_killed_whole(
    tmp_path: Path, agents: list[LaunchedAgent]
) -> None:
    setup = make_hub(tmp_path)
    running = Hub(load_hub_config(setup.config), command_timeout=5.0)
    service: FleetService = running.start()
    home = tmp_path / "homes" / "claude-a"
    home.mkdir(parents=True)
    config = write_node(
        tmp_path,
        NODE,
        hub_setup(running),
        [ProfileSpec("claude-a", Agent.CLAUDE_CODE, home)],
        events=running.events_url,
        commands=running.commands_url,
    )

    def listed(pid: int):  # type: ignore[no-untyped-def]
        return next((p for _, p in service.processes(NODE) if p.pid == pid), None)

    try:
        with processes() as started:
            node = start_node(config, tmp_path)
            started.append(node)
            wait_for(
                lambda: any(v.record.node == NODE and v.hello for v in service.nodes()),
                30,
                "a first hello",
            )
            # Quiet at its prompt (no call): only the inventory's own cadence can find it.
            agent = launch(
                Agent.CLAUDE_CODE, home, "--children", "2", "--first-call-after", "3600",
                env=child_env(tmp_path),
            )  # fmt: skip
            agents.append(agent)
            wait_for(lambda: len(agent.tree()) == 5, 30, "the agent's 2 tools and their children")
            tree = agent.tree()
            wait_for(
                lambda: (p := listed(agent.pid)) is not None and p.children == 4,
                30,
                "the agent and its 4 descendants in a hello",
            )
            info = listed(agent.pid)
            assert info is not None and info.profile == "claude-a"
            assert info.create_time == psutil.Process(agent.pid).create_time()

            outcome = service.command(NODE, "kill", agent.pid, info.create_time, who="test")
            assert outcome.outcome == "killed", outcome
            assert sorted(outcome.pids) == sorted(p.pid for p in tree)
            assert alive(tree) == []
            assert stop(node) == 0
    finally:
        running.stop()
