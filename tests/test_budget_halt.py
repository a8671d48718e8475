"""The governor stopping real agents: a real `fleet-hub serve`, a real `node-agent run`, fake
agents writing real Claude logs; a budget's crossing pauses the agent's whole tree (state T)
through the commander, a rolling window's next period resumes it, and a hub killed (-9) just
after a crossing acts once when it comes back."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import httpx
import psutil
import tomlkit

from hub.budgets.model import parse_budget
from hub.serve import Hub
from hub.service import FleetService
from node_agent.simulate.fake_agent import LaunchedAgent, launch
from shared.events import Agent
from tests import fleet_harness as fleet
from tests.api_harness import ServedHub, serve_hub
from tests.budget_harness import add_budget, budgets, restart
from tests.test_fleet_commands import states

NODE = "spark07"


def _fleet(
    tmp: Path, served: ServedHub, started: list[subprocess.Popen[bytes]], *args: str
) -> LaunchedAgent:
    """A node (online at the hub) and then an agent on it."""
    home = tmp / "homes" / "api-a"
    home.mkdir(parents=True)
    config = fleet.write_node(
        tmp, NODE, served.setup, [fleet.ProfileSpec("api-a", Agent.CLAUDE_CODE, home)]
    )
    started.append(fleet.start_node(config, tmp))

    def online() -> bool:
        reply = httpx.get(served.url + "/api/v1/nodes", headers=served.headers("viewer"))
        return any(n["machine"] == NODE and n["state"] == "online" for n in reply.json())

    fleet.wait_for(online, 30, "the node online")
    return launch(
        Agent.CLAUDE_CODE, home, "--children", "1", "--machine", NODE, "--profile", "api-a",
        *args, env=fleet.child_env(tmp),
    )  # fmt: skip


@contextmanager
def _runaway_under(tmp: Path, **budget: str) -> Iterator[tuple[ServedHub, LaunchedAgent]]:
    """A served hub with the budget, then a node and a runaway agent on it (a call writes
    ~$1 of cache); everything stopped on the way out."""
    served = serve_hub(tmp)
    with fleet.processes() as started:
        started.append(served.proc)
        made = add_budget(served, **budget)
        assert made.status_code == 201, made.text
        agent = _fleet(tmp, served, started, "--mode", "runaway", "--pace", "0.3")
        try:
            yield served, agent
        finally:
            agent.destroy()
            started.append(served.proc)  # a restarted hub is stopped too


@contextmanager
def _hourly_runaway(tmp_path: Path) -> Iterator[tuple[Hub, FleetService, LaunchedAgent]]:
    """An in-process hub (the same core as `fleet-hub serve`) with an hourly $3 pause budget
    that resumes at the next hour, a node, and a runaway agent on it."""
    with fleet.running_hub(tmp_path) as (hub, setup), fleet.processes() as started:
        assert hub.governor is not None and hub.service is not None
        service = hub.service
        hub.governor.add_budget(
            parse_budget({"name": "hourly", "scope": f"machine={NODE}", "period": "hour",
                          "basis": "api", "limit": "3.00", "action": "pause",
                          "next_period": "resume"}),
            "test",
        )  # fmt: skip
        home = tmp_path / "homes" / "api-a"
        home.mkdir(parents=True)
        profile = fleet.ProfileSpec("api-a", Agent.CLAUDE_CODE, home)
        started.append(
            fleet.start_node(fleet.write_node(tmp_path, NODE, setup, [profile]), tmp_path)
        )
        fleet.wait_for(lambda: any(v.record.node == NODE for v in service.nodes()), 30, "the node")
        agent = launch(
            Agent.CLAUDE_CODE, home, "--mode", "runaway", "--pace", "0.3", "--children", "1",
            "--machine", NODE, "--profile", "api-a", env=fleet.child_env(tmp_path),
        )  # fmt: skip
        try:
            yield hub, service, agent
        finally:
            agent.destroy()


def _stopped(agent: LaunchedAgent) -> bool:
    return states(agent) == {psutil.STATUS_STOPPED}


def _audit(served: ServedHub) -> list[tuple[str, str, str]]:
    reply = httpx.get(
        served.url + "/api/v1/audit?limit=500", headers=served.headers("viewer"), timeout=10
    )
    return [(r["who"], r["action"], r["result"]) for r in reply.json()["rows"]]


def test_a_runaway_is_paused_whole_tree_at_its_budget(tmp_path: Path) -> None:
    with _runaway_under(
        tmp_path, name="spark07 day", scope=f"machine={NODE}", period="day", basis="paid",
        limit="5.00", action="pause",
    ) as (served, agent):  # fmt: skip
        fleet.wait_for(lambda: _stopped(agent), 60, "the agent's tree stopped (state T)")
        fleet.wait_for(lambda: budgets(served)["spark07 day"]["state"] == "stopped", 10, "stopped")
        row = budgets(served)["spark07 day"]
        assert row["last_action"] == "100 %: paused 1 agent"
        assert row["overshoot"] is not None
        # the stop lands within about one call of the limit, on either side
        assert abs(Decimal(row["overshoot"])) < Decimal("1.20"), row
        acts = _audit(served)
        assert any(
            who == "budget 'spark07 day'" and act == "pause" and "paused" in result
            for who, act, result in acts
        )
        # (a crossing whose batch came before the node listed the agent finds no agent; the
        # hello that names it then brings the pause: one more row, the newest)
        summaries = [r for w, a, r in acts if a == "budget pause"]
        assert "at 100 %: " in summaries[0] and "paused 1 agent" in summaries[0]
        assert all(r.endswith("no agent to pause in scope") for r in summaries[1:]), summaries
        assert len(summaries) <= 2, summaries
        assert _stopped(agent)  # and it stays stopped: nothing resumes it in this period


def test_a_rolling_window_resumes_what_it_paused_when_the_window_has_room(
    tmp_path: Path,
) -> None:
    with _runaway_under(
        tmp_path, name="burst", scope="agent=claude-code", period="10s", basis="api",
        limit="3.00", action="pause", next_period="resume",
    ) as (served, agent):  # fmt: skip
        fleet.wait_for(lambda: _stopped(agent), 60, "the agent paused")
        paused_at = time.monotonic()
        fleet.wait_for(lambda: psutil.STATUS_STOPPED not in states(agent), 60, "it resumed")
        # not before its calls have left the 10 s window
        assert time.monotonic() - paused_at > 7
        acts = _audit(served)
        assert any(a == "budget resume" and "resumed 1 agent" in r for _, a, r in acts)
        assert any(w == "budget 'burst'" and a == "resume" for w, a, _ in acts)


def test_a_hub_killed_just_after_a_crossing_acts_once(tmp_path: Path) -> None:
    with _runaway_under(
        tmp_path, name="spark07 day", scope=f"machine={NODE}", period="day", basis="api",
        limit="3.00", action="pause",
    ) as (served, agent):  # fmt: skip
        db = served.setup.data_dir / "hub.db"

        def marked() -> bool:
            with sqlite3.connect(db, timeout=5) as con:
                return bool(
                    con.execute(
                        "SELECT count(*) FROM budget_marks WHERE mark LIKE '100@%'"
                    ).fetchone()[0]
                )

        fleet.wait_for(marked, 60, "the crossing committed", every=0.02)
        served.proc.send_signal(signal.SIGKILL)  # at once: before or while it acts
        restart(served, tmp_path, signal.SIGKILL)
        fleet.wait_for(lambda: _stopped(agent), 60, "the agent paused")
        fleet.wait_for(lambda: budgets(served)["spark07 day"]["state"] == "stopped", 20, "stopped")
        with sqlite3.connect(db, timeout=5) as con:
            marks = con.execute(
                "SELECT mark, state FROM budget_marks WHERE mark LIKE '100@%'"
            ).fetchall()
            stops = con.execute("SELECT pid, outcome FROM budget_stops").fetchall()
        assert len(marks) == 1 and marks[0][1] == "done"
        assert [pid for pid, _ in stops] == [agent.pid]
        summaries = [r for _, a, r in _audit(served) if a == "budget pause"]
        # one stop (killed while acting: "1 already paused" after the restart); a crossing
        # that found no agent yet may come before it (see above)
        assert not summaries[0].endswith("no agent to pause in scope"), summaries
        assert all(r.endswith("no agent to pause in scope") for r in summaries[1:]), summaries
        assert len(summaries) <= 2, summaries
        # A kill -9 between a pause's audit row and the record of its stop (`budget_stops`,
        # written once the node's answer is in) sends the pause again after the restart, once
        # at most: a SIGSTOP to a stopped tree changes nothing, and the stop is recorded once
        # (above). Before the kill there is one command; never a third.
        pauses = [r for w, a, r in _audit(served) if w == "budget 'spark07 day'" and a == "pause"]
        assert len(pauses) <= 2, pauses
        assert all(r.startswith(("paused:", "no answer")) for r in pauses), pauses
        assert _stopped(agent)


def test_a_kill_budget_ends_the_whole_tree(tmp_path: Path) -> None:
    with _runaway_under(
        tmp_path, name="no runaways", scope="agent=claude-code", period="hour", basis="api",
        limit="3.00", action="kill",
    ) as (served, agent):  # fmt: skip
        tree = agent.tree()
        fleet.wait_for(
            lambda: all(not p.is_running() or p.status() == "zombie" for p in tree),
            60, "the agent's whole tree gone",
        )  # fmt: skip
        fleet.wait_for(
            lambda: any(
                a == "budget kill" and "at 100 %" in r and r.endswith("killed 1 agent")
                for _, a, r in _audit(served)
            ),
            10, "the kill in the audit log",
        )  # fmt: skip


def test_a_calendar_budget_resumes_what_it_paused_at_the_next_period(tmp_path: Path) -> None:
    """An in-process hub (the same core as `fleet-hub serve`) whose governor's clock is moved
    an hour on: the hour's budget pauses the agent, the next hour resumes it."""
    with _hourly_runaway(tmp_path) as (hub, service, agent):
        assert hub.governor is not None
        fleet.wait_for(lambda: _stopped(agent), 60, "the agent paused")
        assert _stopped(agent)  # the hour is not over: it stays paused
        hub.governor.clock = lambda: time.time() + 3600  # the next hour
        fleet.wait_for(lambda: psutil.STATUS_STOPPED not in states(agent), 30, "it resumed")
        fleet.wait_for(
            lambda: any(
                "budget 'hourly'" in item.text and "new period, resumed 1 agent" in item.text
                for item in service.recent_feed()
            ),
            10, "the resume in the feed",
        )  # fmt: skip


def test_a_pause_a_person_took_over_is_left_as_they_set_it_at_the_next_period(
    tmp_path: Path,
) -> None:
    """The hour's budget pauses the agent; a person resumes it, then pauses it again (theirs
    now): the next hour the governor does not resume it. It resumes only what its own pause
    still holds."""
    with _hourly_runaway(tmp_path) as (hub, service, agent):
        assert hub.governor is not None
        fleet.wait_for(lambda: _stopped(agent), 60, "the agent paused by the budget")
        for action in ("resume", "pause"):  # a person takes the agent over
            for _, p in service.processes(NODE):
                done = service.command(NODE, action, p.pid, p.create_time, who="ops")
                assert done.ok, done
        assert _stopped(agent)
        hub.governor.clock = lambda: time.time() + 3600  # the next hour
        fleet.wait_for(
            lambda: any(
                "budget 'hourly'" in item.text and "new period, resumed 0 agents" in item.text
                for item in service.recent_feed()
            ),
            30, "the governor's new period in the feed",
        )  # fmt: skip
        assert _stopped(agent)  # still as the person left it
        assert not [r for r in service.audit_log(500) if r.action == "resume" and r.who != "ops"]


def test_an_agent_its_node_reports_after_the_crossing_is_paused_and_that_is_the_last_action(
    tmp_path: Path,
) -> None:
    served = serve_hub(tmp_path)
    name = "spark07 day"
    with fleet.processes() as started:
        started.append(served.proc)
        # the node idles between the two agents: longer than the harness's 3 s before it
        # reads as quiet (which would make 'unverified' the last action)
        doc = tomlkit.parse(served.setup.config.read_text())
        doc["stale_after"] = 60.0
        served.setup.config.write_text(tomlkit.dumps(doc))
        restart(served, tmp_path)
        started.append(served.proc)
        made = add_budget(
            served, name=name, scope=f"machine={NODE}", period="day", basis="paid",
            limit="0.50", action="pause",
        )  # fmt: skip
        assert made.status_code == 201, made.text
        # A call (~$1) logged by an agent that is gone by the time its node starts and reads
        # it: the crossing finds no agent in scope.
        home = tmp_path / "homes" / "api-a"
        home.mkdir(parents=True)
        env = fleet.child_env(tmp_path)
        gone = launch(
            Agent.CLAUDE_CODE, home, "--mode", "runaway", "--calls", "1", "--then", "exit",
            "--children", "0", "--machine", NODE, "--profile", "api-a", env=env,
        )  # fmt: skip
        assert gone.popen.wait(30) == 0
        profile = fleet.ProfileSpec("api-a", Agent.CLAUDE_CODE, home)
        started.append(
            fleet.start_node(fleet.write_node(tmp_path, NODE, served.setup, [profile]), tmp_path)
        )

        def last_action() -> str:
            return str(budgets(served)[name]["last_action"])

        fleet.wait_for(
            lambda: last_action() == "100 %: no agent to pause in scope", 60, "the crossing"
        )
        crossed_at = budgets(served)[name]["last_action_at"]

        # The agent launched next: its calls land in the stopped scope, and once its node has
        # reported it, the governor pauses it; that is the budget's last action now.
        agent = launch(
            Agent.CLAUDE_CODE, home, "--mode", "runaway", "--pace", "0.3", "--children", "1",
            "--machine", NODE, "--profile", "api-a", env=env,
        )  # fmt: skip
        try:
            fleet.wait_for(lambda: _stopped(agent), 60, "the later agent's tree stopped")
            fleet.wait_for(lambda: last_action() == "100 %: paused 1 agent", 10, "last action")
            row = budgets(served)[name]
            assert row["state"] == "stopped" and row["last_action_at"] > crossed_at
            audited = [r for _, a, r in _audit(served) if a == "budget pause"]
            assert len(audited) == 2 and audited[1].endswith("no agent to pause in scope"), audited
            assert audited[0].endswith(": paused 1 agent"), audited  # newest first

            # killed (-9) and started again: the same last action, the agent paused once
            restart(served, tmp_path, signal.SIGKILL)
            started.append(served.proc)
            assert last_action() == "100 %: paused 1 agent"
            assert budgets(served)[name]["last_action_at"] == row["last_action_at"]
            db = served.setup.data_dir / "hub.db"
            with sqlite3.connect(db, timeout=5) as con:
                stops = con.execute("SELECT pid, outcome FROM budget_stops").fetchall()
            assert stops == [(agent.pid, "paused")]
            assert _stopped(agent)
            assert len([1 for _, a, _ in _audit(served) if a == "budget pause"]) == 2
        finally:
            agent.destroy()
