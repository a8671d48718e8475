"""Writing fleetmeter into the agents' own config files, keeping everything else in them.

Each change is read-modify-write of the whole file: refused with one line when the file is not
what the agent would read (bad JSON/TOML, a non-object), a copy of the old file kept beside it
(`NAME.fleetmeter-backup`), the new one written to a temp file and renamed over (atomic).
Our entries are recognised by their command (`node-agent hook`, `statusline`, `mcp`), so
install twice changes nothing and remove takes out only ours.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import orjson
import tomlkit
from tomlkit.exceptions import TOMLKitError

from shared.config import ConfigError

SERVER_NAME: Final = "fleetmeter"
# Claude Code: the points before a model call (UserPromptSubmit, PostToolBatch) and tools.
CLAUDE_HOOK_EVENTS: Final = ("UserPromptSubmit", "PostToolBatch", "PreToolUse")
GEMINI_HOOK_EVENTS: Final = ("BeforeModel",)  # before every model request
# Codex CLI: a turn's start and its tools (Bash, apply_patch, MCP); no hook before later calls.
CODEX_HOOK_EVENTS: Final = ("UserPromptSubmit", "PreToolUse")
HOOK_TIMEOUT_S: Final = 5  # a dead node costs seconds, not Claude Code's default 600 s
HTTP_HOOK_PREFIX: Final = "http://127.0.0.1:"
TOKEN_VARIABLE: Final = "FLEETMETER_HOOK_TOKEN"  # holds state_dir/hook.token for http hooks
MCP_AGENTS: Final = ("claude-code", "codex", "gemini", "opencode")


def node_agent_command() -> list[str]:
    """How the agents start us: this very program (absolute: Codex clears PATH of its servers)."""
    script = Path(sys.argv[0])
    if script.name == "node-agent" and script.exists():
        words = [str(script.resolve())]
    else:
        found = shutil.which("node-agent")
        words = [found] if found else [sys.executable, "-m", "node_agent.entry"]  # the fast path
    return words


def shell_words(words: list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


# -- file handling --------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = orjson.loads(path.read_bytes() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}); fix or move it first") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object; fix or move it first")
    return data


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        shutil.copy2(path, path.with_name(path.name + ".fleetmeter-backup"))
        mode = path.stat().st_mode & 0o777
    else:
        mode = 0o600
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def edit_json(path: Path, change: Callable[[dict[str, Any]], bool]) -> bool:
    """Apply `change` (True: it changed something) and write; False when nothing changed."""
    data = _read_json(path)
    if not change(data):
        return False
    _write(path, orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    return True


def _object(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.setdefault(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {key!r} is not an object; fix it first")
    return value


# -- Claude Code / Gemini CLI hooks ----------------------------------------------------------


def claude_settings(scope: str, project: Path) -> Path:
    if scope == "project":
        return project / ".claude" / "settings.json"
    base = os.environ.get("CLAUDE_CONFIG_DIR")
    return (Path(base) if base else Path.home() / ".claude") / "settings.json"


def gemini_settings(scope: str, project: Path) -> Path:
    if scope == "project":
        return project / ".gemini" / "settings.json"
    return Path.home() / ".gemini" / "settings.json"


def codex_hooks_file(scope: str, project: Path) -> Path:
    if scope == "project":
        return project / ".codex" / "hooks.json"
    return Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex") / "hooks.json"


def _is_ours(handler: object, marker: str) -> bool:
    if not isinstance(handler, dict):
        return False
    url = str(handler.get("url", ""))
    if marker == " hook " and url.startswith(HTTP_HOOK_PREFIX) and "/hook/" in url:
        return True  # an `http` hook to the node's port
    return marker in str(handler.get("command", ""))


def _drop_ours(groups: list[Any], marker: str) -> list[Any]:
    kept = []
    for group in groups:
        if isinstance(group, dict) and isinstance(group.get("hooks"), list):
            handlers = [h for h in group["hooks"] if not _is_ours(h, marker)]
            if not handlers:
                continue
            group = {**group, "hooks": handlers}
        kept.append(group)
    return kept


def http_hook(event: str, port: int, timeout: int) -> dict[str, Any]:
    """Claude Code's `http` hook to the node's port: no process per call. The token comes
    from the environment (never written into a settings file that may be committed)."""
    return {
        "type": "http",
        "url": f"{HTTP_HOOK_PREFIX}{port}/hook/{event}",
        "headers": {"Authorization": f"Bearer ${TOKEN_VARIABLE}"},
        "allowedEnvVars": [TOKEN_VARIABLE],
        "timeout": timeout,
    }


def command_hook(command: list[str], event: str, extra: list[str], timeout: int) -> dict[str, Any]:
    """A `command` hook running `node-agent hook EVENT` (Claude Code, Gemini CLI, Codex CLI)."""
    words = shell_words([*command, "hook", event, *extra])
    return {"type": "command", "command": words, "timeout": timeout}


def set_hooks(
    path: Path,
    events: tuple[str, ...],
    command: list[str],
    extra: list[str],
    timeout: int,
    install: bool,
    http_port: int | None = None,
    matcher: str | None = "*",
) -> bool:
    """`matcher=None` leaves it out: Codex reads it as a regex, and no matcher matches all."""
    marker = " hook "

    def change(data: dict[str, Any]) -> bool:
        before = orjson.dumps(data.get("hooks"))
        hooks = _object(data, "hooks", path)
        for event in events:
            groups = hooks.get(event, [])
            if not isinstance(groups, list):
                raise ConfigError(f"{path}: hooks.{event} is not a list; fix it first")
            groups = _drop_ours(groups, marker)
            if install:
                handler = (
                    http_hook(event, http_port, timeout)
                    if http_port is not None
                    else command_hook(command, event, extra, timeout)
                )
                groups.append(
                    {"hooks": [handler]}
                    if matcher is None
                    else {"matcher": matcher, "hooks": [handler]}
                )
            if groups:
                hooks[event] = groups
            else:
                hooks.pop(event, None)
        if not hooks:
            data.pop("hooks")
        return orjson.dumps(data.get("hooks")) != before

    return edit_json(path, change)


def set_statusline(
    path: Path, command: list[str], extra: list[str], install: bool, force: bool
) -> bool:
    ours = shell_words([*command, "statusline", *extra])

    def change(data: dict[str, Any]) -> bool:
        current = data.get("statusLine")
        mine = _is_ours(current, " statusline")
        if install:
            if current is not None and not mine and not force:
                theirs = current.get("command") if isinstance(current, dict) else current
                raise ConfigError(
                    f"{path} already has a statusLine ({theirs!r}); "
                    "add --force to replace it (a backup is kept)"
                )
            wanted = {"type": "command", "command": ours, "padding": 0}
            if current == wanted:
                return False
            data["statusLine"] = wanted
            return True
        if mine:
            del data["statusLine"]
            return True
        return False

    return edit_json(path, change)


def set_managed_codex_hooks(
    path: Path, events: tuple[str, ...], handlers: dict[str, dict[str, Any]], install: bool
) -> bool:
    """Codex's admin `requirements.toml`: inline `[[hooks.EVENT]]` groups (`handlers`: ours per
    event), trusted by policy (no one has to trust them in `/hooks`); the rest of the file,
    comments too, kept."""
    doc = _read_toml(path)
    hooks = _toml_table(doc, "hooks", path, install)
    if hooks is None:
        return False
    before = _toml_text(doc)
    for event in events:
        groups = hooks.get(event, [])
        if not isinstance(groups, list):
            raise ConfigError(f"{path}: hooks.{event} is not an array of tables; fix it first")
        kept = tomlkit.aot()
        for group in _drop_ours([g.unwrap() for g in groups], " hook "):
            kept.append(group)
        if install:
            kept.append({"hooks": [handlers[event]]})
        if len(kept):
            hooks[event] = kept
        elif event in hooks:
            del hooks[event]
    if not hooks:
        del doc["hooks"]
    text = _toml_text(doc)
    if text == before:
        return False
    _write(path, text)
    return True


def _toml_table(
    doc: tomlkit.TOMLDocument, key: str, path: Path, install: bool
) -> dict[str, Any] | None:
    """The top-level table `key`, made for an install; None when absent and removing."""
    table = doc.get(key)
    if table is None:
        if not install:
            return None
        table = tomlkit.table(is_super_table=True)
        doc[key] = table
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {key} is not a table; fix it first")
    return table


def _toml_text(doc: tomlkit.TOMLDocument) -> str:
    """One newline at the end: tomlkit leaves blank lines behind a removed array of tables."""
    return tomlkit.dumps(doc).rstrip("\n") + "\n"


def _read_toml(path: Path) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(path.read_text() if path.exists() else "")
    except TOMLKitError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix it first") from None


# -- MCP server entries ----------------------------------------------------------------------


def mcp_config_path(agent: str) -> Path:
    home = Path.home()
    return {
        "claude-code": home / ".claude.json",
        "codex": Path(os.environ.get("CODEX_HOME") or home / ".codex") / "config.toml",
        "gemini": home / ".gemini" / "settings.json",
        "opencode": Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
        / "opencode"
        / "opencode.json",
    }[agent]


def set_mcp(agent: str, command: list[str], extra: list[str], install: bool) -> tuple[Path, bool]:
    path = mcp_config_path(agent)
    words = [*command, "mcp", *extra]
    if agent == "codex":
        return path, _set_codex_mcp(path, words, install)
    key = "mcp" if agent == "opencode" else "mcpServers"
    if agent == "opencode":
        entry: dict[str, Any] = {"type": "local", "command": words, "enabled": True}
    elif agent == "claude-code":
        entry = {"type": "stdio", "command": words[0], "args": words[1:], "env": {}}
    else:
        entry = {"command": words[0], "args": words[1:]}

    def change(data: dict[str, Any]) -> bool:
        servers = _object(data, key, path)
        if install:
            if servers.get(SERVER_NAME) == entry:
                return False
            servers[SERVER_NAME] = entry
            return True
        if SERVER_NAME not in servers:
            if not servers:
                data.pop(key)
            return False
        del servers[SERVER_NAME]
        if not servers:
            data.pop(key)  # as it was before the install
        return True

    return path, edit_json(path, change)


def _set_codex_mcp(path: Path, command: list[str], install: bool) -> bool:
    doc = _read_toml(path)
    servers = _toml_table(doc, "mcp_servers", path, install)
    if servers is None:
        return False
    if install:
        entry = tomlkit.table()
        entry["command"] = command[0]
        entry["args"] = command[1:]
        if servers.get(SERVER_NAME) == entry.unwrap():
            return False
        servers[SERVER_NAME] = entry
    else:
        if SERVER_NAME not in servers:
            return False
        del servers[SERVER_NAME]
    _write(path, tomlkit.dumps(doc))
    return True
