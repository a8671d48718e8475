"""Agents that join a scope whose budget stopped it: a real `fleet-hub serve`, a real
`node-agent run`, fake agents writing real logs. The crossing comes from a call logged while no
agent ran (its agent had exited: "no agent to pause in scope"); an agent started afterwards
sits at its prompt and logs nothing, and is stopped as soon as its node's hello names it, not
at a next call that never comes. A hub killed (-9) and started again neither stops it twice
nor forgets an agent that joined while it was down."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest
import tomlkit

from hub._node_news import pause_target
from node_agent.simulate.fake_agent import LaunchedAgent, launch
from shared.events import Agent
from tests import fleet_harness as fleet
from tests.api_harness import ServedHub, serve_hub
from tests.budget_harness import add_budget, budgets, restart
from tests.test_fleet_commands import states

NODE = "spark09"
BUDGET = "spark09 day"


@dataclass
class StoppedScope:
    served: ServedHub
    started: list[subprocess.Popen[bytes]]
    agent: Agent
    home: Path
    tmp: Path
    profile: fleet.ProfileSpec
    node: subprocess.Popen[bytes]

    def join(self, name: str) -> LaunchedAgent:
        """An agent at its prompt: it logs no call for an hour (its truth file stays empty)."""
        return launch(
            self.agent, self.home, "--mode", "runaway", "--children", "1", "--machine", NODE,
            "--profile", "p", "--first-call-after", "3600", "--truth", str(self.tmp / name),
            env=fleet.child_env(self.tmp),
        )  # fmt: skip

    def row(self) -> dict[str, object]:
        return budgets(self.served)[BUDGET]

    def audit(self) -> list[tuple[str, str, str, str]]:
        reply = httpx.get(
            self.served.url + "/api/v1/audit?limit=500",
            headers=self.served.headers("viewer"),
            timeout=10,
        )
        return [(r["who"], r["action"], r["target"], r["result"]) for r in reply.json()["rows"]]

    def commands_to(self, agent: LaunchedAgent, create_time: float) -> list[tuple[str, str]]:
        """The budget's commands to `agent` (action, result), oldest first."""
        target = pause_target(NODE, agent.pid, create_time)
        return [
            (action, result)
            for who, action, where, result in reversed(self.audit())
            if who == f"budget '{BUDGET}'" and where == target
        ]

    def actions_to(self, agent: LaunchedAgent) -> list[str]:
        ctime = psutil.Process(agent.pid).create_time()
        return [action for action, _ in self.commands_to(agent, ctime)]

    def agents(self) -> tuple[int, int]:
        """(running, paused) agents the node reported with its last hello."""
        reply = httpx.get(
            self.served.url + "/api/v1/machines", headers=self.served.headers("viewer"), timeout=10
        )
        for row in reply.json():
            if row["machine"] == NODE:
                return row["agents_running"], row["agents_paused"]
        return 0, 0


@contextmanager
def stopped_scope(tmp: Path, agent: Agent, commands: str | None = None) -> Iterator[StoppedScope]:
    """A day budget (pause at $0.10) crossed by one call of an agent that had exited before
    its node started: the budget stands stopped with no agent paused. `commands`: the command
    address the node dials (default the hub's)."""
    served = serve_hub(tmp)
    with fleet.processes() as started:
        started.append(served.proc)
        # the node idles between hellos longer than the harness's 3 s before it reads as quiet
        doc = tomlkit.parse(served.setup.config.read_text())
        doc["stale_after"] = 60.0
        served.setup.config.write_text(tomlkit.dumps(doc))
        restart(served, tmp)
        started.append(served.proc)
        made = add_budget(
            served, name=BUDGET, scope=f"machine={NODE}", period="day", basis="api",
            limit="0.10", action="pause",
        )  # fmt: skip
        assert made.status_code == 201, made.text
        home = tmp / "homes" / "p"
        home.mkdir(parents=True)
        env = fleet.child_env(tmp)
        gone = launch(
            agent, home, "--mode", "runaway", "--calls", "1", "--then", "exit", "--children",
            "0", "--machine", NODE, "--profile", "p", env=env,
        )  # fmt: skip
        assert gone.popen.wait(30) == 0
        profile = fleet.ProfileSpec("p", agent, home)
        node = fleet.write_node(tmp, NODE, served.setup, [profile], commands=commands)
        started.append(fleet.start_node(node, tmp))
        scope = StoppedScope(served, started, agent, home, tmp, profile, started[-1])
        fleet.wait_for(
            lambda: scope.row()["last_action"] == "100 %: no agent to pause in scope",
            60,
            "the crossing with no agent in scope",
        )
        assert scope.row()["state"] == "stopped"
        yield scope


def paused(agent: LaunchedAgent) -> bool:
    return states(agent) == {psutil.STATUS_STOPPED}


def test_an_agent_joining_a_stopped_scope_is_paused_once_when_its_node_reports_it(
    tmp_path: Path,
) -> None:
    with stopped_scope(tmp_path, Agent.CLAUDE_CODE) as scope:
        spent = scope.row()["spent"]
        joiner = scope.join("joiner.truth")
        late: LaunchedAgent | None = None
        try:
            fleet.wait_for(lambda: paused(joiner), 60, "the joiner's whole tree paused")
            # stopped before any call of its own: nothing logged, nothing more spent
            assert (tmp_path / "joiner.truth").read_text() == ""
            assert scope.row()["spent"] == spent
            fleet.wait_for(
                lambda: scope.row()["last_action"] == "100 %: paused 1 agent", 10, "the summary"
            )
            assert scope.actions_to(joiner) == ["pause"]
            summaries = [r for _, a, _, r in scope.audit() if a == "budget pause"]
            assert len(summaries) == 2 and summaries[0].endswith(": paused 1 agent"), summaries

            # killed (-9); an agent joins while the hub is down; the hub comes back
            fleet.stop(scope.served.proc, signal.SIGKILL)
            late = scope.join("late.truth")
            restart(scope.served, tmp_path, signal.SIGKILL)
            scope.started.append(scope.served.proc)
            fleet.wait_for(lambda: paused(late), 60, "the agent that joined during the outage")
            assert (tmp_path / "late.truth").read_text() == ""
            fleet.wait_for(lambda: scope.agents() == (0, 2), 30, "both reported paused")
            fleet.wait_for(
                lambda: len([1 for _, a, _, _ in scope.audit() if a == "budget pause"]) == 3,
                10,
                "the restarted hub's summary",
            )
            # the first one's pause was not sent again; each agent had exactly one command
            assert scope.actions_to(joiner) == ["pause"]
            assert scope.actions_to(late) == ["pause"]
            assert paused(joiner)
            db = scope.served.setup.data_dir / "hub.db"
            with sqlite3.connect(db, timeout=5) as con:
                stops = con.execute("SELECT pid, outcome FROM budget_stops ORDER BY at").fetchall()
            assert stops == [(joiner.pid, "paused"), (late.pid, "paused")]
        finally:
            joiner.destroy()
            if late is not None:
                late.destroy()


def test_a_codex_joining_a_stopped_scope_is_interrupted_then_paused(tmp_path: Path) -> None:
    with stopped_scope(tmp_path, Agent.CODEX) as scope:
        joiner = scope.join("joiner.truth")
        create_time = psutil.Process(joiner.pid).create_time()
        try:
            fleet.wait_for(
                lambda: scope.row()["last_action"] != "100 %: no agent to pause in scope",
                60,
                "the budget's stop of the joiner",
            )
            commands = scope.commands_to(joiner, create_time)
            assert commands[0][0] == "interrupt", commands
            # Its rollout tells of no turn yet: SIGINT (the fake ends on it, as `codex exec`
            # does with its turn) and nothing left to pause; or idle, and the pause follows.
            if commands[0][1].startswith("exited"):
                assert len(commands) == 1 and joiner.popen.wait(10) == 0, commands
                assert scope.row()["last_action"] == "100 %: paused 0 agents, 1 exited"
            else:
                assert [a for a, _ in commands] == ["interrupt", "pause"], commands
                fleet.wait_for(lambda: paused(joiner), 10, "the joiner's whole tree paused")
            assert (tmp_path / "joiner.truth").read_text() == ""
        finally:
            joiner.destroy()


@pytest.mark.parametrize("how", ["resumed by a person", "limit raised"])
def test_a_stop_a_person_released_leaves_later_agents_alone(tmp_path: Path, how: str) -> None:
    """Joiners are stopped only while the stop stands: once a person resumed an agent it
    paused, or raised the limit, a later agent runs on (judged two hellos after the one that
    named it: the governor checks a joiner as soon as the hello naming it is committed)."""
    with stopped_scope(tmp_path, Agent.CLAUDE_CODE) as scope:
        first = scope.join("first.truth")
        later: LaunchedAgent | None = None
        try:
            fleet.wait_for(lambda: paused(first), 60, "the first joiner paused")
            headers = scope.served.headers("operator")
            if how == "resumed by a person":
                body = {"pid": first.pid}
                reply = httpx.post(
                    scope.served.url + "/api/v1/commands/resume",
                    json={"machine": NODE, **body}, headers=headers, timeout=30,
                )  # fmt: skip
            else:
                reply = httpx.post(
                    scope.served.url + f"/api/v1/budgets/{BUDGET.replace(' ', '%20')}/override",
                    json={"limit": "100", "until": time.time() + 3600, "why": "release"},
                    headers=headers,
                    timeout=30,
                )
            assert reply.status_code == 200, reply.text
            later = scope.join("later.truth")
            fleet.wait_for(lambda: sum(scope.agents()) == 2, 30, "the later agent reported")
            # the governor's joiner check runs on the actor thread right after the hello;
            # a hello later still (the next heartbeat) means it has had its turn
            heartbeats = batches(scope)
            fleet.wait_for(lambda: batches(scope) >= heartbeats + 2, 30, "two more hellos")
            assert not paused(later)
            assert scope.actions_to(later) == []
        finally:
            first.destroy()
            if later is not None:
                later.destroy()


def batches(scope: StoppedScope) -> int:
    reply = httpx.get(
        scope.served.url + "/metrics", headers=scope.served.headers("viewer"), timeout=10
    )
    for line in reply.text.splitlines():
        if line.startswith("fleetmeter_batches_total"):
            return int(float(line.split()[-1]))
    raise AssertionError("no batch counter in /metrics")
