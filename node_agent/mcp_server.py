"""`node-agent mcp`: an MCP server over stdio (the official SDK, 1.x: `FastMCP`) that lets an
agent ask about its own session: `my_usage`, `my_budget`, `my_quota`, `explain_spend`.

Every tool asks the node daemon's query service (answers from memory) and answers in words
and as structured content. The calling session is found from what the agent gives
(`CLAUDE_CODE_SESSION_ID`), else from this process's ancestors through the node's process
inventory (Codex clears its servers' environment), else from the working directory; the answer
says which, or that it cannot tell.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
from mcp.server.fastmcp import FastMCP
from mcp.types import CallToolResult, TextContent

from node_agent.query_client import NodeUnavailable, session_figures
from shared.agent_words import budget_words, who_asks

SESSION_VARIABLES = ("CLAUDE_CODE_SESSION_ID", "FLEETMETER_SESSION_ID")


def ancestors() -> list[int]:
    """Parent, grandparent, ...: a launcher (npx, uvx) may sit between the agent and us."""
    out: list[int] = []
    try:
        process = psutil.Process(os.getpid()).parent()
        while process is not None and process.pid > 1 and len(out) < 16:
            out.append(process.pid)
            process = process.parent()
    except psutil.Error:
        pass
    return out


class SessionAsker:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.session = next((os.environ[v] for v in SESSION_VARIABLES if os.environ.get(v)), None)
        self.cwd = os.getcwd()

    def figures(self) -> dict[str, Any]:
        return session_figures(self.state_dir, self.session, ancestors(), self.cwd)


def _result(words: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=words)], structuredContent=data)


def usage_words(figures: dict[str, Any]) -> str:
    usage = figures.get("usage")
    if not usage:
        return who_asks(figures) + " The node has read no calls of it yet."
    spend = f"${usage['spend']}"
    if not usage["spend_known"]:
        spend += f" plus {usage['unpriced_calls']} calls with no known price"
    tokens = usage["tokens"]
    ratio = usage["cache_read_ratio"]
    roles = ", ".join(f"{k} ${v}" for k, v in usage["spend_by_role"].items()) or "none"
    classes = ", ".join(f"{k} ${v}" for k, v in usage["spend_by_class"].items()) or "none"
    return (
        f"{who_asks(figures)} Spend {spend} over {usage['calls']} calls ({classes}); by role: "
        f"{roles}. Tokens: input {tokens['input']}, output {tokens['output']}, cache read "
        f"{tokens['cache_read']}, cache write {tokens['cache_write_5m'] + tokens['cache_write_1h']}"
        f", reasoning {tokens['reasoning']}. Cache-read ratio "
        f"{'unknown' if ratio is None else f'{ratio:.0%}'}. Run-rate "
        f"${usage['run_rate_per_hour']}/h."
    )


def quota_words(figures: dict[str, Any]) -> str:
    readings = figures.get("quota", [])
    if not readings:
        return who_asks(figures) + " The node has no subscription window readings for its profile."
    parts = []
    for r in readings:
        used = "unknown" if r["used_percent"] is None else f"{r['used_percent']:.0f}%"
        resets = "unknown" if r["resets_at"] is None else f"at epoch {r['resets_at']:.0f}"
        parts.append(f"{r['window']}: {used} used, resets {resets}")
    return who_asks(figures) + " Windows: " + "; ".join(parts) + "."


def explain(usage: dict[str, Any]) -> list[dict[str, str]]:
    """Simple rules over the session's own figures; each says what it saw and what to do."""
    found: list[dict[str, str]] = []
    ratio = usage.get("cache_read_ratio")
    tokens = usage["tokens"]
    writes = tokens["cache_write_5m"] + tokens["cache_write_1h"]
    if usage["calls"] >= 5 and ratio is not None and ratio < 0.5 and writes > tokens["cache_read"]:
        found.append(
            {
                "rule": "cache_thrash",
                "why": f"only {ratio:.0%} of the prompt was read from cache and more was written "
                f"({writes}) than read ({tokens['cache_read']}): the cached prefix keeps changing",
                "hint": "keep the start of the context stable (no edits to early messages, "
                "same tools and system prompt)",
            }
        )
    first, last = usage.get("prompt_first"), usage.get("prompt_last")
    if first and last and usage["calls"] >= 10 and last >= 3 * first:
        found.append(
            {
                "rule": "context_growth",
                "why": f"the prompt grew from ~{first} to ~{last} tokens per call",
                "hint": "compact or start a fresh session for the next task",
            }
        )
    if usage.get("repeats", 0) >= 2:
        found.append(
            {
                "rule": "retries",
                "why": f"{usage['repeats']} calls repeat the one before them within a minute "
                "(same model and token counts): likely retries",
                "hint": "check for a failing tool or an API error loop",
            }
        )
    spend = Decimal(usage["spend"])
    by_model = usage.get("spend_by_model", {})
    if spend > 0 and by_model:
        model, amount = max(by_model.items(), key=lambda kv: Decimal(kv[1]))
        share = Decimal(amount) / spend
        if share >= Decimal("0.8") and any(w in model for w in ("opus", "gpt-5-pro", "o3")):
            found.append(
                {
                    "rule": "model",
                    "why": f"{share:.0%} of the spend is on {model}, a top-priced model",
                    "hint": "use a smaller model (or a subagent on one) for routine steps",
                }
            )
    return found


def hub_findings_words(notes: list[dict[str, Any]]) -> str:
    """The hub detectors' findings on the session, said as such."""
    if not notes:
        return ""
    return " From the hub's detectors: " + " ".join(f"{n['kind']}: {n['text']}." for n in notes)


def _explained(figures: dict[str, Any]) -> CallToolResult:
    usage = figures.get("usage")
    notes = figures.get("hub_findings", [])
    hub = [{"source": "hub detectors", **n} for n in notes]
    if not usage:
        data = {"session": figures["session"], "findings": hub}
        words = who_asks(figures) + " No calls read yet on this node."
        return _result(words + hub_findings_words(notes), data)
    own = [{"source": "node figures", **f} for f in explain(usage)]
    words = who_asks(figures) + f" Spend ${usage['spend']} over {usage['calls']} calls. "
    words += (
        "From this node's own figures: "
        + " ".join(f"{f['rule']}: {f['why']}; {f['hint']}." for f in own)
        if own
        else "This node's own figures show no cache thrash, steady context, no retries, no "
        "top-priced model."
    )
    words += hub_findings_words(notes)
    return _result(words, {"session": figures["session"], "findings": hub + own})


def _picked(figures: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: figures[k] for k in ("session", "identified_by", *keys)}


def build_server(state_dir: Path) -> FastMCP:
    server = FastMCP("fleetmeter", log_level="WARNING")  # stderr is the agent's log
    asker = SessionAsker(state_dir)

    def answer(render: Callable[[dict[str, Any]], CallToolResult]) -> CallToolResult:
        """The node's figures for the calling session, rendered; an error result when the
        node does not answer."""
        try:
            figures = asker.figures()
        except NodeUnavailable as exc:
            words = f"The fleetmeter node does not answer: {exc}."
            return CallToolResult(
                content=[TextContent(type="text", text=words)],
                structuredContent={"error": str(exc)},
                isError=True,
            )
        return render(figures)

    @server.tool(description="This session's spend by class, tokens, calls, cache, run-rate.")
    def my_usage() -> CallToolResult:
        return answer(lambda f: _result(usage_words(f), f))

    @server.tool(description="Every budget that applies to this session and its state.")
    def my_budget() -> CallToolResult:
        return answer(lambda f: _result(budget_words(f), _picked(f, "verdicts", "verdicts_age_s")))

    @server.tool(description="The subscription windows (5-hour, weekly) and their resets.")
    def my_quota() -> CallToolResult:
        return answer(lambda f: _result(quota_words(f), _picked(f, "quota")))

    @server.tool(description="Why this session costs what it does, with what to change.")
    def explain_spend() -> CallToolResult:
        return answer(_explained)

    return server


def serve(state_dir: Path) -> int:
    build_server(state_dir).run("stdio")
    return 0
