"""What a process is, from facts psutil reads: which agent, which home, which session.

Pure functions of names, command lines, environments and paths (research/stack.md §5,
log-formats.md §1.1, §2.1, §3.1, §4.1), so the rules are readable in one place.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from shared.events import Agent

# A native binary (or Node's `process.title`) shows the tool's own name.
AGENT_NAMES: Final[Mapping[str, Agent]] = {
    "claude": Agent.CLAUDE_CODE,
    "codex": Agent.CODEX,
    "gemini": Agent.GEMINI,
    "opencode": Agent.OPENCODE,
}
# npm installs: the package's folder appears in the script path node runs.
PACKAGES: Final[Mapping[str, Agent]] = {
    "@anthropic-ai/claude-code": Agent.CLAUDE_CODE,
    "@openai/codex": Agent.CODEX,
    "@google/gemini-cli": Agent.GEMINI,
    "opencode-ai": Agent.OPENCODE,
}
INTERPRETERS: Final = frozenset({"node", "nodejs", "bun", "deno"})


def agent_of(name: str, cmdline: Sequence[str]) -> Agent | None:
    """The agent a process runs, or None.

    Matches `name()` (comm), the executable's basename, and for `node`-like interpreters the
    script they run (`node …/@openai/codex/bin/codex.js`, or `node /usr/bin/claude` under a
    `#!/usr/bin/env node` shebang). Arguments of other programs are never looked at, so
    `grep -r @openai/codex` or `bash -c claude` is not an agent (its child may be).
    """
    if agent := AGENT_NAMES.get(name):
        return agent
    if not cmdline:
        return None
    if agent := _agent_of_path(cmdline[0]):
        return agent
    if not _is_interpreter(cmdline[0]):
        return None
    # The script is the first argument that is not an interpreter option.
    script = next((arg for arg in cmdline[1:] if not arg.startswith("-")), None)
    return _agent_of_path(script) if script else None


def _basename(arg: str) -> str:
    return arg.rstrip("/").rsplit("/", 1)[-1]


def _is_interpreter(arg: str) -> bool:
    base = _basename(arg)
    # node, nodejs and versioned names such as node22
    return base in INTERPRETERS or (base.startswith("node") and base[4:].isdigit())


def _agent_of_path(arg: str) -> Agent | None:
    if agent := AGENT_NAMES.get(_basename(arg)):
        return agent
    parts = arg.split("/")
    for package, agent in PACKAGES.items():
        pkg_parts = package.split("/")
        n = len(pkg_parts)
        if any(parts[i : i + n] == pkg_parts for i in range(len(parts) - n + 1)):
            return agent
    return None


def home_of(
    agent: Agent, environ: Mapping[str, str], user_home: Path | None, cwd: str | None
) -> Path | None:
    """The agent's data home as the process sees it: its override variable, else the default
    under the process owner's home. None when neither can be known."""
    home = environ.get("HOME") or (str(user_home) if user_home else None)

    def path(value: str) -> Path | None:
        # `~` means the process owner's home, not ours; relative means the process's cwd.
        if value == "~" or value.startswith("~/"):
            return Path(home, value[2:]) if home else None
        if not value.startswith("/"):
            return Path(cwd, value) if cwd else None
        return Path(value)

    def under_home(*parts: str) -> Path | None:
        return Path(home, *parts) if home else None

    if agent is Agent.CLAUDE_CODE:
        # Claude Code takes one dir; ccusage's comma list is not the agent's own syntax.
        value = environ.get("CLAUDE_CONFIG_DIR", "").strip()
        return path(value) if value else under_home(".claude")
    if agent is Agent.CODEX:
        value = environ.get("CODEX_HOME", "").strip()
        return path(value) if value else under_home(".codex")
    if agent is Agent.GEMINI:
        # GEMINI_CLI_HOME replaces the home dir; the data dir is `.gemini` below it.
        value = environ.get("GEMINI_CLI_HOME", "").strip()
        if value:
            base = path(value)
            return base / ".gemini" if base else None
        return under_home(".gemini")
    if agent is Agent.OPENCODE:
        value = environ.get("XDG_DATA_HOME", "").strip()
        if value:
            base = path(value)
            return base / "opencode" if base else None
        return under_home(".local", "share", "opencode")
    return None


@dataclass(frozen=True, slots=True, order=True)
class SessionFile:
    """A session log a process holds open; `rank` orders candidates (lowest wins)."""

    rank: tuple[int, str]
    session_id: str
    path: str


_ROLLOUT = re.compile(
    r"rollout-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-"
    r"([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
    r"(?:_[^/]*)?\.jsonl"
)


def session_file(agent: Agent, path: str) -> SessionFile | None:
    """The session a log file belongs to, from its path alone, or None if it is not one.

    Claude Code: `projects/<slug>/<session>.jsonl` (main transcript, preferred) or
    `projects/<slug>/<session>/subagents/agent-<id>.jsonl`. Codex: the thread uuid of
    `rollout-<local time>-<uuid>.jsonl`; with several open (spawned subagent threads), the
    earliest-named one is the thread the user started.
    """
    p = PurePosixPath(path)
    if agent is Agent.CLAUDE_CODE and p.suffix == ".jsonl":
        parents = p.parents
        if len(parents) >= 2 and parents[1].name == "projects" and not p.stem.startswith("agent-"):
            return SessionFile((0, ""), p.stem, path)
        if len(parents) >= 4 and parents[0].name == "subagents" and parents[3].name == "projects":
            return SessionFile((1, ""), parents[1].name, path)
        return None
    if agent is Agent.CODEX and (match := _ROLLOUT.fullmatch(p.name)):
        return SessionFile((0, p.name), match.group(1).lower(), path)
    return None
