"""A budget's stop its node did not take is tried again until the node confirms it: a real
`fleet-hub serve`, a real `node-agent run` and a fake agent at its prompt. The node ships its
hellos but dials a command address nobody listens on (a firewall in the way), so the pause
gets no answer; it is retried with a backoff, audited once per outcome, through a kill -9 of
the hub, and lands once the node dials the hub again. Nothing is repeated after that, across
another kill -9."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import psutil

from shared.events import Agent
from tests import fleet_harness as fleet
from tests.budget_harness import restart
from tests.test_budget_joiners import NODE, StoppedScope, batches, paused, stopped_scope

NO_ANSWER = f"no answer: no answer from {NODE}"


def _rows(scope: StoppedScope, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(scope.served.setup.data_dir / "hub.db", timeout=5) as con:
        return con.execute(sql).fetchall()


def _failures(scope: StoppedScope) -> int:
    rows = _rows(scope, "SELECT failures FROM budget_retries")
    return int(rows[0][0]) if rows else 0


def _kill_hub(scope: StoppedScope, tmp: Path) -> None:
    restart(scope.served, tmp, signal.SIGKILL)
    scope.started.append(scope.served.proc)


def test_a_pause_the_node_did_not_answer_is_retried_until_it_lands_once(tmp_path: Path) -> None:
    unreachable = f"tcp://127.0.0.1:{fleet.free_port()}"
    with stopped_scope(tmp_path, Agent.CLAUDE_CODE, commands=unreachable) as scope:
        joiner = scope.join("joiner.truth")
        try:
            ctime = psutil.Process(joiner.pid).create_time()
            fleet.wait_for(
                lambda: scope.commands_to(joiner, ctime) == [("pause", NO_ANSWER)],
                60,
                "the pause that got no answer",
            )
            # not recorded as stopped: pending a retry, with its reason
            assert _rows(scope, "SELECT pid FROM budget_stops") == []
            fleet.wait_for(
                lambda: (
                    scope.row()["last_action"]
                    == "100 %: paused 0 agents, 1 retrying after no answer"
                ),
                30,
                "the standing that says a retry is pending",
            )
            assert _rows(scope, "SELECT pid, reason FROM budget_retries") == [
                (joiner.pid, NO_ANSWER)
            ]
            # tried again (5 s on): the same outcome is not audited again
            fleet.wait_for(lambda: _failures(scope) >= 2, 40, "a second try")
            assert scope.commands_to(joiner, ctime) == [("pause", NO_ANSWER)]

            # killed (-9) while the retry pends: the restarted hub reads it from the store
            tried = _failures(scope)
            _kill_hub(scope, tmp_path)
            fleet.wait_for(lambda: _failures(scope) > tried, 60, "a try by the restarted hub")
            assert scope.commands_to(joiner, ctime) == [("pause", NO_ANSWER)]
            assert not paused(joiner)

            # the node dials the hub's command address again (restarted with its real config)
            fleet.stop(scope.started.pop(scope.started.index(scope.node)))
            config = fleet.write_node(tmp_path, NODE, scope.served.setup, [scope.profile])
            scope.node = fleet.start_node(config, tmp_path)
            scope.started.append(scope.node)
            fleet.wait_for(lambda: paused(joiner), 120, "the joiner paused by a retry")
            fleet.wait_for(
                lambda: scope.row()["last_action"] == "100 %: paused 1 agent",
                30,
                "the standing of the confirmed stop",
            )
            commands = scope.commands_to(joiner, ctime)
            assert [r.split(":")[0] for _, r in commands] == ["no answer", "paused"], commands
            assert _rows(scope, "SELECT pid, outcome FROM budget_stops") == [(joiner.pid, "paused")]
            assert _rows(scope, "SELECT * FROM budget_retries") == []
            assert (tmp_path / "joiner.truth").read_text() == ""

            # killed (-9) again: the stop made is neither sent again nor recorded twice
            _kill_hub(scope, tmp_path)
            heartbeats = batches(scope)
            since = time.monotonic()
            fleet.wait_for(
                lambda: batches(scope) >= heartbeats + 2 and time.monotonic() > since + 12,
                60,
                "two hellos and two sweeps of the restarted hub",
            )
            assert scope.commands_to(joiner, ctime) == commands
            assert _rows(scope, "SELECT pid, outcome FROM budget_stops") == [(joiner.pid, "paused")]
            assert paused(joiner)
        finally:
            joiner.destroy()
