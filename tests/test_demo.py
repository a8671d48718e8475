"""`fleet-hub demo`'s fleet, for real: an embedded hub, node-agent processes and fake agents on
loopback; what the hub sees of them, a pause through the hub, and nothing left behind."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
import pytest

from hub import cli as hub_cli
from hub.demo import DemoAgent, DemoFleet, build_cast
from hub.ledger import Dimension, Period
from hub.model import NodeState
from hub.service import FleetService
from shared.config import Billing
from shared.events import Agent
from tests.fleet_harness import wait_for

DEMO_THREADS = {"demo-webhook", "api", "demo-rotator", "demo-reaper"}
PACE = 0.3  # about three times the demo's speed: max-a's limit hits after ~6-12 s


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants() -> list[psutil.Process]:
    """This process's descendants but those that were there before the test: an earlier test
    in the same run may leave long-lived helpers behind by design (test_kill_storm's corpus
    generation starts multiprocessing's forkserver and resource tracker, which live as long
    as pytest), and they are not the demo's to end."""
    return [p for p in psutil.Process().children(recursive=True) if p.pid not in _before]


_before: set[int] = set()


@pytest.fixture(autouse=True)
def _note_the_children_before() -> None:
    _before.clear()
    _before.update(p.pid for p in psutil.Process().children(recursive=True))


def assert_all_gone(procs: Sequence[psutil.Process]) -> None:
    left = [str(p) for p in procs if alive(p)]
    assert not left, f"still running after stop(): {left}"


def feed_texts(service: FleetService, kind: str) -> list[str]:
    return [item.text for item in service.recent_feed(500) if item.kind == kind]


def test_cast() -> None:
    three = build_cast(3)
    assert [m.name for m in three] == ["spark01", "spark02", "spark03"]
    runaways = [(m.name, p.name) for m in three for p in m.profiles if p.mode == "runaway"]
    assert runaways == [("spark02", "claude-api")]
    assert [p.name for p in three[0].profiles if p.mode == "ratelimit"] == ["max-a"]
    for machine in three:
        assert 3 <= len(machine.profiles) <= 4
        assert len({p.name for p in machine.profiles}) == len(machine.profiles)
        assert {p.billing for p in machine.profiles} == {Billing.SUBSCRIPTION, Billing.API}
    alone = build_cast(1)
    assert [(p.name, p.mode) for p in alone[0].profiles if p.mode != "normal"] == [
        ("max-a", "ratelimit"),
        ("claude-api", "runaway"),
    ]
    assert [m.name for m in build_cast(12)][-1] == "spark12"
    with pytest.raises(ValueError, match="machines"):
        DemoFleet(Path("/nonexistent"), machines=0)


def test_demo_fleet_end_to_end(tmp_path: Path) -> None:
    fleet = DemoFleet(tmp_path, machines=2, pace=PACE, seed=7)
    started: list[psutil.Process] = []
    try:
        began = time.monotonic()
        service = fleet.start()
        assert time.monotonic() - began < 15, "start() should take a few seconds at most"

        def online() -> set[str]:
            return {n.record.node for n in service.nodes() if n.state is NodeState.ONLINE}

        wait_for(lambda: online() == {"spark01", "spark02"}, 20, "both nodes online")

        def machines_with_calls() -> set[str | None]:
            totals = service.totals(Dimension.MACHINE, Period.TODAY)
            return {machine for machine, t in totals.items() if t.calls > 0}

        wait_for(lambda: machines_with_calls() == {"spark01", "spark02"}, 20, "calls from both")

        # The runaway: cache writes on every call, never a cache read, on a metered API key.
        runaway = next(a for a in fleet.agents if a.mode == "runaway")
        assert (runaway.machine, runaway.profile) == ("spark02", "claude-api")

        def runaway_calls() -> int:
            totals = service.totals(Dimension.SESSION, Period.TODAY).get(runaway.session_id)
            return totals.calls if totals is not None else 0

        wait_for(lambda: runaway_calls() >= 3, 20, "the runaway's calls at the hub")
        thrash = service.totals(Dimension.SESSION, Period.TODAY)[runaway.session_id]
        assert thrash.cache_write_5m + thrash.cache_write_1h >= 60_000 * thrash.calls
        assert thrash.cache_read == 0
        assert thrash.metered > 0 and thrash.subscription_included == 0

        # The rate-limit story: max-a's hit, the scheduler's switch to max-b.
        assert fleet.switched.wait(40), "the rotator never switched max-a to max-b"

        def story_told() -> bool:
            texts = feed_texts(service, "limit") + feed_texts(service, "profile")
            return any(t.startswith("max-a hit its rate limit (") for t in texts) and any(
                "claude-code switched" in t and t.endswith(" max-b") or "to max-b (" in t
                for t in texts
            )

        wait_for(story_told, 20, "max-a's limit and the switch in the hub's feed")
        # one line per happening: the log's hit, the node's timeline and the status file all
        # report the limit; the switch comes as max-a switched away and max-b active
        texts = [item.text for item in service.recent_feed(500)]
        assert sum("max-a hit its rate limit" in t for t in texts) == 1, texts
        assert sum("switched" in t for t in texts) == 1, texts
        assert not any("rate_limited" in t or "switched_away" in t for t in texts), texts
        spare = next(a for a in fleet.agents if a.profile == "max-b")
        limited = next(a for a in fleet.agents if a.profile == "max-a")
        assert limited.popen.poll() is not None, "the limited agent was not stopped"

        # Each node lists exactly its own agents, with their profiles.
        running = [a for a in fleet.agents if a.popen.poll() is None]
        assert spare in running and len(running) == 6  # 3 per machine, max-a replaced by max-b

        def listed() -> dict[int, tuple[str, str | None]]:
            return {p.pid: (node, p.profile) for node, p in service.processes()}

        expected = {a.pid: (a.machine, a.profile) for a in running}
        wait_for(lambda: listed() == expected, 20, "every agent listed by its own node only")

        # A pause from the hub stops the agent's whole tree (left paused: stop() must cope).
        target = next(a for a in running if a.machine == "spark02" and a.mode == "normal")
        info = next(p for _, p in service.processes("spark02") if p.pid == target.pid)
        outcome = service.command("spark02", "pause", target.pid, info.create_time, who="test")
        assert (outcome.ok, outcome.outcome) == (True, "paused"), outcome
        # (the demo's agents run git now and then: a commit that had ended is no longer there)
        tree = _statuses(target.processes())
        assert len(tree) >= 3, tree
        assert set(tree.values()) == {psutil.STATUS_STOPPED}, tree

        started = descendants()
        pids = {p.pid for p in started}
        assert set(expected) | {n.pid for n in fleet.nodes.values()} <= pids

        # A kill from the hub: the demo (the agent's parent) reaps it, so that no zombie is
        # left for its node to list.
        doomed = next(a for a in running if a.machine == "spark01" and a.mode == "normal")
        info = next(p for _, p in service.processes("spark01") if p.pid == doomed.pid)
        outcome = service.command("spark01", "kill", doomed.pid, info.create_time, who="test")
        assert outcome.ok, outcome
        wait_for(lambda: not psutil.pid_exists(doomed.pid), 10, "the killed agent reaped")
        wait_for(lambda: doomed.pid not in listed(), 20, "the killed agent gone from the hub")

        # Normal Claude agents run subagents: their sessions have subagent spend.
        claude = {
            a.session_id for a in running if a.mode == "normal" and a.agent is Agent.CLAUDE_CODE
        }

        def subagent_spend() -> set[str]:
            return {s.key for s in service.sessions() if s.subagents.calls > 0} & claude

        wait_for(lambda: bool(subagent_spend()), 30, "a Claude session with subagent spend")
        webhook = fleet.webhook
        assert webhook is not None
        port = int(webhook.url.split(":")[2].split("/")[0])
    finally:
        fleet.stop()
    assert_all_gone(started)
    assert not any(alive(p) for p in descendants())
    # The webhook receiver, the API and the courier went with it: no thread, no port.
    left = [t.name for t in threading.enumerate() if t.name in DEMO_THREADS]
    assert not left and not any(t.name.startswith("alerts-") for t in threading.enumerate())
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
    fleet.stop()  # idempotent
    with pytest.raises(RuntimeError, match="stopped"):
        fleet.start()


class FailingFleet(DemoFleet):
    """Fails once everything runs, as a start-up error past the last launch would."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, machines=1, pace=PACE)
        self.seen: list[psutil.Process] = []

    def _await_ready(self, agents: Sequence[DemoAgent]) -> None:
        super()._await_ready(agents)
        self.seen = descendants()
        raise RuntimeError("injected failure")


def test_a_failed_start_leaves_nothing_behind(tmp_path: Path) -> None:
    fleet = FailingFleet(tmp_path)
    with pytest.raises(RuntimeError, match="injected failure"):
        fleet.start()
    assert len(fleet.seen) >= 1 + 3 * 3  # the node, three agents with at least a tool each
    assert_all_gone(fleet.seen)
    assert fleet.hub is not None and fleet.hub.stop_event.is_set()
    fleet.stop()  # again: nothing left to do, and no error


def test_fleet_hub_demo_reports_a_failed_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fail(self: DemoFleet) -> FleetService:
        raise RuntimeError("no room on loopback")

    monkeypatch.setattr(DemoFleet, "start", fail)
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)  # keep pytest's handlers
    assert hub_cli.main(["demo", "--machines", "1", "--dir", str(tmp_path)]) == 1
    assert "could not start the demo fleet: no room on loopback" in capsys.readouterr().err


def _statuses(tree: list[psutil.Process]) -> dict[int, str]:
    """The status of each process of `tree` still there (neither gone nor a zombie)."""
    out: dict[int, str] = {}
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            if (status := proc.status()) != psutil.STATUS_ZOMBIE:
                out[proc.pid] = status
    return out
