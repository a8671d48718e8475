"""The hub's MCP server over streamable HTTP at /mcp of a real `fleet-hub serve`, driven by the
SDK's own client: 401 without a token, tools listed per role (an agent token never gets
fleet_summary or top_spenders), an agent token answered only for what it is bound to."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from tests.api_harness import ServedHub, call, little_fleet

AGENT_TOOLS = {"my_usage", "my_budget", "my_quota", "explain_spend"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedHub]:
    with little_fleet(tmp_path) as hub:
        hub.send("spark02", [call("spark02", n, model="claude-opus-4-1") for n in range(10, 14)])
        made = hub.cli(
            "token", "create", "t-agent-session", "--role", "agent",
            "--machine", "spark01", "--session", "sess-spark01",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        hub.tokens["agent-session"] = made.stdout.split()[-1]
        yield hub


async def session_for(
    served: ServedHub, role: str, calls: list[tuple[str, dict[str, Any]]]
) -> tuple[set[str], list[CallToolResult]]:
    """The tools a token is listed and the answers to `calls`, through the SDK's client."""
    url = served.url + "/mcp"
    async with (
        httpx.AsyncClient(headers=served.headers(role), timeout=30) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as client,
    ):
        await client.initialize()
        names = {t.name for t in (await client.list_tools()).tools}
        answers = [await client.call_tool(name, args) for name, args in calls]
    return names, answers


def text(result: CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


def test_without_a_token_mcp_is_refused_in_json(served: ServedHub) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    for headers in ({}, {"Authorization": "Bearer fmt_not-a-token"}):
        reply = httpx.post(served.url + "/mcp", json=hello, headers=headers, timeout=10)
        assert reply.status_code == 401
        assert "token" in reply.json()["error"]


async def test_an_agent_token_gets_its_own_tools_and_only_its_scope(served: ServedHub) -> None:
    names, (usage, fleet, other) = await session_for(
        served,
        "agent-session",
        [("my_usage", {}), ("fleet_summary", {}), ("my_usage", {"session": "sess-spark02"})],
    )
    assert names == AGENT_TOOLS  # never fleet_summary nor top_spenders
    assert not usage.isError and "Session sess-spark01 on spark01" in text(usage)
    rows = (usage.structuredContent or {})["sessions"]
    assert [r["key"] for r in rows] == ["sess-spark01"] and rows[0]["main"]["calls"] == 3
    assert fleet.isError  # not a tool of this server
    assert other.isError and "bound to session sess-spark01" in text(other)


async def test_a_machine_bound_agent_token_sees_its_machine_only(served: ServedHub) -> None:
    names, (usage, budget, quota, explained) = await session_for(
        served, "agent", [("my_usage", {}), ("my_budget", {}), ("my_quota", {}),
                          ("explain_spend", {})],
    )  # fmt: skip
    assert names == AGENT_TOOLS
    machines = [r["machine"] for r in (usage.structuredContent or {})["machines"]]
    assert machines == ["spark01"], machines
    assert "spark02" not in text(usage)
    assert not budget.isError and "No budget applies" in text(budget)
    assert not quota.isError and not explained.isError


async def test_a_viewer_token_also_gets_the_fleet(served: ServedHub) -> None:
    names, (summary, top) = await session_for(
        served, "viewer", [("fleet_summary", {}), ("top_spenders", {"limit": 5})]
    )
    assert names == AGENT_TOOLS | {"fleet_summary", "top_spenders"}
    assert not summary.isError and "API-equivalent $" in text(summary)
    ranked = (top.structuredContent or {})["sessions"]
    assert [r["session"] for r in ranked] == ["sess-spark02", "sess-spark01"]  # opus costs more
    assert all("." in r["api_equivalent"] for r in ranked)  # exact decimal strings
