"""The node's `interrupt` of a Codex turn, on real processes standing in for Codex (named
`codex`, a rollout open for writing, a tool shell and another child below), and a budget's
pause on a fake Codex agent through a real hub, node and governor: the interrupt is sent
first and both commands are in the audit log and the feed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from hub.budgets.model import parse_budget
from node_agent.procs.codex_appserver import is_app_server, listener, reachable
from node_agent.procs.interrupt import interrupt, turn_state
from node_agent.simulate.fake_agent import launch
from shared.events import Agent
from tests import fleet_harness as fleet

STANDIN = Path(__file__).with_name("codex_standin.py")
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Standin:
    proc: subprocess.Popen[bytes]
    rollout: Path
    shell: int
    server: int

    @property
    def ctime(self) -> float:
        return psutil.Process(self.proc.pid).create_time()

    def lines(self) -> list[dict[str, object]]:
        return [json.loads(x) for x in self.rollout.read_text().splitlines()]


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[list[Standin]]:
    started: list[Standin] = []
    yield started
    for s in started:
        for pid in (s.shell, s.server, s.proc.pid):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        s.proc.wait(10)


def start(started: list[Standin], tmp: Path, *args: str) -> Standin:
    rollout = tmp / f"rollout-2026-12-05T21-07-18-{len(started)}.jsonl"
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), str(rollout), *args],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    ready = json.loads(proc.stdout.readline())
    s = Standin(proc, rollout, ready["shell"], ready["server"])
    started.append(s)
    fleet.wait_for(lambda: psutil.Process(proc.pid).name() == "codex", 10, "the name codex")
    return s


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_turn_in_the_tui_is_interrupted_and_its_tool_shell_ended(
    tmp_path: Path, standin: list[Standin]
) -> None:
    s = start(standin, tmp_path, "--on-sigint", "abort")
    result = interrupt(s.proc.pid, s.ctime)
    assert result.ok and result.outcome == "interrupted", result
    assert "turn_aborted (interrupted)" in result.detail
    assert f"bash pid {s.shell}" in result.detail
    assert s.lines()[-1]["payload"] == {
        "type": "turn_aborted",
        "turn_id": "01a24808-6298-70b2-8cd0-b840f6c9a30e",
        "reason": "interrupted",
    }
    fleet.wait_for(lambda: not alive(s.shell), 5, "the tool shell ended")
    assert alive(s.proc.pid) and alive(s.server)  # Codex goes on, and so does its MCP server
    # Asked again (the hub's retry after a restart): the turn has ended, nothing is sent.
    again = interrupt(s.proc.pid, s.ctime)
    assert again.ok and again.outcome == "idle" and "turn_aborted" in again.detail
    assert sum(x["payload"]["type"] == "turn_aborted" for x in s.lines()) == 1  # type: ignore[index]


def test_codex_exec_exits_with_its_turn_and_nothing_is_left_below_it(
    tmp_path: Path, standin: list[Standin]
) -> None:
    s = start(standin, tmp_path, "--on-sigint", "exit")
    result = interrupt(s.proc.pid, s.ctime)
    assert result.ok and result.outcome == "exited", result
    assert "Codex exited" in result.detail
    assert s.proc.wait(5) == 1
    fleet.wait_for(lambda: not alive(s.shell) and not alive(s.server), 5, "the orphans ended")


def test_a_shell_an_earlier_turn_left_running_is_not_ended(
    tmp_path: Path, standin: list[Standin]
) -> None:
    s = start(standin, tmp_path, "--on-sigint", "abort", "--shell-first")
    result = interrupt(s.proc.pid, s.ctime)
    assert result.ok and result.outcome == "interrupted", result
    assert "left running" not in result.detail and alive(s.shell)  # a dev server, say


def test_an_idle_codex_gets_no_signal(tmp_path: Path, standin: list[Standin]) -> None:
    s = start(standin, tmp_path, "--on-sigint", "exit", "--idle")
    result = interrupt(s.proc.pid, s.ctime)
    assert result.ok and result.outcome == "idle" and "task_complete" in result.detail
    assert s.proc.poll() is None and alive(s.shell)  # no SIGINT: it would have exited


def test_a_codex_that_does_not_react_fails_within_the_wait(
    tmp_path: Path, standin: list[Standin]
) -> None:
    s = start(standin, tmp_path, "--on-sigint", "ignore")
    result = interrupt(s.proc.pid, s.ctime, wait=0.5)
    assert not result.ok and result.outcome == "failed"
    assert "no end of the turn in" in result.detail and "0.5 s" in result.detail
    assert alive(s.shell)  # the turn did not end: its tools are not ours to end


def test_only_codex_and_only_the_process_named_is_interrupted(
    tmp_path: Path, standin: list[Standin]
) -> None:
    s = start(standin, tmp_path, "--on-sigint", "abort")
    recycled = interrupt(s.proc.pid, s.ctime - 5.0)
    assert recycled.outcome == "refused" and "now belongs to another process" in recycled.detail
    other = subprocess.Popen(["sleep", "30"])
    try:
        refused = interrupt(other.pid, psutil.Process(other.pid).create_time())
        assert refused.outcome == "refused" and "is not Codex CLI" in refused.detail
    finally:
        other.kill()
        other.wait()
    assert interrupt(1, 0.0).outcome == "refused"
    assert s.lines()[-1]["payload"]["type"] == "task_started"  # type: ignore[index]


def test_turn_state_reads_the_last_turn_and_skips_cut_lines() -> None:
    started = b'{"type":"event_msg","payload":{"type":"task_started","turn_id":"t2"}}'
    aborted = b'{"type":"event_msg","payload":{"type":"turn_aborted","turn_id":"t2","reason":"x"}}'
    assert turn_state([b'nt_msg","payload":{"type":"task_complete"}}', started]) == (
        turn_state([started])
    )
    state = turn_state([started])
    assert state is not None and state.turn_id == "t2" and state.ended is None
    ended = turn_state([started, aborted])
    assert ended is not None and ended.ended == "turn_aborted (x)"
    assert turn_state([b'{"type":"response_item","payload":{}}']) is None


def test_which_app_servers_the_node_can_reach() -> None:
    codex = ["node", "/usr/lib/node_modules/@openai/codex/bin/codex.js", "app-server"]
    assert is_app_server(codex) and not is_app_server(["codex", "exec", "app-server"][:2])
    assert listener(codex) is None  # stdio, the default
    assert listener([*codex, "--listen", "stdio://"]) is None
    unix = listener([*codex, "--listen", "unix:///run/codex.sock"])
    assert unix is not None and unix.path == "/run/codex.sock" and reachable(unix) is None
    default = listener([*codex, "--listen=unix://"])
    assert default is not None and "default socket" in str(reachable(default))
    ws = listener([*codex, "--listen", "ws://127.0.0.1:4500"])
    assert ws is not None and reachable(ws) is None
    far = listener([*codex, "--listen", "ws://10.0.0.5:4500"])
    assert far is not None and "not a loopback" in str(reachable(far))
    token = listener([*codex, "--listen", "ws://127.0.0.1:4500", "--ws-auth", "capability-token"])
    assert token is not None and "--ws-auth" in str(reachable(token))


NODE = "cx07"


def test_a_budgets_pause_of_a_codex_agent_interrupts_its_turn_first(tmp_path: Path) -> None:
    """A fake Codex agent (real rollouts, named codex) under a pause budget: the governor asks
    the node to interrupt (its rollout says the last turn ended: idle, no signal), then pauses
    it; both commands reach the audit log and the feed by the command path."""
    with fleet.running_hub(tmp_path) as (hub, setup), fleet.processes() as started:
        assert hub.governor is not None and hub.service is not None
        service = hub.service
        home = tmp_path / "homes" / "cx"
        home.mkdir(parents=True)
        profile = fleet.ProfileSpec("cx", Agent.CODEX, home)
        started.append(
            fleet.start_node(fleet.write_node(tmp_path, NODE, setup, [profile]), tmp_path)
        )
        fleet.wait_for(lambda: any(v.record.node == NODE for v in service.nodes()), 30, "node")
        agent = launch(
            Agent.CODEX, home, "--mode", "runaway", "--pace", "0.3", "--machine", NODE,
            "--profile", "cx", env=fleet.child_env(tmp_path),
        )  # fmt: skip
        try:
            # The budget once the hub knows the agent: a runaway's first call may cross it
            # before the node's inventory has told the hub of the process to stop.
            fleet.wait_for(
                lambda: any(p.pid == agent.pid for _, p in service.processes(NODE)),
                30,
                "the agent in the node's inventory",
            )
            hub.governor.add_budget(
                parse_budget({"name": "cx day", "scope": f"machine={NODE}", "period": "day",
                              "basis": "api", "limit": "0.50", "action": "pause"}),
                "test",
            )  # fmt: skip

            def acted() -> list[tuple[str, str, str]]:
                return [
                    (r.action, r.target, r.result)
                    for r in service.audit_log(200)
                    if r.who == "budget 'cx day'" and r.action in ("interrupt", "pause")
                ]

            def summary() -> list[str]:
                return [
                    r.result for r in service.audit_log(200)
                    if r.who == "budget 'cx day'" and r.action == "budget pause"
                ]  # fmt: skip

            fleet.wait_for(lambda: bool(summary()), 90, "the budget's stop")
            commands = sorted(acted(), key=lambda a: a[0] != "interrupt")
            first = commands[0]
            assert first[0] == "interrupt" and str(agent.pid) in first[1], commands
            feed = [i.text for i in service.recent_feed(200) if i.kind == "command"]
            assert any(t.startswith(f"interrupt pid {agent.pid} on {NODE}: ") for t in feed)
            # The fake agent writes no task_started: a turn is in progress as far as its
            # rollout tells (then SIGINT ends it, like `codex exec`) or its last one ended.
            if first[2].startswith("exited"):
                assert [a for a, _, _ in commands] == ["interrupt"]  # nothing left to pause
                assert "paused 0 agents, 1 exited" in summary()[0]
                assert agent.popen.wait(10) == 0  # the fake's status on SIGINT
            else:
                assert first[2].startswith("idle"), first
                then = commands[1]
                assert then[0] == "pause" and then[2].startswith("paused"), commands
                assert any(t.startswith(f"pause pid {agent.pid} on {NODE}: paused") for t in feed)
        finally:
            agent.destroy()
