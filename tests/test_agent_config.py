"""`node-agent hooks|statusline|mcp install|remove` edit the agents' own config files through
the real command line, keeping everything else in them (and a backup)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomlkit

from tests.fleet_harness import child_env

THEIRS: dict[str, Any] = {
    "model": "opus",
    "permissions": {"allow": ["Bash(git *)"]},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "~/guard.sh"}]}
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
    },
}


def cli(tmp: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = child_env(tmp)
    env["HOME"] = str(tmp / "home")
    env.pop("CLAUDE_CONFIG_DIR", None)
    env.pop("CODEX_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "node_agent.entry", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd or tmp,
        timeout=60,
        check=False,
    )


def read(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(path.read_bytes())
    return data


@pytest.fixture
def settings(tmp_path: Path) -> Path:
    path = tmp_path / "home" / ".claude" / "settings.json"
    path.parent.mkdir(parents=True)
    path.write_bytes(orjson.dumps(THEIRS))
    return path


def test_hooks_install_keeps_the_rest_and_remove_restores_it(
    tmp_path: Path, settings: Path
) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'node = "n1"\nstate_dir = "{tmp_path / "state"}"\n')
    done = cli(tmp_path, "hooks", "install", "--config", str(config))
    assert done.returncode == 0, done.stderr
    data = read(settings)
    assert data["model"] == "opus" and data["permissions"] == THEIRS["permissions"]
    pre = data["hooks"]["PreToolUse"]
    assert pre[0] == THEIRS["hooks"]["PreToolUse"][0]  # theirs first, untouched
    ours = pre[1]["hooks"][0]
    assert ours["type"] == "command" and ours["timeout"] == 5
    assert ours["command"].endswith(f" hook PreToolUse --state-dir {tmp_path / 'state'}")
    for event in ("UserPromptSubmit", "PostToolBatch"):
        assert f" hook {event}" in data["hooks"][event][0]["hooks"][0]["command"]
    assert read(settings.with_name("settings.json.fleetmeter-backup")) == THEIRS
    # Installing again changes nothing.
    again = cli(tmp_path, "hooks", "install", "--config", str(tmp_path / "node.toml"))
    assert "already so" in again.stdout and read(settings) == data
    removed = cli(tmp_path, "hooks", "remove")
    assert removed.returncode == 0, removed.stderr
    assert read(settings) == THEIRS


def test_project_scope_and_gemini_before_model(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    project.mkdir()
    assert cli(tmp_path, "hooks", "install", "--scope", "project", cwd=project).returncode == 0
    assert "UserPromptSubmit" in read(project / ".claude" / "settings.json")["hooks"]
    done = cli(tmp_path, "hooks", "install", "--agent", "gemini", "--on-node-down", "block")
    assert done.returncode == 0, done.stderr
    gemini = read(tmp_path / "home" / ".gemini" / "settings.json")
    handler = gemini["hooks"]["BeforeModel"][0]["hooks"][0]
    assert handler["timeout"] == 5000  # Gemini CLI counts milliseconds
    assert handler["command"].endswith("--agent gemini --on-node-down block")


def test_a_broken_settings_file_is_refused_in_one_line(tmp_path: Path, settings: Path) -> None:
    settings.write_text("{not json")
    done = cli(tmp_path, "hooks", "install")
    assert done.returncode == 2
    assert "is not valid JSON" in done.stderr and "Traceback" not in done.stderr
    assert settings.read_text() == "{not json"


def test_statusline_install_does_not_replace_theirs_without_force(
    tmp_path: Path, settings: Path
) -> None:
    data = read(settings)
    data["statusLine"] = {"type": "command", "command": "~/my-line.sh"}
    settings.write_bytes(orjson.dumps(data))
    refused = cli(tmp_path, "statusline", "install")
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert cli(tmp_path, "statusline", "install", "--force").returncode == 0
    line = read(settings)["statusLine"]
    assert line["type"] == "command" and " statusline --state-dir " in line["command"]
    assert cli(tmp_path, "statusline", "remove").returncode == 0
    assert "statusLine" not in read(settings) and read(settings)["model"] == "opus"


def test_mcp_install_writes_each_agents_own_shape(tmp_path: Path) -> None:
    home = tmp_path / "home"
    codex = home / ".codex" / "config.toml"
    codex.parent.mkdir(parents=True)
    codex.write_text('# my codex\nmodel = "gpt-5-codex"\n\n[mcp_servers.other]\ncommand = "x"\n')
    for agent in ("claude-code", "codex", "gemini", "opencode"):
        done = cli(tmp_path, "mcp", "install", "--agent", agent)
        assert done.returncode == 0, done.stderr
    claude = read(home / ".claude.json")["mcpServers"]["fleetmeter"]
    assert claude["type"] == "stdio" and claude["args"][-1] == "mcp"
    text = codex.read_text()
    assert text.startswith("# my codex") and "[mcp_servers.other]" in text
    entry = tomlkit.parse(text)["mcp_servers"]["fleetmeter"]  # type: ignore[index]
    assert entry["args"][-1] == "mcp"  # type: ignore[index]
    gemini = read(home / ".gemini" / "settings.json")["mcpServers"]["fleetmeter"]
    assert gemini["args"][-1] == "mcp"
    opencode = read(tmp_path / "xdg-config" / "opencode" / "opencode.json")["mcp"]["fleetmeter"]
    assert opencode["type"] == "local" and opencode["command"][-1] == "mcp"
    for agent in ("claude-code", "codex", "gemini", "opencode"):
        assert cli(tmp_path, "mcp", "remove", "--agent", agent).returncode == 0
    assert "fleetmeter" not in codex.read_text() and "[mcp_servers.other]" in codex.read_text()
    assert read(home / ".claude.json") == {}
    missing = cli(tmp_path, "mcp", "install")
    assert missing.returncode == 2 and "--agent" in missing.stderr
