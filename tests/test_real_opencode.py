"""fleetmeter's OpenCode plugin in the real OpenCode (`opencode-ai`, pinned in
tests.real_agents), its model provider an OpenAI-compatible one served on loopback (Chat
Completions streaming): OpenCode loads the plugin `node-agent hooks install --agent opencode`
wrote, a warning reaches its log, and an exhausted budget's throw in `chat.params` refuses the
model call (the research left this undocumented) once, with no retries."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from hub.serve import Hub
from shared.events import Agent
from shared.verdicts import Verdict, VerdictState
from tests import fleet_harness as fleet
from tests.model_provider import API_KEY, ModelProvider, model_provider
from tests.real_agents import agents_dir, opencode, seed_opencode_dir
from tests.test_agent_gates import verdict

pytestmark = pytest.mark.real_agents

NODE = "n1"
CHAT = "/v1/chat/completions"
JOINER = "\u2060"


@dataclass
class OpenCodeFleet:
    tmp: Path
    hub: Hub
    config: Path
    project: Path
    provider: ModelProvider
    verdicts: list[Verdict]
    binary: Path

    def env(self) -> dict[str, str]:
        env = fleet.child_env(self.tmp)
        env.update(
            HOME=str(self.tmp / "home"),
            PWD=str(self.project),  # OpenCode takes its directory from PWD
            OPENCODE_DISABLE_AUTOUPDATE="1",
            OPENCODE_DISABLE_MODELS_FETCH="1",  # models.dev is beyond the machine's edge
            XDG_CACHE_HOME=str(agents_dir() / "xdg-cache"),  # OpenCode's cold start, kept
        )
        return env

    def run(self, prompt: str) -> tuple[int, list[dict[str, Any]], str]:
        done = subprocess.run(
            [str(self.binary), "run", "--print-logs", "--format", "json", "-m",
             "local/gpt-test", prompt],
            cwd=self.project, env=self.env(), capture_output=True, stdin=subprocess.DEVNULL,
            timeout=120, check=False,
        )  # fmt: skip
        events = [
            json.loads(line)
            for line in done.stdout.decode(errors="replace").splitlines()
            if line.startswith("{")
        ]
        return done.returncode, events, done.stderr.decode(errors="replace")


def model_attempts(log: str) -> int:
    """The main agent's model calls OpenCode set out to make (a retry is one more)."""
    return sum("message=stream " in line and "agent=build" in line for line in log.splitlines())


@pytest.fixture
def oc(tmp_path: Path) -> Iterator[OpenCodeFleet]:
    binary = opencode()
    given: list[Verdict] = []
    with model_provider() as provider, fleet.running_hub(tmp_path) as (hub, setup):
        assert hub.service is not None
        hub.service.verdicts = lambda node: list(given) if node == NODE else []
        data = tmp_path / "xdg-data" / "opencode"
        data.mkdir(parents=True)
        (tmp_path / "home").mkdir()
        project = tmp_path / "repo"
        project.mkdir()
        seed_opencode_dir(project / ".opencode")
        (project / "opencode.json").write_text(
            json.dumps(
                {
                    "$schema": "https://opencode.ai/config.json",
                    "provider": {
                        "local": {
                            "npm": "@ai-sdk/openai-compatible",
                            "name": "local stand-in",
                            "options": {"baseURL": provider.base_url, "apiKey": API_KEY},
                            "models": {"gpt-test": {"name": "gpt-test"}},
                        }
                    },
                    "model": "local/gpt-test",
                    "autoupdate": False,
                    "share": "disabled",
                }
            )  # fmt: skip
        )
        config = fleet.write_node(
            tmp_path, NODE, setup, [fleet.ProfileSpec("oc", Agent.OPENCODE, data)]
        )
        node = fleet.start_node(config, tmp_path)
        try:
            fleet.wait_for((config.parent / "state" / "query.sock").exists, 30, "the node")
            yield OpenCodeFleet(tmp_path, hub, config, project, provider, given, binary)
        finally:
            fleet.stop(node)


def node_says(oc: OpenCodeFleet, key: str) -> bool:
    body = {"session_id": "ses_x", "cwd": str(oc.project), "hook_event_name": "BeforeModel"}
    answer = subprocess.run(
        [sys.executable, "-m", "node_agent.entry", "hook", "BeforeModel", "--agent", "opencode",
         "--config", str(oc.config)],
        input=json.dumps(body).encode(), env=oc.env(), capture_output=True, timeout=30,
        check=False,
    )  # fmt: skip
    return key.encode() in answer.stdout


def install_plugin(oc: OpenCodeFleet) -> None:
    installed = subprocess.run(
        [sys.executable, "-m", "node_agent.entry", "hooks", "install", "--agent", "opencode",
         "--scope", "project", "--config", str(oc.config)],
        cwd=oc.project, env=oc.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert (oc.project / ".opencode" / "plugins" / "fleetmeter.js").exists()


def test_opencode_loads_the_plugin_and_a_warning_lets_the_call_through(
    oc: OpenCodeFleet,
) -> None:
    install_plugin(oc)
    oc.verdicts[:] = [verdict(f"machine:{NODE}", VerdictState.WARN, share=0.9, spent="9")]
    fleet.wait_for(lambda: node_says(oc, "systemMessage"), 30, "the warning at the node", 0.5)
    code, events, log = oc.run("fix the flaky test")
    assert code == 0, log[-2000:]
    assert any(e["type"] == "text" and "Done" in e["part"]["text"] for e in events), events
    assert oc.provider.model_calls(CHAT)
    # The plugin asked the node before the call and logged its note in OpenCode's log.
    notes = [x for x in log.splitlines() if "level=WARN" in x and "fleetmeter: budget" in x]
    assert notes and "'daily-work'" in notes[0] and "$9 of $10.00 (90%)" in notes[0]


def test_a_throw_in_chat_params_refuses_the_model_call_once(oc: OpenCodeFleet) -> None:
    install_plugin(oc)
    oc.verdicts[:] = [verdict(f"machine:{NODE}", VerdictState.EXHAUSTED)]
    fleet.wait_for(lambda: node_says(oc, '"decision": "deny"'), 30, "the stop at the node", 0.5)
    code, events, log = oc.run("and the other one")
    assert code == 1
    assert oc.provider.model_calls(CHAT) == []  # refused before it left the machine
    (error,) = [e for e in events if e["type"] == "error"]
    message = error["error"]["data"]["message"]
    assert error["error"]["name"] == "UnknownError"  # OpenCode's own wrapping of the throw
    assert "daily-work" in message and "fleet-hub budget override daily-work" in message
    assert message.replace(JOINER, "").count("exhausted") == 1  # reads as written
    # Once: OpenCode did not take the refusal for a provider's passing trouble and retry it
    # (5 more times over a minute, each asking the gate again, without the plugin's wording).
    assert model_attempts(log) == 1, log[-3000:]
