"""`node-agent hook EVENT` and `node-agent statusline`: the small programs Claude Code (and
Gemini CLI, Codex CLI, fleetmeter's OpenCode plugin) run synchronously, so they import little
and ask the node over its unix socket.

A hook never breaks the agent: a bad input or an unreadable config is said on stderr and the
call goes on (exit 1 is Claude Code's "non-blocking error"; exit 2 would block). When the node
does not answer, the call is let through and the output says so, unless
`--on-node-down block` was installed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from node_agent.query_client import NodeUnavailable, hook_answer, session_figures

# Imports are kept to the standard library's lightest: each one is start-up time inside the
# agent's loop (`--state-dir`, written by the installers, spares reading the node config).
MAX_INPUT: Final = 8 << 20  # PostToolBatch carries whole tool results
GATED: Final = frozenset({"UserPromptSubmit", "PostToolBatch", "PreToolUse", "BeforeModel"})
HOOK_AGENTS: Final = ("claude-code", "gemini", "codex", "opencode")


class _NoConfig(Exception):
    pass


def _state_dir(state_dir: Path | None, config: Path | None) -> Path:
    if state_dir is not None:
        return state_dir
    from shared.config import ConfigError, default_state_dir, find_config, load_config

    path = config or find_config()
    if path is None:
        return default_state_dir()
    try:
        return Path(load_config(path).state_dir)
    except ConfigError as exc:
        raise _NoConfig(str(exc)) from None


def node_down(event: str, why: str, block: bool) -> dict[str, Any]:
    """The answer when the node cannot be asked: let through (default) or block, said either
    way."""
    if block and event in GATED:
        return {
            "continue": False,
            "stopReason": f"fleetmeter: the node does not answer ({why}); blocked as configured",
        }
    return {"systemMessage": f"fleetmeter: the node does not answer ({why}); let through"}


def _read_input() -> dict[str, Any]:
    data = sys.stdin.buffer.read(MAX_INPUT + 1)
    if len(data) > MAX_INPUT:
        raise ValueError(f"the input is larger than {MAX_INPUT} bytes")
    try:
        value = json.loads(data or b"{}")
    except ValueError as exc:
        raise ValueError(f"the input is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValueError("the input is not a JSON object")
    return value


def for_agent(answer: dict[str, Any], agent: str, event: str) -> dict[str, Any]:
    """Claude Code's answer shape, said the way the other agents read it."""
    if agent == "codex":
        return _for_codex(answer, event)
    if agent not in ("gemini", "opencode"):
        return answer
    # Gemini CLI (BeforeModel) and fleetmeter's OpenCode plugin read the same shape.
    if answer.get("continue") is False:
        reason = str(answer.get("stopReason", "fleetmeter"))
        return {"decision": "deny", "reason": reason, "continue": False, "stopReason": reason}
    context = answer.get("hookSpecificOutput", {}).get("additionalContext")
    if context:
        return {"systemMessage": context}
    return {k: v for k, v in answer.items() if k == "systemMessage"}


def _for_codex(answer: dict[str, Any], event: str) -> dict[str, Any]:
    """Codex CLI: `decision: block` stops a prompt; a tool is refused by `permissionDecision:
    deny` (Codex rejects `continue: false` on PreToolUse and would run the tool)."""
    if answer.get("continue") is False:
        reason = str(answer.get("stopReason", "fleetmeter"))
        if event == "PreToolUse":
            return {
                "hookSpecificOutput": {
                    "hookEventName": event,
                    "permissionDecision": "deny",
                    "permissionDecisionReason": reason,
                }
            }
        return {"decision": "block", "reason": reason}
    if event == "PreToolUse":
        # A warning already reached the turn's context at UserPromptSubmit; once per turn.
        return {k: v for k, v in answer.items() if k == "systemMessage"}
    return answer


def _emit(answer: dict[str, Any]) -> None:
    if answer:
        sys.stdout.write(json.dumps(answer) + "\n")


def run_hook(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="node-agent hook")
    parser.add_argument("event")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--agent", choices=HOOK_AGENTS, default="claude-code")
    parser.add_argument("--on-node-down", choices=("allow", "block"), default="allow")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        body = _read_input()
    except (OSError, ValueError) as exc:
        print(f"node-agent hook {args.event}: {exc}; let through", file=sys.stderr)
        return 1
    block = args.on_node_down == "block"
    try:
        state_dir = _state_dir(args.state_dir, args.config)
        answer = hook_answer(state_dir, args.event, json.dumps(body).encode(), args.timeout)
    except (_NoConfig, NodeUnavailable) as exc:
        answer = node_down(args.event, str(exc), block)
    _emit(for_agent(answer, args.agent, args.event))
    return 0


def _percent(value: object) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.0f}%"
    return None


def status_line(given: dict[str, Any], figures: dict[str, Any] | None, why: str | None) -> str:
    """One line: session spend, the tightest budget's remaining share, the 5-hour window's
    reading, the cache-read ratio."""
    parts: list[str] = []
    usage = (figures or {}).get("usage") or {}
    if usage:
        spend = f"${usage['spend']}" if usage.get("spend_known") else f"${usage['spend']}+?"
        parts.append(f"session {spend}")
    else:
        cost = (
            given.get("cost", {}).get("total_cost_usd")
            if isinstance(given.get("cost"), dict)
            else None
        )
        if isinstance(cost, (int, float)):
            parts.append(f"session ~${cost:.2f} (Claude Code's estimate)")
    shares = [v for v in (figures or {}).get("verdicts", []) if v.get("share") is not None]
    if shares:
        tight = max(shares, key=lambda v: v["share"])
        left = max(0.0, 1.0 - float(tight["share"]))
        parts.append(f"{tight['budget']} {left:.0%} left")
    five = None
    limits = given.get("rate_limits")
    if isinstance(limits, dict) and isinstance(limits.get("five_hour"), dict):
        five = _percent(limits["five_hour"].get("used_percentage"))
    if five is None:
        for reading in (figures or {}).get("quota", []):
            if reading.get("window") == "5h":
                five = _percent(reading.get("used_percent"))
    if five is not None:
        parts.append(f"5h {five}")
    ratio = usage.get("cache_read_ratio")
    if isinstance(ratio, (int, float)):
        parts.append(f"cache {ratio:.0%}")
    if why is not None:
        parts.append("node not answering")
    return "fleetmeter: " + (" · ".join(parts) if parts else "no figures yet")


def run_statusline(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="node-agent statusline")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args(argv)
    try:
        given = _read_input()
    except (OSError, ValueError):
        given = {}  # still a line: Claude Code blanks it on a non-zero exit
    session = given.get("session_id")
    cwd = given.get("cwd")
    figures: dict[str, Any] | None = None
    why: str | None = None
    try:
        figures = session_figures(
            _state_dir(args.state_dir, args.config),
            session if isinstance(session, str) else None,
            cwd=cwd if isinstance(cwd, str) else None,
            timeout=args.timeout,
        )
    except (_NoConfig, NodeUnavailable) as exc:
        why = str(exc)
    print(status_line(given, figures, why))
    return 0
