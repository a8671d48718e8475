"""The `node-agent` subcommands that set fleetmeter into the agents themselves: `hooks`,
`statusline install|remove`, `mcp` (and `mcp install|remove`). `hook EVENT` and `statusline`
run before this parser (node_agent.entry); they are listed here for `--help`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from node_agent.agent_config import (
    CLAUDE_HOOK_EVENTS,
    CODEX_HOOK_EVENTS,
    GEMINI_HOOK_EVENTS,
    HOOK_TIMEOUT_S,
    MCP_AGENTS,
    TOKEN_VARIABLE,
    claude_settings,
    codex_hooks_file,
    command_hook,
    gemini_settings,
    node_agent_command,
    set_hooks,
    set_managed_codex_hooks,
    set_mcp,
    set_statusline,
)
from node_agent.agent_gates import HOOK_AGENTS
from node_agent.opencode_gate import install_plugin, plugin_path, plugin_text, remove_plugin
from node_agent.query_client import TOKEN_NAME
from shared.config import ConfigError, default_state_dir, find_config, load_config


def add_agent_commands(sub: Any) -> None:
    sub.add_parser(
        "hook",
        help="answer an agent's hook (stdin JSON) from the node's budget verdicts",
        description="node-agent hook EVENT [--agent claude-code|gemini|codex|opencode] "
        "[--on-node-down allow|block] [--config PATH]",
    )
    hooks = sub.add_parser("hooks", help="install or remove the budget gate hooks in an agent")
    hooks.add_argument("action", choices=("install", "remove"))
    hooks.add_argument("--scope", choices=("user", "project"), default="user")
    hooks.add_argument("--agent", choices=HOOK_AGENTS, default="claude-code")
    hooks.add_argument(
        "--managed",
        type=Path,
        metavar="FILE",
        help="Codex: write the hooks into this admin requirements.toml (trusted by policy)",
    )
    hooks.add_argument(
        "--on-node-down",
        choices=("allow", "block"),
        default="allow",
        help="what the hook does when the node does not answer (default: allow, and say so)",
    )
    hooks.add_argument("--config", type=Path, help="node config file, written into the hook")
    hooks.add_argument(
        "--http",
        action="store_true",
        help="Claude Code `http` hooks to the node's hook_port (no process per call; the "
        f"token from ${TOKEN_VARIABLE})",
    )
    status = sub.add_parser("statusline", help="Claude Code's status line (install|remove)")
    status.add_argument("action", choices=("install", "remove"))
    status.add_argument("--scope", choices=("user", "project"), default="user")
    status.add_argument("--force", action="store_true", help="replace another statusLine")
    status.add_argument("--config", type=Path, help="node config file, written into the command")
    mcp = sub.add_parser("mcp", help="the MCP server over stdio (install|remove: agent config)")
    mcp.add_argument("action", nargs="?", choices=("install", "remove"))
    mcp.add_argument("--agent", choices=MCP_AGENTS, help="the agent whose config to edit")
    mcp.add_argument("--config", type=Path, help="node config file")


def _extra(args: argparse.Namespace) -> list[str]:
    return ["--config", str(Path(args.config).resolve())] if args.config else []


def _gate_extra(args: argparse.Namespace) -> list[str]:
    """The node's state dir, resolved now: the hook then reads no config on every call."""
    return ["--state-dir", str(_state_dir(args.config).resolve())]


def cmd_hooks(args: argparse.Namespace) -> int:
    if args.managed is not None and args.agent != "codex":
        raise ConfigError("--managed is for Codex only (--agent codex)")
    if args.agent == "codex":
        return _codex_hooks(args)
    if args.agent == "opencode":
        return _opencode_plugin(args)
    project = Path.cwd()
    install = args.action == "install"
    base = node_agent_command()
    extra = _gate_extra(args)
    events: tuple[str, ...]
    if args.agent == "gemini":
        path = gemini_settings(args.scope, project)
        extra += ["--agent", "gemini"]
        events, timeout = GEMINI_HOOK_EVENTS, HOOK_TIMEOUT_S * 1000  # Gemini counts in ms
    else:
        path = claude_settings(args.scope, project)
        events, timeout = CLAUDE_HOOK_EVENTS, HOOK_TIMEOUT_S
    if args.on_node_down == "block":
        extra += ["--on-node-down", "block"]
    port = _http_port(args) if args.http and install else None
    changed = set_hooks(path, events, base, extra, timeout, install, port)
    verb = "installed in" if install else "removed from"
    print(f"hooks {', '.join(events)} {verb} {path}" + ("" if changed else " (already so)"))
    return 0


def _hook_extra(args: argparse.Namespace) -> list[str]:
    """What every installed hook command adds after `hook EVENT`."""
    extra = [*_gate_extra(args), "--agent", args.agent]
    return extra + (["--on-node-down", "block"] if args.on_node_down == "block" else [])


def _codex_hooks(args: argparse.Namespace) -> int:
    if args.http:
        raise ConfigError("--http is not for Codex: it runs command hooks only")
    install = args.action == "install"
    events, base = CODEX_HOOK_EVENTS, node_agent_command()
    extra = _hook_extra(args)
    if args.managed is not None:
        path = Path(args.managed)
        handlers = {e: command_hook(base, e, extra, HOOK_TIMEOUT_S) for e in events}
        changed = set_managed_codex_hooks(path, events, handlers, install)
    else:
        path = codex_hooks_file(args.scope, Path.cwd())
        changed = set_hooks(path, events, base, extra, HOOK_TIMEOUT_S, install, matcher=None)
    verb = "installed in" if install else "removed from"
    print(f"hooks {', '.join(events)} {verb} {path}" + ("" if changed else " (already so)"))
    if install and args.managed is None:
        print(
            "Codex runs these hooks only once trusted: open /hooks in Codex and trust them "
            "(or install them as managed hooks: --managed /etc/codex/requirements.toml)"
        )
    return 0


def _opencode_plugin(args: argparse.Namespace) -> int:
    path = plugin_path(args.scope, Path.cwd())
    if args.action == "remove":
        changed = remove_plugin(path)
        print(f"OpenCode plugin {path} " + ("removed" if changed else "was not there"))
        return 0
    http = None
    if args.http:
        port = _http_port(args)
        http = (port, (_state_dir(args.config) / TOKEN_NAME).resolve())
    extra = _hook_extra(args)
    text = plugin_text(node_agent_command(), extra, args.on_node_down == "block", http)
    changed = install_plugin(path, text)
    print(f"OpenCode plugin written to {path}" + ("" if changed else " (already so)"))
    return 0


def _http_port(args: argparse.Namespace) -> int:
    if args.agent not in ("claude-code", "opencode"):
        raise ConfigError(f"--http is for Claude Code and OpenCode ({args.agent} runs commands)")
    path = args.config or find_config()
    config = load_config(path) if path else None
    if config is None or config.hook_port is None:
        raise ConfigError("--http needs hook_port in the node config (then restart the node)")
    token = Path(config.state_dir) / TOKEN_NAME
    if args.agent == "claude-code":
        print(f"the hooks send ${TOKEN_VARIABLE}: export it in Claude Code's env from {token}")
    return config.hook_port


def cmd_statusline(args: argparse.Namespace) -> int:
    path = claude_settings(args.scope, Path.cwd())
    install = args.action == "install"
    changed = set_statusline(path, node_agent_command(), _gate_extra(args), install, args.force)
    verb = "installed in" if install else "removed from"
    print(f"status line {verb} {path}" + ("" if changed else " (already so)"))
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    if args.action is None:
        from node_agent.mcp_server import serve  # the SDK's imports only for the server

        return serve(_state_dir(args.config))
    if args.agent is None:
        print(f"node-agent mcp {args.action}: say which agent: --agent NAME", file=sys.stderr)
        return 2
    install = args.action == "install"
    path, changed = set_mcp(args.agent, node_agent_command(), _extra(args), install)
    verb = "written into" if install else "removed from"
    print(f"MCP server 'fleetmeter' {verb} {path}" + ("" if changed else " (already so)"))
    return 0


def _state_dir(config: Path | None) -> Path:
    path = config or find_config()
    if path is None:
        return default_state_dir()
    return Path(load_config(path).state_dir)  # a bad config: ConfigError, exit 2


AGENT_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "hooks": cmd_hooks,
    "statusline": cmd_statusline,
    "mcp": cmd_mcp,
}
