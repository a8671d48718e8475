"""The agent's own gates against a real hub and a real node daemon: a fake agent calls
`node-agent hook` the way Claude Code does (stdin JSON, exit status, stdout JSON) while the
budget verdicts, delivered in the hub's signed acks, cross mid-session; the status line reads
Claude Code's documented JSON; the MCP server is driven by the SDK's own stdio client."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from hub.findings import Finding, Severity
from hub.serve import Hub
from node_agent.query_client import session_figures
from node_agent.simulate.fake_agent import launch
from shared.events import Agent
from shared.verdicts import Verdict, VerdictAction, VerdictState
from tests.agent_harness import AgentSide, hook, run
from tests.fleet_harness import (
    ProfileSpec,
    child_env,
    free_port,
    running_hub,
    start_node,
    stop,
    wait_for,
    write_node,
)
from tests.test_source_claude import CWD, SESSION

OTHER = "0f3a9b5c-1111-4c2d-8e7f-aaaaaaaaaaaa"


@dataclass
class Fleet(AgentSide):
    hub: Hub
    node: subprocess.Popen[bytes]
    verdicts: list[Verdict]


def verdict(
    scope: str,
    state: VerdictState,
    action: VerdictAction = VerdictAction.PAUSE,
    spent: str | None = "12.50",
    share: float | None = 1.25,
) -> Verdict:
    return Verdict(
        budget="daily-work",
        scope=scope,
        period="day",
        basis="api-equivalent",
        spent=spent,
        limit="10.00",
        share=share,
        state=state,
        action=action,
        override="fleet-hub budget override daily-work --for 1h",
    )


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    home = tmp_path / "claude"
    (home / "projects").mkdir(parents=True)
    given: list[Verdict] = []
    with running_hub(tmp_path) as (hub, setup):
        assert hub.service is not None
        hub.service.verdicts = lambda node: list(given) if node == "n1" else []
        config = write_node(tmp_path, "n1", setup, [ProfileSpec("work", Agent.CLAUDE_CODE, home)])
        node = start_node(config, tmp_path)
        fleet: Fleet | None = None
        try:
            sock = config.parent / "state" / "query.sock"
            wait_for(sock.exists, 30, "the node's query socket")
            fleet = Fleet(config, home, tmp_path, hub, node, given)
            yield fleet
        finally:
            stop(fleet.node if fleet is not None else node)


def test_a_budget_crossing_mid_session_stops_the_turn(fleet: Fleet) -> None:
    fleet.calls(3)
    assert hook(fleet, "UserPromptSubmit") == {}  # no budget: nothing to say
    # The governor sees the profile near its limit: a warning reaches the agent's context.
    fleet.verdicts[:] = [verdict("profile:work", VerdictState.WARN, share=0.85, spent="8.50")]
    fleet.calls(1, start=3)

    def warned() -> bool:
        answer = hook(fleet, "PostToolBatch")
        return "additionalContext" in answer.get("hookSpecificOutput", {})

    wait_for(warned, 30, "the warning to reach the hook through the hub's ack", every=0.5)
    note = hook(fleet, "PostToolBatch")["hookSpecificOutput"]["additionalContext"]
    assert "daily-work" in note and "$8.50 of $10.00" in note
    assert "continue" not in hook(fleet, "PostToolBatch")
    # Then this session's budget is exhausted with a pause action: the next model call stops.
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.EXHAUSTED)]
    fleet.calls(1, start=4)
    wait_for(
        lambda: hook(fleet, "PostToolBatch").get("continue") is False, 30, "the stop", every=0.5
    )
    for event in ("UserPromptSubmit", "PostToolBatch", "PreToolUse"):
        answer = hook(fleet, event)
        assert answer["continue"] is False, event
        reason = answer["stopReason"]
        assert "daily-work" in reason and "$12.50 of $10.00" in reason
        assert "fleet-hub budget override daily-work --for 1h" in reason
    # Events that cannot gate a model call are answered harmlessly.
    assert hook(fleet, "SessionStart") == {}
    assert hook(fleet, "PostToolUse") == {}
    # Another session on the same machine is not stopped by this session's budget.
    assert hook(fleet, "UserPromptSubmit", OTHER) == {}


def test_an_alert_only_budget_never_stops(fleet: Fleet) -> None:
    fleet.verdicts[:] = [verdict("machine:n1", VerdictState.EXHAUSTED, VerdictAction.ALERT)]
    fleet.calls(2)
    wait_for(
        lambda: "hookSpecificOutput" in hook(fleet, "UserPromptSubmit"), 30, "the verdict", 0.5
    )
    assert "continue" not in hook(fleet, "UserPromptSubmit")


def test_a_node_that_does_not_answer_lets_through_or_blocks_as_configured(
    fleet: Fleet,
) -> None:
    stop(fleet.node)
    answer = hook(fleet, "UserPromptSubmit")
    assert "continue" not in answer
    assert "does not answer" in answer["systemMessage"] and "let through" in answer["systemMessage"]
    blocked = hook(fleet, "UserPromptSubmit", SESSION, "--on-node-down", "block")
    assert blocked["continue"] is False and "does not answer" in blocked["stopReason"]


def test_bad_hook_input_is_said_and_let_through(fleet: Fleet) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "node_agent.entry", "hook", "PreToolUse"],
        input=b"not json",
        capture_output=True,
        env=child_env(fleet.tmp),
        timeout=30,
        check=False,
    )
    # 1 is Claude Code's non-blocking error (2 would block the tool).
    assert done.returncode == 1
    assert b"not JSON" in done.stderr and b"Traceback" not in done.stderr


def test_the_query_socket_is_the_node_users_only(fleet: Fleet) -> None:
    sock = fleet.config.parent / "state" / "query.sock"
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600


STATUS_INPUT: dict[str, Any] = {
    "cwd": CWD,
    "session_id": SESSION,
    "transcript_path": "/path/to/transcript.jsonl",
    "model": {"id": "claude-opus-5", "display_name": "Opus"},
    "workspace": {"current_dir": CWD, "project_dir": CWD, "added_dirs": []},
    "version": "2.1.90",
    "cost": {"total_cost_usd": 0.01234, "total_duration_ms": 45000},
    "context_window": {"total_input_tokens": 15500, "context_window_size": 200000},
    "rate_limits": {
        "five_hour": {"used_percentage": 23.5, "resets_at": 1738425600},
        "seven_day": {"used_percentage": 41.2, "resets_at": 1738857600},
    },
}


def test_statusline_reads_claude_codes_json(fleet: Fleet) -> None:
    fleet.verdicts[:] = [verdict("profile:work", VerdictState.WARN, share=0.6, spent="6.00")]
    fleet.calls(4)

    def line() -> str:
        done = run(fleet, "statusline", stdin=STATUS_INPUT)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode().strip()

    wait_for(lambda: "daily-work" in line() and "session $" in line(), 30, "figures", 0.5)
    shown = line()
    assert "\n" not in shown
    assert "daily-work 40% left" in shown
    assert "5h 24%" in shown  # Claude Code's own reading: 23.5 rounds to 24
    assert "cache 9" in shown  # 48811 of 51025 prompt tokens read from cache: 96%
    stop(fleet.node)
    assert "~$0.01 (Claude Code's estimate)" in line() and "node not answering" in line()


def mcp_params(fleet: Fleet) -> StdioServerParameters:
    """`node-agent mcp` as Claude Code starts it (its session id in the environment)."""
    env = child_env(fleet.tmp)
    env["CLAUDE_CODE_SESSION_ID"] = SESSION
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "node_agent.entry", "mcp", "--config", str(fleet.config)],
        env=env,
    )


async def test_mcp_tools_over_stdio_with_the_sdk_client(fleet: Fleet) -> None:
    fleet.verdicts[:] = [verdict("profile:work", VerdictState.WARN, share=0.85, spent="8.50")]
    fleet.calls(6)
    params = mcp_params(fleet)
    async with stdio_client(params) as (read, write_), ClientSession(read, write_) as client:
        await client.initialize()
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"my_usage", "my_budget", "my_quota", "explain_spend"} <= names
        deadline = time.monotonic() + 30
        while True:
            usage = await client.call_tool("my_usage", {})
            data = usage.structuredContent or {}
            budget = await client.call_tool("my_budget", {})
            if (data.get("usage") or {}).get("calls") == 6 and (budget.structuredContent or {}).get(
                "verdicts"
            ):
                break
            assert time.monotonic() < deadline, data
            await anyio.sleep(0.5)
        assert not usage.isError
        assert data["session"] == SESSION and data["identified_by"] == "given by the agent"
        assert data["usage"]["tokens"]["cache_read"] == 6 * 48811
        assert "Spend $" in usage.content[0].text  # type: ignore[union-attr]
        verdicts = (budget.structuredContent or {})["verdicts"]
        assert verdicts[0]["budget"] == "daily-work" and verdicts[0]["spent"] == "8.50"
        assert "Override: fleet-hub budget override" in budget.content[0].text  # type: ignore[union-attr]
        quota = await client.call_tool("my_quota", {})
        assert not quota.isError and "quota" in (quota.structuredContent or {})
        explained = await client.call_tool("explain_spend", {})
        assert "findings" in (explained.structuredContent or {})


async def test_explain_spend_says_the_hub_detectors_findings_and_where_each_came_from(
    fleet: Fleet,
) -> None:
    sink = fleet.hub.session_findings
    assert sink is not None  # what the detectors raise into, beside the journal and outbox
    for session, text in ((SESSION, "repeated Bash 'npm test' 4 times"), (OTHER, "not mine")):
        sink.raise_finding(
            Finding(
                id=f"retry_loop:{session}",
                kind="retry_loop",
                scope=f"machine=n1,profile=work,session={session}",
                severity=Severity.WARNING,
                start=time.time(),
                text=f"session {session[:8]} on n1 {text}",
            )
        )
    fleet.calls(12)  # a steady session by the node's own rules
    state = fleet.config.parent / "state"
    wait_for(
        lambda: bool(session_figures(state, SESSION, [], None)["hub_findings"]), 30, "the notes"
    )
    params = mcp_params(fleet)
    async with stdio_client(params) as (read, write_), ClientSession(read, write_) as client:
        await client.initialize()
        explained = await client.call_tool("explain_spend", {})
    words = explained.content[0].text  # type: ignore[union-attr]
    assert "From the hub's detectors: retry_loop: session 7b1d2c9e on n1 repeated Bash" in words
    assert "not mine" not in words
    findings = (explained.structuredContent or {})["findings"]
    came = {(f["source"], f.get("kind") or f.get("rule")) for f in findings}
    assert ("hub detectors", "retry_loop") in came
    assert all(f["source"] in ("hub detectors", "node figures") for f in findings)


async def test_mcp_says_when_it_cannot_tell_the_session(fleet: Fleet, tmp_path: Path) -> None:
    env = child_env(fleet.tmp)
    env.pop("CLAUDE_CODE_SESSION_ID", None)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "node_agent.entry", "mcp", "--config", str(fleet.config)],
        env=env,
        cwd=str(tmp_path),
    )
    async with stdio_client(params) as (read, write_), ClientSession(read, write_) as client:
        await client.initialize()
        usage = await client.call_tool("my_usage", {})
        assert (usage.structuredContent or {})["session"] is None
        assert "cannot tell which session" in usage.content[0].text  # type: ignore[union-attr]


def test_the_node_finds_the_session_from_the_callers_agent_process(fleet: Fleet) -> None:
    """Codex clears its MCP servers' environment: the caller is found through the node's
    process inventory (an ancestor pid that is an agent with an open session)."""
    agent = launch(Agent.CLAUDE_CODE, fleet.home, "--pace", "0.3", "--project", CWD)
    try:
        state = fleet.config.parent / "state"

        def found() -> dict[str, Any]:
            return session_figures(state, None, [os.getpid(), agent.pid])

        wait_for(lambda: found()["session"] == agent.session_id, 30, "the agent's session", 0.5)
        figures = found()
        assert figures["identified_by"] == f"parent process {agent.pid} (claude-code)"
    finally:
        agent.destroy()


def test_verdicts_come_back_after_the_node_is_killed_with_minus_9(fleet: Fleet) -> None:
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.EXHAUSTED)]
    fleet.calls(2)
    wait_for(lambda: hook(fleet, "PostToolBatch").get("continue") is False, 30, "stop", 0.5)
    stop(fleet.node, signal.SIGKILL)
    assert "let through" in hook(fleet, "PostToolBatch")["systemMessage"]  # said, not silent
    fleet.node = start_node(fleet.config, fleet.tmp)
    wait_for(lambda: hook(fleet, "PostToolBatch").get("continue") is False, 30, "stop again", 0.5)


def test_a_failing_verdict_provider_costs_the_verdicts_not_the_ack(fleet: Fleet) -> None:
    def broken(node: str) -> list[Verdict]:
        raise RuntimeError("the governor is down")

    assert fleet.hub.service is not None
    fleet.hub.service.verdicts = broken
    before = fleet.hub.service.events_in
    fleet.calls(2)
    wait_for(lambda: fleet.hub.service.events_in >= before + 2, 30, "the batch stored")  # type: ignore[union-attr]
    assert hook(fleet, "UserPromptSubmit") == {}


def test_quota_has_the_status_files_reading_for_the_sessions_profile(fleet: Fleet) -> None:
    until = time.time() + 3600
    stamp = datetime.now(UTC).isoformat()
    reset = datetime.fromtimestamp(until, UTC).isoformat()
    (fleet.config.parent / "profiles.json").write_bytes(
        orjson.dumps(
            {
                "version": 1,
                "updated_at": stamp,
                "active": {"claude-code": "work"},
                "limited": {"work": {"until": reset, "reason": "5h window", "since": stamp}},
            }
        )
    )
    fleet.calls(1)
    state = fleet.config.parent / "state"

    def limited() -> list[dict[str, Any]]:
        quota = session_figures(state, SESSION)["quota"]
        return [q for q in quota if q.get("state") == "rate_limited"]

    wait_for(lambda: bool(limited()), 30, "the status file's limit in the quota", 0.5)
    reading = limited()[0]
    assert reading["profile"] == "work" and reading["reason"] == "5h window"
    assert abs(reading["resets_at"] - until) < 1


def restart_with_hook_port(fleet: Fleet) -> tuple[int, Path]:
    """The node restarted with `hook_port` set: the port, and the token file it then writes."""
    stop(fleet.node)
    port = free_port()
    text = fleet.config.read_text()
    fleet.config.write_text(text.replace("\n", f"\nhook_port = {port}\n", 1))
    fleet.node = start_node(fleet.config, fleet.tmp)
    token_file = fleet.config.parent / "state" / "hook.token"
    wait_for(token_file.exists, 30, "the hook token")
    return port, token_file


def test_claude_codes_http_hook_type_asks_the_node_on_its_port_with_the_token(
    fleet: Fleet,
) -> None:
    port, token_file = restart_with_hook_port(fleet)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    url = f"http://127.0.0.1:{port}/hook/UserPromptSubmit"
    body = {"session_id": SESSION, "cwd": CWD, "hook_event_name": "UserPromptSubmit"}

    def post(headers: dict[str, str]) -> httpx.Response:
        return httpx.post(url, json=body, headers=headers, timeout=10)

    wait_for(lambda: _answers(post, token), 30, "the hook port")
    refused = post({})
    assert refused.status_code == 401 and "token" in refused.json()["error"]
    assert post({"Authorization": "Bearer nope"}).status_code == 401
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.EXHAUSTED)]
    fleet.calls(1)

    def stopped() -> bool:
        answer = post({"Authorization": f"Bearer {token}"})
        return answer.status_code == 200 and answer.json().get("continue") is False

    wait_for(stopped, 30, "the stop through the http hook", 0.5)


def _answers(post: Any, token: str) -> bool:
    try:
        return bool(post({"Authorization": f"Bearer {token}"}).status_code == 200)
    except httpx.HTTPError:
        return False
