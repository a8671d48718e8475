"""The fake agents (`node_agent.simulate.fake_agent`, run as a process, never imported: the hub
does not import node_agent): their command line, their ready line, their process trees and
ending them."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import psutil

from hub.demo._cast import CastProfile
from hub.demo._trees import end_trees
from shared.events import Agent

FAKE_AGENT: Final = "node_agent.simulate.fake_agent"
# The variable a profile switcher sets to a profile's home: how the node maps an agent to it.
HOME_VARIABLES: Final = {Agent.CLAUDE_CODE: "CLAUDE_CONFIG_DIR", Agent.CODEX: "CODEX_HOME"}
AGENT_GRACE: Final = 3.0  # seconds from SIGTERM to SIGKILL for a fake agent's tree


@dataclass(slots=True)
class DemoAgent:
    """One fake agent process the demo started."""

    machine: str
    profile: str
    agent: Agent
    mode: str
    popen: subprocess.Popen[bytes]
    log: Path  # its stdout and stderr (the ready line)
    truth: Path  # its truth journal: one line per call and per rate-limit hit
    session_id: str | None = None  # from the ready line
    _seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def read_ready(self) -> bool:
        """True once the agent printed its ready line (its session file and tools exist)."""
        if self.session_id is not None:
            return True
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith('{"ready"'):
                    self.session_id = str(json.loads(line)["session_id"])
                    self.remember_tree()
                    return True
        return False

    def remember_tree(self) -> None:
        """Note the agent and its descendants: tools orphaned later are still ended by stop()."""
        if self.popen.poll() is not None:
            return  # reaped: its pid may belong to another process by now
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(self.pid)
            for proc in (root, *root.children(recursive=True)):
                self._seen.setdefault(proc.pid, proc)

    def processes(self) -> list[psutil.Process]:
        self.remember_tree()
        return list(self._seen.values())


def fake_agent_command(
    machine: str,
    profile: CastProfile,
    *,
    home: Path,
    project: Path,
    truth: Path,
    children: int,
    pace: Sequence[str],
) -> list[str]:
    """The fake agent's command line; `pace` is its pace options (`_cast.pace_options`:
    its call interval, and how often a normal Claude agent runs a subagent)."""
    command = [sys.executable, "-m", FAKE_AGENT, "--agent", profile.agent.value]
    command += ["--home", str(home), "--model", profile.model, "--mode", profile.mode]
    command += ["--children", str(children), "--project", str(project)]
    command += ["--truth", str(truth), "--machine", machine, "--profile", profile.name]
    if profile.agent is Agent.CLAUDE_CODE:  # interactive, as a terminal's Claude Code logs it
        command += ["--entrypoint", "cli"]
    return command + list(pace)


def end_agents(agents: Sequence[DemoAgent]) -> None:
    """End the agents' whole trees, all at once, then reap the agents (the demo's children)."""
    end_trees([agent.processes() for agent in agents], AGENT_GRACE)
    for agent in agents:
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.popen.wait(AGENT_GRACE)
