"""Halting through the whole command path: hub service → Surveyor0 → node-agent process →
psutil → a real fake agent's process tree; and frames an attacker could send, against a live hub.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psutil
import pynng
import pytest

from hub.config import load_hub_config
from hub.ledger import Period
from hub.serve import Hub
from hub.service import FleetService
from node_agent.simulate.fake_agent import LaunchedAgent, launch, load_truth
from shared.events import Agent
from shared.wire import batch_body, seal
from tests.fleet_harness import (
    ProfileSpec,
    child_env,
    make_hub,
    processes,
    start_node,
    stop,
    wait_for,
    write_node,
)

NODE = "spark07"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[Hub, FleetService]]:
    setup = make_hub(tmp_path)
    running = Hub(load_hub_config(setup.config), command_timeout=3.0)
    service = running.start()
    try:
        yield running, service
    finally:
        running.stop()


def states(agent: LaunchedAgent) -> set[str]:
    out = set()
    for proc in agent.tree():
        with contextlib.suppress(psutil.NoSuchProcess):
            out.add(proc.status())
    return out


def test_pause_resume_kill_through_the_hub(hub: tuple[Hub, FleetService], tmp_path: Path) -> None:
    running, service = hub
    home = tmp_path / "homes" / "claude-max-a"
    home.mkdir(parents=True)
    truth_file = tmp_path / "truth.jsonl"
    config = write_node(
        tmp_path,
        NODE,
        _setup_of(running),
        [ProfileSpec("claude-max-a", Agent.CLAUDE_CODE, home)],
        events=running.events_url,
        commands=running.commands_url,
    )
    env = child_env(tmp_path)
    agent = launch(
        Agent.CLAUDE_CODE,
        home,
        "--pace",
        "0.2",
        "--children",
        "2",
        "--truth",
        str(truth_file),
        "--machine",
        NODE,
        "--profile",
        "claude-max-a",
        env=env,
    )
    with processes() as started:
        try:
            node = start_node(config, tmp_path)
            started.append(node)
            wait_for(lambda: _process(service, agent.pid) is not None, 30, "the agent in a hello")
            info = _process(service, agent.pid)
            assert info is not None and info.profile == "claude-max-a"
            assert info.session_id == agent.session_id

            outcome = service.command(NODE, "pause", agent.pid, info.create_time, who="test")
            assert (outcome.ok, outcome.outcome) == (True, "paused"), outcome
            assert states(agent) == {psutil.STATUS_STOPPED}
            assert len(outcome.pids) == len(agent.tree()) >= 5  # agent, 2 shells, 2 sleeps
            size = agent.path.stat().st_size
            time.sleep(0.6)
            assert agent.path.stat().st_size == size  # a paused agent writes nothing

            outcome = service.command(NODE, "resume", agent.pid, info.create_time, who="test")
            assert outcome.outcome == "resumed"
            assert psutil.STATUS_STOPPED not in states(agent)
            wait_for(lambda: agent.path.stat().st_size > size, 10, "the agent to write again")

            # A command naming a start time that no longer matches (a recycled pid) is refused.
            outcome = service.command(NODE, "pause", agent.pid, info.create_time + 5, who="test")
            assert outcome.outcome == "refused" and "another process" in outcome.detail
            assert psutil.STATUS_STOPPED not in states(agent)

            # A node that does not exist gives no answer, and says so.
            missing = service.command("nosuchnode", "pause", 1, 0.0, who="test")
            assert missing.outcome == "no answer"

            tree = agent.tree()
            outcome = service.command(NODE, "kill", agent.pid, info.create_time, who="test")
            assert outcome.outcome == "killed", outcome
            alive = [p.pid for p in tree if p.is_running() and p.status() != "zombie"]
            assert alive == []

            # Every call the agent logged reached the hub, priced.
            want = load_truth(truth_file).total()
            wait_for(
                lambda: service.fleet(Period.MONTH).calls >= want.calls, 15, "the agent's calls"
            )
            got = service.fleet(Period.MONTH)
            assert got.calls == want.calls
            assert got.api_equivalent == want.cost
            audit = [(a.action, a.result.split(":")[0]) for a in service.audit_log(10)]
            assert ("kill", "killed") in audit and ("pause", "refused") in audit
            assert stop(node) == 0
        finally:
            agent.destroy()


def _process(service: FleetService, pid: int):  # type: ignore[no-untyped-def]
    return next((p for _, p in service.processes(NODE) if p.pid == pid), None)


def _setup_of(running: Hub):  # type: ignore[no-untyped-def]
    from tests.fleet_harness import HubSetup

    config = running.config
    secret = bytes.fromhex(config.secret_file.read_text().strip())
    return HubSetup(
        config.path or Path(), running.events_url, running.commands_url, config.data_dir, secret
    )


def test_bad_frames_are_counted_and_the_hub_keeps_serving(
    hub: tuple[Hub, FleetService],
) -> None:
    running, service = hub
    receiver = running.receiver
    assert receiver is not None
    key = running.keys(NODE)
    assert key is not None
    rng = random.Random(3)
    good = seal(key, NODE, "batch", batch_body("s1", 1, 0, []))
    forged = seal(os.urandom(32), NODE, "batch", batch_body("s1", 1, 0, []))
    with pynng.Req0(recv_timeout=700, send_timeout=2000) as sock:
        sock.dial(running.events_url, block=True)

        def exchange(frame: bytes) -> bytes | None:
            sock.send(frame)
            try:
                return sock.recv()
            except pynng.Timeout:
                return None

        assert exchange(forged) is None  # wrong key
        assert exchange(good[: len(good) // 2]) is None  # truncated
        assert exchange(bytes(rng.getrandbits(8) for _ in range(200))) is None  # noise
        stale = seal(key, NODE, "batch", batch_body("s1", 1, 0, []), ts=time.time() - 3600)
        assert exchange(stale) is None  # an old frame replayed
        assert exchange(good) is not None  # still serving
    # Oversized: nng drops it and closes the pipe; the hub goes on.
    with pynng.Req0(recv_timeout=700, send_timeout=2000) as sock:
        sock.dial(running.events_url, block=True)
        sock.send(b"\x00" * (2 << 20))
        with pytest.raises(pynng.Timeout):
            sock.recv()
    with pynng.Req0(recv_timeout=2000, send_timeout=2000) as sock:
        sock.dial(running.events_url, block=True)
        sock.send(seal(key, NODE, "batch", batch_body("s1", 1, 0, [])))
        assert sock.recv()
    counts = receiver.rejects.counts
    assert counts["bad_mac"] == 1 and counts["stale"] == 1
    assert counts["malformed"] + counts.get("version", 0) >= 2
    assert [n.record.node for n in service.nodes()] == [NODE]
    assert service.fleet(Period.TODAY).api_equivalent == Decimal(0)
