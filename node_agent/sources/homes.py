"""Where each agent keeps its data and how its home is told from other folders: all a scan needs
to find what to read, without loading the agents' reading code (a scan of Claude homes only
loads no other source's module: ~2 ms of its serial start). Each source is its agent's `Homes`
too (`Source` derives from it)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

from shared.events import Agent


class Homes:
    agent: ClassVar[Agent]
    # For messages about paths: what a home of this agent is, and which files in it hold usage.
    home_kind: ClassVar[str]
    usage_files: ClassVar[str]

    def default_homes(self) -> list[Path]:
        """Where this agent keeps its data on this machine (env overrides first); may not exist."""
        raise NotImplementedError

    def is_home(self, path: Path) -> bool:
        """True when `path` looks like this agent's home (or a file this source reads)."""
        raise NotImplementedError

    def home_of(self, path: Path) -> Path | None:
        """The nearest folder above `path` that is this agent's home, so that a file or folder
        inside a home is read as part of it (same attribution), or None."""
        return next((p for p in path.parents if self.is_home(p)), None)


class ClaudeHomes(Homes):
    agent: ClassVar[Agent] = Agent.CLAUDE_CODE
    home_kind: ClassVar[str] = "a Claude Code config dir (~/.claude, $CLAUDE_CONFIG_DIR)"
    usage_files: ClassVar[str] = "session transcripts (projects/<project>/<session>.jsonl)"

    def default_homes(self) -> list[Path]:
        env = os.environ.get("CLAUDE_CONFIG_DIR", "")
        homes = [Path(p.strip()).expanduser() for p in env.split(",") if p.strip()]
        if homes:
            return homes
        xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        return [Path.home() / ".claude", Path(xdg) / "claude"]

    def is_home(self, path: Path) -> bool:
        if path.is_dir():
            return path.name == "projects" or (path / "projects").is_dir()
        return path.suffix == ".jsonl" and "projects" in path.parent.parts

    def home_of(self, path: Path) -> Path | None:
        # The config dir above the nearest projects/: any other folder may be called projects.
        return next((p.parent for p in path.parents if p.name == "projects"), None)


class CodexHomes(Homes):
    agent: ClassVar[Agent] = Agent.CODEX
    home_kind: ClassVar[str] = "a Codex home (~/.codex, $CODEX_HOME)"
    usage_files: ClassVar[str] = "rollouts (sessions/YYYY/MM/DD/rollout-*.jsonl[.zst])"

    def default_homes(self) -> list[Path]:
        env = os.environ.get("CODEX_HOME")
        if env:
            return [Path(env).expanduser()]
        return [Path.home() / ".codex"]

    def is_home(self, path: Path) -> bool:
        if path.is_file():
            return path.name.startswith("rollout-") and path.name.endswith((".jsonl", ".jsonl.zst"))
        return (path / "sessions").is_dir() or (path / "archived_sessions").is_dir()


class GeminiHomes(Homes):
    agent: ClassVar[Agent] = Agent.GEMINI
    home_kind: ClassVar[str] = "a Gemini CLI home (~/.gemini)"
    usage_files: ClassVar[str] = "chats (tmp/<project>/chats/session-*.json[l])"

    def default_homes(self) -> list[Path]:
        homes: list[Path] = []
        override = os.environ.get("GEMINI_CLI_HOME")
        if override:
            homes.append(Path(override).expanduser() / ".gemini")
        default = Path.home() / ".gemini"
        if default not in homes:
            homes.append(default)
        return homes

    def is_home(self, path: Path) -> bool:
        if path.is_file():
            return is_chat_file(path)
        tmp = path / "tmp"
        if not tmp.is_dir():
            return False  # a project-level .gemini (settings only) has no tmp/
        return (path / "projects.json").is_file() or any(tmp.glob("*/chats"))


def is_chat_file(path: Path) -> bool:
    """A Gemini chat file (`GeminiHomes`)."""
    if path.suffix not in (".json", ".jsonl"):
        return False
    chats = chats_dir(path)
    return chats is not None and (path.parent != chats or path.name.startswith("session-"))


def chats_dir(path: Path) -> Path | None:
    """The `chats` dir holding `path` directly or one level down (subagents)."""
    for candidate in (path.parent, path.parent.parent):
        if candidate.name == "chats":
            return candidate
    return None


class OpenCodeHomes(Homes):
    agent: ClassVar[Agent] = Agent.OPENCODE
    home_kind: ClassVar[str] = "an OpenCode data dir (~/.local/share/opencode)"
    usage_files: ClassVar[str] = "opencode.db or storage/message/<session>/<message>.json"

    def default_homes(self) -> list[Path]:
        homes: list[Path] = []
        for item in os.environ.get("OPENCODE_DATA_DIR", "").split(","):
            if item.strip():
                homes.append(Path(item.strip()).expanduser())
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
        default = base / "opencode"
        if default not in homes:
            homes.append(default)
        return homes

    def is_home(self, path: Path) -> bool:
        if path.is_file():
            return is_db_name(path.name)
        if not path.is_dir():
            return False
        return bool(databases(path)) or (path / "storage" / "message").is_dir()


def databases(home: Path) -> list[Path]:
    """The OpenCode databases in `home`."""
    return sorted(p for p in home.glob("opencode*.db") if is_db_name(p.name) and p.is_file())


def is_db_name(name: str) -> bool:
    return name == "opencode.db" or (name.startswith("opencode-") and name.endswith(".db"))


class CursorHomes(Homes):
    agent: ClassVar[Agent] = Agent.CURSOR
    home_kind: ClassVar[str] = "a folder of Cursor usage CSVs"
    usage_files: ClassVar[str] = "Cursor usage CSVs (exported from the dashboard)"

    def default_homes(self) -> list[Path]:
        xdg = os.environ.get("XDG_CONFIG_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
        return [base / "fleetmeter" / "cursor"]

    def is_home(self, path: Path) -> bool:
        if path.is_file():
            return _is_cursor_csv(path)
        if path.is_dir():
            return any(_is_cursor_csv(p) for p in path.iterdir() if p.is_file())
        return False


def _is_cursor_csv(path: Path) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    # Its header's rules are the reader's: loaded only when a .csv is met.
    from node_agent.sources.cursor import is_cursor_csv

    return is_cursor_csv(path)


HOMES: tuple[type[Homes], ...] = (ClaudeHomes, CodexHomes, GeminiHomes, OpenCodeHomes, CursorHomes)
