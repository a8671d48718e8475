"""fleetmeter against the real Codex CLI (`@openai/codex`, pinned in tests.real_agents), its
model provider served on loopback in the Responses API's streaming shapes (a `model_providers`
entry with `base_url` in config.toml): Codex runs the hooks `node-agent hooks install --agent
codex` wrote and a deny verdict stops the turn before any model call; the node reads the
rollout Codex wrote (tokens as the provider's usage said); the node's interrupt (and a
budget's pause through the governor) ends a turn mid-call, the rollout records it and the
tool shell Codex left running is ended; `turn/interrupt` through `codex app-server` over stdio
ends a turn as the research says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from websockets.sync.client import unix_connect

from hub.budgets.model import parse_budget
from hub.serve import Hub
from node_agent.procs.interrupt import interrupt
from node_agent.query_client import session_figures
from shared.events import Agent
from shared.verdicts import Verdict, VerdictState
from tests import fleet_harness as fleet
from tests.model_provider import API_KEY, HOLD, Exec, ModelProvider, model_provider
from tests.real_agents import codex
from tests.test_agent_gates import verdict

pytestmark = pytest.mark.real_agents

NODE = "n1"
MODEL = "gpt-5.1-codex"  # priced in pricing/tables/openai.toml


@dataclass
class CodexFleet:
    tmp: Path
    hub: Hub
    config: Path  # the node's node.toml
    home: Path  # CODEX_HOME
    work: Path
    provider: ModelProvider
    verdicts: list[Verdict]
    binary: Path

    @property
    def state_dir(self) -> Path:
        return self.config.parent / "state"

    def env(self) -> dict[str, str]:
        env = fleet.child_env(self.tmp)
        env.update(CODEX_HOME=str(self.home), HOME=str(self.tmp / "home"), FAKE_KEY=API_KEY)
        return env

    def exec_args(self, prompt: str, *more: str) -> list[str]:
        return [str(self.binary), "exec", "--json", "--skip-git-repo-check", *more, prompt]

    def run(self, prompt: str, *more: str) -> tuple[int, list[dict[str, Any]]]:
        done = subprocess.run(
            self.exec_args(prompt, *more),
            cwd=self.work,
            env=self.env(),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        return done.returncode, _jsonl(done.stdout)

    def start(self, prompt: str, *more: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.exec_args(prompt, *more),
            cwd=self.work,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def rollouts(self) -> list[Path]:
        return sorted((self.home / "sessions").rglob("rollout-*.jsonl"), key=os.path.getmtime)


def _jsonl(data: bytes) -> list[dict[str, Any]]:
    out = []
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def rollout_events(path: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)["payload"]
        for line in path.read_text().splitlines()
        if '"event_msg"' in line
    ]


def write_codex_config(home: Path, provider: ModelProvider) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'model = "{MODEL}"\n'
        'model_provider = "local"\n\n'
        "[model_providers.local]\n"
        'name = "local stand-in"\n'
        f'base_url = "{provider.base_url}"\n'
        'env_key = "FAKE_KEY"\n'
        'wire_api = "responses"\n'
    )


@pytest.fixture
def cx(tmp_path: Path) -> Iterator[CodexFleet]:
    binary = codex()
    given: list[Verdict] = []
    with model_provider() as provider, fleet.running_hub(tmp_path) as (hub, setup):
        assert hub.service is not None
        hub.service.verdicts = lambda node: list(given) if node == NODE else []
        home = tmp_path / "codex-home"
        write_codex_config(home, provider)
        work = tmp_path / "work"
        work.mkdir()
        (tmp_path / "home").mkdir()
        profile = fleet.ProfileSpec("cx", Agent.CODEX, home)
        config = fleet.write_node(tmp_path, NODE, setup, [profile])
        node = fleet.start_node(config, tmp_path)
        try:
            fleet.wait_for((config.parent / "state" / "query.sock").exists, 30, "the node")
            yield CodexFleet(tmp_path, hub, config, home, work, provider, given, binary)
        finally:
            fleet.stop(node)


def tokens_of(cx: CodexFleet, thread: str) -> dict[str, Any] | None:
    usage = session_figures(cx.state_dir, thread).get("usage") or {}
    return usage if usage.get("calls") else None


def test_codex_runs_the_installed_hooks_and_a_deny_stops_the_turn(cx: CodexFleet) -> None:
    installed = subprocess.run(
        [sys.executable, "-m", "node_agent.entry", "hooks", "install", "--agent", "codex",
         "--config", str(cx.config)],
        env=cx.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert (cx.home / "hooks.json").exists()
    # Hooks run once trusted (/hooks in the TUI); exec takes the per-run bypass.
    trusted = "--dangerously-bypass-hook-trust"
    code, events = cx.run("fix the flaky test", trusted)
    assert code == 0, events
    thread = next(e["thread_id"] for e in events if e["type"] == "thread.started")
    (done,) = [e for e in events if e["type"] == "turn.completed"]
    assert len(cx.provider.model_calls()) == 1
    # The node read the rollout Codex wrote: the provider's usage, split into disjoint buckets.
    fleet.wait_for(lambda: tokens_of(cx, thread) is not None, 30, "the node's reading")
    usage = tokens_of(cx, thread)
    assert usage is not None and usage["calls"] == 1
    u = cx.provider.state.usage
    assert done["usage"]["input_tokens"] == u.input_tokens
    assert usage["tokens"] == {
        "input": u.input_tokens - u.cached_tokens,
        "cache_read": u.cached_tokens,
        "output": u.output_tokens - u.reasoning_tokens,
        "reasoning": u.reasoning_tokens,
        "cache_write_5m": 0,
        "cache_write_1h": 0,
    }
    assert usage["spend_known"] is True
    # The budget is exhausted: the hook Codex runs at the prompt blocks the turn.
    cx.verdicts[:] = [verdict(f"machine:{NODE}", VerdictState.EXHAUSTED)]

    def node_blocks() -> bool:
        body = {"session_id": thread, "cwd": str(cx.work), "hook_event_name": "UserPromptSubmit",
                "model": MODEL, "turn_id": "t", "prompt": "go on"}  # fmt: skip
        answer = subprocess.run(
            [sys.executable, "-m", "node_agent.entry", "hook", "UserPromptSubmit", "--agent",
             "codex", "--config", str(cx.config)],
            input=json.dumps(body).encode(), env=cx.env(), capture_output=True, timeout=30,
            check=False,
        )  # fmt: skip
        return b'"decision": "block"' in answer.stdout

    fleet.wait_for(node_blocks, 30, "the verdict at the node (a heartbeat's ack)", every=0.5)
    code, events = cx.run("and the other one", trusted)
    # Blocked at UserPromptSubmit: the turn ends with no model call and the prompt never
    # enters the thread (`codex exec --json` does not print the hook's reason; the TUI does).
    assert code == 0
    (done,) = [e for e in events if e["type"] == "turn.completed"]
    assert set(done["usage"].values()) == {0}
    assert len(cx.provider.model_calls()) == 1
    blocked = cx.rollouts()[-1].read_text()
    assert "and the other one" not in blocked
    assert rollout_events(cx.rollouts()[-1])[-1]["last_agent_message"] is None
    # Without the hooks' trust Codex runs none of them: the turn goes on (why the installer
    # says to trust them, or to install them as managed hooks).
    code, events = cx.run("untrusted")
    assert code == 0 and any(e["type"] == "turn.completed" for e in events)
    assert len(cx.provider.model_calls()) == 2


def _codex_process(cx: CodexFleet, pid: int) -> Any:
    assert cx.hub.service is not None
    for _node, process in cx.hub.service.processes(NODE):
        if process.pid == pid and process.agent is Agent.CODEX:
            return process
    return None


def test_the_node_interrupts_a_codex_turn_mid_call(cx: CodexFleet) -> None:
    """The turn asks for a shell (`sleep 600`, left running by unified exec), then its next
    model call hangs mid-stream: the hub's interrupt reaches the node, Codex ends the turn and
    exits, the rollout records `turn_aborted`, and the shell is ended too."""
    cx.provider.plan(Exec("sleep 600"), HOLD)
    proc = cx.start("run the suite", "--dangerously-bypass-approvals-and-sandbox")
    try:
        assert cx.provider.wait_streaming(30), "Codex never made its second model call"
        shells = [
            p for p in psutil.Process(proc.pid).children(recursive=True)
            if "sleep 600" in " ".join(p.cmdline())
        ]  # fmt: skip
        assert shells, "no tool shell under Codex"
        fleet.wait_for(lambda: _codex_process(cx, proc.pid) is not None, 30, "the hub sees it")
        process = _codex_process(cx, proc.pid)
        assert cx.hub.service is not None
        outcome = cx.hub.service.command(
            NODE, "interrupt", process.pid, process.create_time, who="test"
        )
        assert outcome.ok and outcome.outcome == "exited", outcome
        assert "turn_aborted (interrupted)" in outcome.detail and "Codex exited" in outcome.detail
        assert proc.wait(10) == 1  # codex exec's status after an interrupted turn (0.171.0)
        (rollout,) = cx.rollouts()
        events = rollout_events(rollout)
        aborted = [e for e in events if e["type"] == "turn_aborted"]
        assert [e["reason"] for e in aborted] == ["interrupted"]
        assert not any(e["type"] == "task_complete" for e in events)
        fleet.wait_for(lambda: not any(s.is_running() for s in shells), 10, "the shell ended")
        audit = cx.hub.service.audit_log(20)
        assert any(
            r.action == "interrupt" and r.result.startswith("exited") and str(proc.pid) in r.target
            for r in audit
        )
        feed = [i.text for i in cx.hub.service.recent_feed(50)]
        assert any(t.startswith(f"interrupt pid {proc.pid} on {NODE}: exited") for t in feed)
        # The call the turn made before it was stopped is counted.
        thread = rollout.stem.split("-", 6)[-1]
        fleet.wait_for(lambda: tokens_of(cx, thread) is not None, 30, "the node's reading")
        usage = tokens_of(cx, thread)
        assert usage is not None and usage["calls"] == 1
    finally:
        cx.provider.release()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_a_budgets_pause_interrupts_a_running_codex_turn(cx: CodexFleet) -> None:
    """The governor end to end: the turn's first call crosses a $0.001 pause budget while the
    second hangs; the governor's interrupt ends the turn and Codex with it (nothing left to
    pause), and the budget says so."""
    assert cx.hub.governor is not None and cx.hub.service is not None
    cx.hub.governor.add_budget(
        parse_budget({"name": "cx tiny", "scope": f"machine={NODE}", "period": "day",
                      "basis": "api", "limit": "0.001", "action": "pause"}),
        "test",
    )  # fmt: skip
    cx.provider.plan(Exec("sleep 600"), HOLD)
    proc = cx.start("run the suite", "--dangerously-bypass-approvals-and-sandbox")
    try:
        # The turn cannot end by itself (its next answer is held until released): Codex
        # ended because the governor interrupted it, in the tool's run or in the held call.
        assert proc.wait(60) == 1
        assert len(cx.provider.model_calls()) in (1, 2)
        service = cx.hub.service

        def acts() -> list[tuple[str, str]]:
            rows = service.audit_log(50)
            return [(r.action, r.result) for r in rows if r.who == "budget 'cx tiny'"]

        def summaries() -> list[str]:
            return [r for a, r in acts() if a == "budget pause"]

        fleet.wait_for(
            lambda: any("paused 0 agents, 1 exited" in s for s in summaries()),
            15,
            "the governor's summary in the audit log",
        )
        commands = [(a, r) for a, r in acts() if a in ("interrupt", "pause", "kill")]
        ((action, result),) = commands  # the interrupt, and no pause after it
        assert action == "interrupt" and result.startswith("exited"), acts()
        assert "turn_aborted (interrupted)" in result
        # Codex exited with its turn: nothing was left to pause, and the budget says so; the
        # crossing may have come before the node reported Codex (then it found no agent, and
        # the hello that named Codex brought the interrupt).
        *before, summary = summaries()[::-1]  # oldest first
        assert "paused 0 agents, 1 exited" in summary, summary
        assert all(s.endswith("no agent to pause in scope") for s in before), before
        (rollout,) = cx.rollouts()
        assert any(e["type"] == "turn_aborted" for e in rollout_events(rollout))
    finally:
        cx.provider.release()
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


class AppServer:
    """`codex app-server` over stdio: JSON-RPC lines, read on a thread."""

    def __init__(self, cx: CodexFleet) -> None:
        self.proc = subprocess.Popen(
            [str(cx.binary), "app-server"],
            cwd=cx.work,
            env=cx.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.messages: list[dict[str, Any]] = []
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.messages.append(json.loads(line))

    def notify(self, method: str) -> None:
        self._write({"jsonrpc": "2.0", "method": method})

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next += 1
        ask = self._next
        self._write({"jsonrpc": "2.0", "id": ask, "method": method, "params": params})
        return self.wait(lambda m: m.get("id") == ask)

    def wait(self, match: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in list(self.messages):
                if match(message):
                    return message
            time.sleep(0.02)
        raise AssertionError(f"no such message from the app-server in {timeout:g} s")

    def _write(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def test_turn_interrupt_through_the_app_server_ends_the_turn(cx: CodexFleet) -> None:
    """research/agent-integration.md §5.3: `turn/interrupt` {threadId, turnId} -> {} and the
    turn completes with status `interrupted`; the rollout records it and the node counts the
    thread's calls."""
    cx.provider.plan(HOLD)
    server = AppServer(cx)
    try:
        init = server.call("initialize", {"clientInfo": {"name": "fleetmeter", "version": "0"}})
        assert "result" in init, init
        server.notify("initialized")
        started = server.call("thread/start", {"cwd": str(cx.work)})
        thread = started["result"]["thread"]["id"]
        turn = server.call(
            "turn/start", {"threadId": thread, "input": [{"type": "text", "text": "go"}]}
        )["result"]["turn"]["id"]
        assert cx.provider.wait_streaming(30)
        answer = server.call("turn/interrupt", {"threadId": thread, "turnId": turn})
        assert answer["result"] == {}
        completed = server.wait(lambda m: m.get("method") == "turn/completed")
        assert completed["params"]["turn"]["id"] == turn
        assert completed["params"]["turn"]["status"] == "interrupted"
        (rollout,) = cx.rollouts()
        assert thread in rollout.name
        last = rollout_events(rollout)[-1]
        assert last["type"] == "turn_aborted" and last["turn_id"] == turn
    finally:
        cx.provider.release()
        server.close()


def sleeping_shells(pid: int) -> list[psutil.Process]:
    return [
        p for p in psutil.Process(pid).children(recursive=True)
        if "sleep 600" in " ".join(p.cmdline())
    ]  # fmt: skip


class SocketClient:
    """An IDE's side of `codex app-server --listen unix://PATH`: JSON-RPC over WebSocket."""

    def __init__(self, path: Path) -> None:
        self.stack = ExitStack()
        self.ws = self.stack.enter_context(unix_connect(str(path), "ws://localhost/"))
        self._next = 0
        self.seen: list[dict[str, Any]] = []
        self.call("initialize", {"clientInfo": {"name": "ide", "version": "0"}})
        self.ws.send(json.dumps({"jsonrpc": "2.0", "method": "initialized"}))

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self._next += 1
        ask = self._next
        self.ws.send(json.dumps({"jsonrpc": "2.0", "id": ask, "method": method, "params": params}))
        return self.wait(lambda m: m.get("id") == ask)

    def wait(self, match: Any, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            self.seen.append(message)
            if match(message):
                return message
        raise AssertionError(f"no such message from the app-server in {timeout:g} s")


@pytest.fixture
def provider_home(tmp_path: Path) -> Iterator[tuple[ModelProvider, CodexFleet]]:
    """The real Codex with its provider, without a hub or node (the node's procs called)."""
    binary = codex()
    with model_provider() as provider:
        home = tmp_path / "codex-home"
        write_codex_config(home, provider)
        work = tmp_path / "work"
        work.mkdir()
        (tmp_path / "home").mkdir()
        yield provider, CodexFleet(tmp_path, None, tmp_path, home, work, provider, [], binary)  # type: ignore[arg-type]


def test_the_node_interrupts_a_turn_in_an_app_server_it_can_reach(
    provider_home: tuple[ModelProvider, CodexFleet],
) -> None:
    provider, cx = provider_home
    sock = cx.tmp / "app-server.sock"
    server = subprocess.Popen(
        [str(cx.binary), "app-server", "--listen", f"unix://{sock}"],
        cwd=cx.work, env=cx.env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        fleet.wait_for(sock.exists, 30, "the app-server's socket")
        ctime = psutil.Process(server.pid).create_time()
        ide = SocketClient(sock)
        thread = ide.call("thread/start", {"cwd": str(cx.work)})["result"]["thread"]["id"]
        first = interrupt(server.pid, ctime)  # a thread with no turn yet: nothing to do
        assert first.ok and first.outcome == "idle", first
        provider.plan(Exec("sleep 600"), HOLD)
        turn = ide.call(
            "turn/start", {"threadId": thread, "input": [{"type": "text", "text": "go"}]}
        )["result"]["turn"]["id"]
        assert provider.wait_streaming(30)
        shells = sleeping_shells(server.pid)
        assert shells, "no tool shell under the app-server"
        result = interrupt(server.pid, ctime)
        assert result.ok and result.outcome == "interrupted", result
        assert f"turn/interrupt over unix://{sock}: 1 of 1 turn(s) ended" in result.detail
        assert "turn_aborted (interrupted)" in result.detail
        fleet.wait_for(lambda: not any(p.is_running() for p in shells), 10, "the shell ended")
        assert "left running" in result.detail  # ended by the node: Codex leaves it (#42717)
        done = ide.wait(lambda m: m.get("method") == "turn/completed")
        assert done["params"]["turn"]["id"] == turn
        assert done["params"]["turn"]["status"] == "interrupted"
        assert server.poll() is None  # the server and its other threads go on
        (rollout,) = cx.rollouts()
        assert thread in rollout.name
        assert any(e["type"] == "turn_aborted" for e in rollout_events(rollout))
        ide.stack.close()
    finally:
        provider.release()
        server.terminate()
        server.wait(10)


def test_an_app_server_on_stdio_is_not_signalled(
    provider_home: tuple[ModelProvider, CodexFleet],
) -> None:
    _, cx = provider_home
    server = AppServer(cx)
    try:
        server.call("initialize", {"clientInfo": {"name": "ide", "version": "0"}})
        result = interrupt(server.proc.pid, psutil.Process(server.proc.pid).create_time())
        assert result.outcome == "refused" and "on stdio" in result.detail, result
        assert server.proc.poll() is None
    finally:
        server.close()
