"""The hub's MCP tools over streamable HTTP on a hub holding 1,000,000 events: p50/p99 of each
tool through the SDK's client, as an agent token (bound to a machine and one of its sessions)
and a viewer token see them (target: p99 under 100 ms per tool, issue 14); and a node's
heartbeat to its ack, which carries the verdicts built from the governor's standings.

    .venv/bin/python -m bench.hub_mcp [--events N] [--calls N]

The store is bench.store's (built once, cached under bench/.work/store/); each run copies it,
adds three budgets (the fleet's day, a machine's day, a per-session one) to hub.toml and starts
a real `fleet-hub serve` on it. Each tool is called `--calls` times on one MCP session (the
client's connection kept), after one warm call.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import pynng
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from bench.api import p99, percentiles
from bench.store import WORK, _api_client, _fleet_hub, build
from hub.config import load_hub_config
from hub.store import DB_FILE
from shared.wire import batch_body, derive_node_key, open_frame, seal
from tests.fleet_harness import HubSetup, child_env, make_hub

TARGET_P99_S = 0.1
BUDGETS = """
[[budgets]]
name = "fleet-day"
scope = "fleet"
period = "day"
basis = "api"
limit = "5000"

[[budgets]]
name = "spark00-day"
scope = "machine=spark00"
period = "day"
basis = "api"
limit = "100"
action = "pause"

[[budgets]]
name = "per-session"
scope = "fleet"
period = "session"
basis = "api"
limit = "20"
action = "pause"
"""
AGENT_TOOLS = ("my_usage", "my_budget", "my_quota", "explain_spend")
VIEWER_TOOLS = (*AGENT_TOOLS, "fleet_summary", "top_spenders")


def _token(config: Path, env: dict[str, str], name: str, *args: str) -> str:
    done = subprocess.run(
        [*_fleet_hub(), "token", "create", name, *args, "--config", str(config)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.split()[-1]


async def _times(url: str, token: str, tools: Sequence[str], calls: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        for tool in tools:
            first = await client.call_tool(tool, {})
            if first.isError:
                raise RuntimeError(f"{tool}: {first.content}")
            samples = []
            for _ in range(calls):
                started = time.perf_counter()
                await client.call_tool(tool, {})
                samples.append(time.perf_counter() - started)
            out[tool] = samples
    return out


def _acks(setup: HubSetup, calls: int) -> list[float]:
    """A node's heartbeat batch to its ack, which carries the verdicts built for it."""
    node = "spark00"
    key = derive_node_key(setup.secret, node)
    samples = []
    with pynng.Req0(recv_timeout=10_000, send_timeout=5000) as sock:
        sock.dial(setup.events, block=True)
        for _ in range(calls):
            frame = seal(key, node, "batch", batch_body("bench-mcp", 1, 0, []))
            started = time.perf_counter()
            sock.send(frame)
            answer = open_frame(sock.recv(), lambda _n: key)
            samples.append(time.perf_counter() - started)
    if not isinstance(answer.body, dict) or "v" not in answer.body:
        raise RuntimeError(f"the ack carries no verdicts: {answer.body}")
    return samples


def measure(cache: Path, calls: int) -> dict[str, dict[str, list[float]]]:
    run = WORK / "mcp-run"
    shutil.rmtree(run, ignore_errors=True)
    setup = make_hub(run)
    setup.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cache, setup.data_dir / DB_FILE)
    with setup.config.open("a") as fh:
        fh.write(BUDGETS)
    config = load_hub_config(setup.config)
    env = child_env(run)
    log = (run / "serve.log").open("wb")  # a pipe nobody reads would fill and stop the hub
    serve = subprocess.Popen(
        [*_fleet_hub(), "serve", "--config", str(setup.config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with _api_client(config, setup.config) as api:
            deadline = time.monotonic() + 300
            while True:  # the figures load after the API listens
                try:
                    rows = api.get("/api/v1/sessions", params={"active_minutes": 60 * 24 * 90})
                    if rows.status_code == 200 and rows.json():
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the hub's sessions did not load in 300 s")
                time.sleep(1)
            mine = next(r for r in rows.json() if r["machine"] == "spark00")
        agent = _token(
            setup.config, env, "bench-agent", "--role", "agent",
            "--machine", "spark00", "--session", mine["key"],
        )  # fmt: skip
        viewer = _token(setup.config, env, "bench-viewer", "--role", "viewer")
        url = f"http://{config.api_listen}/mcp"
        return {
            "agent": asyncio.run(_times(url, agent, AGENT_TOOLS, calls)),
            "viewer": asyncio.run(_times(url, viewer, VIEWER_TOOLS, calls)),
            "node": {"ack with verdicts": _acks(setup, calls)},
        }
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hub_mcp", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args(argv)
    cache = WORK / f"hub-{args.events}.db"
    if not cache.exists():
        print(f"building a store of {args.events:,} events in {cache} (cached for later runs)")
        build(cache, args.events)
    figures = measure(cache, args.calls)
    worst = 0.0
    for role, tools in figures.items():
        for tool, samples in tools.items():
            worst = max(worst, p99(samples))
            print(f"{role:6} {tool:14} {percentiles(samples)}")
    verdict = "met" if worst < TARGET_P99_S else "NOT met"
    print(f"worst p99 {worst * 1000:.1f} ms: target {TARGET_P99_S * 1000:.0f} ms {verdict}")


if __name__ == "__main__":
    main()
