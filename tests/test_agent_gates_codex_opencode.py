"""The gates for Codex CLI and OpenCode (and Gemini CLI's BeforeModel) against a real hub and a
real node daemon: `node-agent hook` fed each agent's documented hook input, the installers on
real files, and fleetmeter's OpenCode plugin loaded by the machine's `node` and called the way
OpenCode's plugin API calls it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import tomlkit

from shared.verdicts import VerdictState
from tests.agent_harness import run
from tests.fleet_harness import child_env, stop, wait_for
from tests.test_agent_config import cli
from tests.test_agent_gates import (  # noqa: F401 (the fixture)
    Fleet,
    fleet,
    restart_with_hook_port,
    verdict,
)
from tests.test_source_claude import CWD, SESSION

OTHER = "0f3a9b5c-2222-4c2d-8e7f-bbbbbbbbbbbb"
NODE_HARNESS = Path(__file__).with_name("opencode_plugin_harness.mjs")


def codex_hook(agent: Fleet, event: str, session: str = SESSION, *extra: str) -> dict[str, Any]:
    """Call the hook as Codex CLI does (its documented input: session_id, cwd, model, turn_id,
    tool_name...); exit 0 and stdout JSON (or nothing) expected."""
    body: dict[str, Any] = {
        "session_id": session,
        "transcript_path": None,
        "cwd": CWD,
        "hook_event_name": event,
        "model": "gpt-5.1-codex",
        "turn_id": "turn_7",
        "permission_mode": "default",
    }
    if event == "UserPromptSubmit":
        body["prompt"] = "fix the flaky test"
    if event == "PreToolUse":
        body.update(tool_name="Bash", tool_use_id="call_1", tool_input={"command": "npm test"})
    done = run(agent, "hook", event, "--agent", "codex", *extra, stdin=body)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    return orjson.loads(out) if out else {}


def test_codex_hooks_answer_in_codexs_own_shapes(fleet: Fleet) -> None:  # noqa: F811
    fleet.calls(2)
    assert codex_hook(fleet, "UserPromptSubmit") == {}
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.WARN, share=0.85, spent="8.5")]
    fleet.calls(1, start=2)

    def warned() -> bool:
        answer = codex_hook(fleet, "UserPromptSubmit")
        return "additionalContext" in answer.get("hookSpecificOutput", {})

    wait_for(warned, 30, "the warning at the turn's start", every=0.5)
    assert codex_hook(fleet, "PreToolUse") == {}  # said once per turn, not per tool
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.EXHAUSTED)]
    fleet.calls(1, start=3)
    wait_for(lambda: "decision" in codex_hook(fleet, "UserPromptSubmit"), 30, "the stop", 0.5)
    blocked = codex_hook(fleet, "UserPromptSubmit")
    assert blocked["decision"] == "block" and "continue" not in blocked
    assert "$12.50 of $10.00" in blocked["reason"]
    assert "fleet-hub budget override daily-work --for 1h" in blocked["reason"]
    # PreToolUse: a deny (Codex runs the tool on `continue: false` there).
    denied = codex_hook(fleet, "PreToolUse")
    assert set(denied) == {"hookSpecificOutput"}
    out = denied["hookSpecificOutput"]
    assert out["hookEventName"] == "PreToolUse" and out["permissionDecision"] == "deny"
    assert "daily-work" in out["permissionDecisionReason"]
    assert codex_hook(fleet, "UserPromptSubmit", OTHER) == {}
    # A node that does not answer: let through and said, or blocked in Codex's shape.
    stop(fleet.node)
    assert "let through" in codex_hook(fleet, "UserPromptSubmit")["systemMessage"]
    down = codex_hook(fleet, "PreToolUse", SESSION, "--on-node-down", "block")
    assert down["hookSpecificOutput"]["permissionDecision"] == "deny"
    assert codex_hook(fleet, "UserPromptSubmit", SESSION, "--on-node-down", "block")["decision"]


def test_gemini_before_model_is_gated(fleet: Fleet) -> None:  # noqa: F811
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.EXHAUSTED)]
    fleet.calls(2)
    body = {"session_id": SESSION, "cwd": CWD, "hook_event_name": "BeforeModel"}

    def answer() -> dict[str, Any]:
        done = run(fleet, "hook", "BeforeModel", "--agent", "gemini", stdin=body)
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout) if done.stdout.strip() else {}

    wait_for(lambda: answer().get("decision") == "deny", 30, "Gemini's deny", 0.5)
    assert answer()["continue"] is False and "daily-work" in answer()["reason"]


def installer(tmp: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return cli(tmp, "hooks", *args, cwd=cwd)


def test_codex_installer_keeps_the_rest_and_removes_only_ours(tmp_path: Path) -> None:
    hooks_file = tmp_path / "home" / ".codex" / "hooks.json"
    hooks_file.parent.mkdir(parents=True)
    theirs = {"hooks": {"Stop": [{"hooks": [{"type": "command", "command": "say done"}]}]}}
    hooks_file.write_bytes(orjson.dumps(theirs))
    done = installer(tmp_path, "install", "--agent", "codex")
    assert done.returncode == 0, done.stderr
    assert "only once trusted" in done.stdout and "/hooks" in done.stdout
    data = orjson.loads(hooks_file.read_bytes())
    assert data["hooks"]["Stop"] == theirs["hooks"]["Stop"]
    for event in ("UserPromptSubmit", "PreToolUse"):
        (group,) = data["hooks"][event]
        assert "matcher" not in group  # Codex reads a regex: none matches every tool
        (handler,) = group["hooks"]
        assert f" hook {event} " in handler["command"] and "--agent codex" in handler["command"]
        assert handler["type"] == "command" and handler["timeout"] == 5
    assert (hooks_file.parent / "hooks.json.fleetmeter-backup").exists()
    again = installer(tmp_path, "install", "--agent", "codex")
    assert "(already so)" in again.stdout
    assert installer(tmp_path, "remove", "--agent", "codex").returncode == 0
    assert orjson.loads(hooks_file.read_bytes()) == theirs
    # The project's .codex/hooks.json.
    project = tmp_path / "repo"
    project.mkdir()
    installer(tmp_path, "install", "--agent", "codex", "--scope", "project", cwd=project)
    assert (
        "UserPromptSubmit"
        in orjson.loads((project / ".codex" / "hooks.json").read_bytes())["hooks"]
    )


def test_codex_managed_hooks_in_requirements_toml_keep_the_admins_comments(
    tmp_path: Path,
) -> None:
    requirements = tmp_path / "requirements.toml"
    original = (
        "# fleet policy: reviewed by security\n"
        'allowed_approval_policies = ["on-request"]  # no yolo\n\n'
        "[features]\nhooks = true\n\n"
        '[[hooks.Stop]]\n[[hooks.Stop.hooks]]\ntype = "command"\ncommand = "audit-log"\n'
    )
    requirements.write_text(original)
    done = installer(tmp_path, "install", "--agent", "codex", "--managed", str(requirements))
    assert done.returncode == 0, done.stderr
    assert "trusted" not in done.stdout  # managed hooks need no one's trust
    text = requirements.read_text()
    assert "# fleet policy: reviewed by security" in text and "# no yolo" in text
    doc = tomlkit.parse(text).unwrap()
    assert doc["hooks"]["Stop"] == [{"hooks": [{"type": "command", "command": "audit-log"}]}]
    for event in ("UserPromptSubmit", "PreToolUse"):
        (group,) = doc["hooks"][event]
        (handler,) = group["hooks"]
        assert f" hook {event} " in handler["command"] and handler["timeout"] == 5
    installer(tmp_path, "install", "--agent", "codex", "--managed", str(requirements))
    assert tomlkit.parse(requirements.read_text()).unwrap() == doc  # twice: once
    installer(tmp_path, "remove", "--agent", "codex", "--managed", str(requirements))
    assert requirements.read_text() == original
    # Bad input: one line, exit 2, the file untouched.
    requirements.write_text("hooks = [\n")
    bad = installer(tmp_path, "install", "--agent", "codex", "--managed", str(requirements))
    assert bad.returncode == 2 and "not valid TOML" in bad.stderr
    assert "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert requirements.read_text() == "hooks = [\n"
    wrong = installer(tmp_path, "install", "--agent", "gemini", "--managed", str(requirements))
    assert wrong.returncode == 2 and "--managed is for Codex only" in wrong.stderr


NODE = shutil.which("node")
needs_node = pytest.mark.skipif(NODE is None, reason="no `node` on PATH to load the plugin")


def call_plugin(agent: Fleet, plugin: Path, session: str = SESSION) -> dict[str, Any]:
    assert NODE is not None
    done = subprocess.run(
        [NODE, str(NODE_HARNESS), str(plugin), CWD, session],
        capture_output=True,
        text=True,
        env=child_env(agent.tmp),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def install_plugin(agent: Fleet, project: Path, *extra: str) -> Path:
    project.mkdir(exist_ok=True)
    done = installer(
        agent.tmp,
        "install",
        "--agent",
        "opencode",
        "--scope",
        "project",
        "--config",
        str(agent.config),
        *extra,
        cwd=project,
    )
    assert done.returncode == 0, done.stderr
    return project / ".opencode" / "plugins" / "fleetmeter.js"


def threw(result: dict[str, Any]) -> tuple[bool, bool]:
    return result["chat.params"]["threw"], result["tool.execute.before"]["threw"]


@needs_node
def test_the_opencode_plugin_refuses_model_calls_and_tools_once_exhausted(
    fleet: Fleet,  # noqa: F811
) -> None:
    plugin = install_plugin(fleet, fleet.tmp / "repo")
    fleet.calls(2)
    first = call_plugin(fleet, plugin)
    assert first["exports"] == ["FleetmeterGate"] and threw(first) == (False, False)
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.WARN, share=0.9, spent="9")]
    fleet.calls(1, start=2)
    wait_for(lambda: bool(call_plugin(fleet, plugin)["logged"]), 30, "the warning logged", 0.5)
    warned = call_plugin(fleet, plugin)
    assert threw(warned) == (False, False) and "daily-work" in warned["logged"][0]["message"]
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.EXHAUSTED)]
    fleet.calls(1, start=3)
    wait_for(lambda: all(threw(call_plugin(fleet, plugin))), 30, "the plugin's refusal", 0.5)
    refused = call_plugin(fleet, plugin)
    for hook in ("chat.params", "tool.execute.before"):
        message = refused[hook]["message"]
        assert "daily-work" in message and "$12.50 of $10.00" in message
        assert "fleet-hub budget override daily-work --for 1h" in message
    assert threw(call_plugin(fleet, plugin, OTHER)) == (False, False)
    # The node gone: let through and logged; or refused, when installed so.
    stop(fleet.node)
    down = call_plugin(fleet, plugin)
    assert threw(down) == (False, False)
    assert "does not answer" in down["logged"][0]["message"]
    strict = install_plugin(fleet, fleet.tmp / "strict", "--on-node-down", "block")
    assert all(threw(call_plugin(fleet, strict)))
    # Remove deletes only our file.
    assert (
        installer(
            fleet.tmp, "remove", "--agent", "opencode", "--scope", "project", cwd=fleet.tmp / "repo"
        ).returncode
        == 0
    )
    assert not plugin.exists()


@needs_node
def test_the_opencode_plugin_asks_the_nodes_hook_port_with_its_token(
    fleet: Fleet,  # noqa: F811
) -> None:
    port, _ = restart_with_hook_port(fleet)
    plugin = install_plugin(fleet, fleet.tmp / "repo", "--http")
    assert f'"port": {port}' in plugin.read_text()
    fleet.verdicts[:] = [verdict(f"session:{SESSION}", VerdictState.EXHAUSTED)]
    fleet.calls(2)
    wait_for(lambda: all(threw(call_plugin(fleet, plugin))), 30, "the refusal over http", 0.5)
    assert "daily-work" in call_plugin(fleet, plugin)["chat.params"]["message"]


def test_an_opencode_plugin_not_ours_is_left_alone(tmp_path: Path) -> None:
    project = tmp_path / "repo"
    mine = project / ".opencode" / "plugins" / "fleetmeter.js"
    mine.parent.mkdir(parents=True)
    mine.write_text("export const Mine = async () => ({})\n")
    for action in ("install", "remove"):
        done = installer(tmp_path, action, "--agent", "opencode", "--scope", "project", cwd=project)
        assert done.returncode == 2 and "not fleetmeter's plugin" in done.stderr, action
    assert mine.read_text() == "export const Mine = async () => ({})\n"
