"""The agent's side of the gate tests: a Claude Code session that makes model calls (what the
node reads from its transcript) and calls `node-agent hook` the way Claude Code does (stdin
JSON, exit status, stdout JSON)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tests.fleet_harness import child_env
from tests.test_source_claude import CWD, SESSION, assistant, main_file, write


@dataclass
class AgentSide:
    config: Path  # the node's node.toml
    home: Path  # the Claude Code profile's home
    tmp: Path

    def calls(self, n: int, start: int = 0, session: str = SESSION) -> None:
        """The agent makes `n` more model calls (what the node reads from its transcript)."""
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        write(
            main_file(self.home, session),
            [
                assistant(f"msg_{i}", f"req_{i}", ts=now, session=session)
                for i in range(start, start + n)
            ],
        )


def run(agent: AgentSide, *args: str, stdin: dict[str, Any]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "node_agent.entry", *args, "--config", str(agent.config)],
        input=orjson.dumps(stdin),
        capture_output=True,
        env=child_env(agent.tmp),
        timeout=30,
        check=False,
    )


def hook(agent: AgentSide, event: str, session: str = SESSION, *extra: str) -> dict[str, Any]:
    """Call the hook as Claude Code does; exit 0 and stdout JSON (or nothing) expected."""
    body: dict[str, Any] = {
        "session_id": session,
        "transcript_path": str(main_file(agent.home, session)),
        "cwd": CWD,
        "permission_mode": "default",
        "hook_event_name": event,
    }
    if event == "UserPromptSubmit":
        body["prompt"] = "refactor the billing module"
    if event == "PreToolUse":
        body.update(tool_name="Bash", tool_input={"command": "npm test"}, tool_use_id="toolu_01")
    if event == "PostToolBatch":
        body["tool_calls"] = [{"tool_name": "Read", "tool_input": {}, "tool_use_id": "toolu_02"}]
    done = run(agent, "hook", event, *extra, stdin=body)
    assert done.returncode == 0, done.stderr
    out = done.stdout.strip()
    if not out:
        return {}
    answer: dict[str, Any] = orjson.loads(out)
    return answer
