"""The agent's own gates, timed: p50/p99 of `node-agent hook` and `node-agent statusline`
as Claude Code runs them (a process per call, stdin JSON), of the node's query service alone
(what Claude Code's `http` hook type would cost, without a process start), of a bare Python
start for comparison, and of an MCP tool call through the SDK's stdio client.

A real hub (in-process) and a real node daemon on loopback, a session of `--calls` calls read
by the node, and `--verdicts` verdicts in every ack.

    python -m bench.agentif [--calls 2000] [--runs 100] [--verdicts 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from node_agent.query_client import hook_answer, session_figures
from shared.events import Agent
from shared.verdicts import Verdict, VerdictAction, VerdictState
from tests import fleet_harness as fh
from tests.test_source_claude import CWD, SESSION, assistant, main_file, write

NODE_AGENT = Path(sys.executable).with_name("node-agent")


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def say(what: str, samples: list[float]) -> None:
    ms = [s * 1000 for s in samples]
    print(f"{what:<44} p50 {statistics.median(ms):6.1f} ms  p99 {p99(ms):6.1f} ms  (n={len(ms)})")


def timed_process(command: list[str], stdin: bytes, env: dict[str, str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, input=stdin, capture_output=True, env=env, check=True)
        out.append(time.perf_counter() - start)
    return out


async def mcp_calls(config: Path, env: dict[str, str], runs: int) -> list[float]:
    params = StdioServerParameters(
        command=str(NODE_AGENT), args=["mcp", "--config", str(config)], env=env
    )
    out = []
    async with stdio_client(params) as (read, write_), ClientSession(read, write_) as client:
        await client.initialize()
        for _ in range(runs):
            start = time.perf_counter()
            await client.call_tool("my_usage", {})
            out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.agentif")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--verdicts", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name, fh.running_hub(Path(name)) as (hub, setup):
        tmp = Path(name)
        home = tmp / "claude"
        (home / "projects").mkdir(parents=True)
        verdicts = [
            Verdict(
                f"b{i}",
                f"profile:p{i}",
                "day",
                "api-equivalent",
                "1.00",
                "2.00",
                0.5,
                VerdictState.OK,
                VerdictAction.PAUSE,
                "ask ops",
            )
            for i in range(args.verdicts - 1)
        ]
        verdicts.append(
            Verdict(
                "daily",
                "profile:work",
                "day",
                "api-equivalent",
                "9.00",
                "10.00",
                0.9,
                VerdictState.WARN,
                VerdictAction.PAUSE,
                "ask ops",
            )
        )
        assert hub.service is not None
        hub.service.verdicts = lambda node: verdicts
        config = fh.write_node(tmp, "n1", setup, [fh.ProfileSpec("work", Agent.CLAUDE_CODE, home)])
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        write(main_file(home), [assistant(f"m{i}", f"r{i}", ts=now) for i in range(args.calls)])
        node = fh.start_node(config, tmp)
        state = config.parent / "state"
        try:
            fh.wait_for(
                lambda: (
                    (state / "query.sock").exists()
                    and ((session_figures(state, SESSION).get("usage") or {}).get("calls"))
                    == args.calls
                    and bool(session_figures(state, SESSION)["verdicts"])
                ),
                120,
                "the node to read the session and hear the verdicts",
            )
            env = fh.child_env(tmp)
            hook_in = orjson.dumps(
                {
                    "session_id": SESSION,
                    "cwd": CWD,
                    "hook_event_name": "PostToolBatch",
                    "tool_calls": [],
                }
            )
            status_in = orjson.dumps({"session_id": SESSION, "cwd": CWD})
            print(f"session of {args.calls} calls, {args.verdicts} verdicts per ack")
            say(
                "python -c pass (a bare interpreter start)",
                timed_process([sys.executable, "-c", "pass"], b"", env, args.runs),
            )
            say(
                "node-agent hook PostToolBatch (process)",
                timed_process(
                    [str(NODE_AGENT), "hook", "PostToolBatch", "--state-dir", str(state)],
                    hook_in,
                    env,
                    args.runs,
                ),
            )
            say(
                "node-agent statusline (process)",
                timed_process(
                    [str(NODE_AGENT), "statusline", "--state-dir", str(state)],
                    status_in,
                    env,
                    args.runs,
                ),
            )
            queries = []
            for _ in range(args.runs * 10):
                start = time.perf_counter()
                hook_answer(state, "PostToolBatch", hook_in)
                queries.append(time.perf_counter() - start)
            say("query service alone (as an http hook would)", queries)
            say("MCP my_usage (SDK stdio client)", asyncio.run(mcp_calls(config, env, args.runs)))
        finally:
            fh.stop(node)


if __name__ == "__main__":
    main()
