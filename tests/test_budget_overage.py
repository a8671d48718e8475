"""A paid-dollars budget on a Claude subscription counts what the Agent SDK credit's rule
(`pricing.sdk_credit`) makes paid: the overage past the credit (metered) and the calls whose log
does not say how Claude Code was started (estimated), as every other spend surface does; a late
call that re-draws the month moves the budget's figure with it; and the figures and the stop
survive a hub killed with -9."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import psutil

from hub.config import load_hub_config
from node_agent.simulate.fake_agent import launch
from pricing import Billing
from shared.events import Agent
from tests import fleet_harness as fleet
from tests.api_harness import ROLES, ServedHub, fleet_hub
from tests.budget_harness import add_budget, budgets, restart
from tests.test_fleet_commands import states
from tests.test_sdk_classes import _transcript
from tests.test_source_claude import OTHER_SESSION, SESSION

NODE = "spark01"
PROFILE = "max-a"  # a Pro plan: a $20 Agent SDK credit, extra usage on (overage billed)


@contextmanager
def _subscription_fleet(tmp: Path, home: Path) -> Iterator[ServedHub]:
    """A served hub whose config turns extra usage on for spark01/max-a, and a node-agent
    reading `home` as that Pro profile; both stopped on the way out."""
    setup = fleet.make_hub(tmp)
    setup.config.write_text(
        setup.config.read_text()
        + f'\n[[subscriptions]]\nprofile = "{NODE}/{PROFILE}"\nextra_usage = true\n'
    )
    tokens = {}
    for role in ROLES:
        extra = ["--machine", NODE] if role == "agent" else []
        done = fleet_hub(tmp, "token", "create", f"t-{role}", "--role", role, *extra,
                         "--config", str(setup.config))  # fmt: skip
        assert done.returncode == 0, done.stderr
        tokens[role] = done.stdout.split()[-1]
    node_config = fleet.write_node(
        tmp,
        NODE,
        setup,
        [fleet.ProfileSpec(PROFILE, Agent.CLAUDE_CODE, home, Billing.SUBSCRIPTION)],
    )
    node_config.write_text(node_config.read_text() + 'plan = "pro"\n')
    with fleet.processes() as started:
        url = f"http://{load_hub_config(setup.config).api_listen}"
        served = ServedHub(setup, fleet.start_hub(setup, tmp), url, tokens, tmp)
        started.append(served.proc)
        started.append(fleet.start_node(node_config, tmp))
        try:
            yield served
        finally:
            started.append(served.proc)  # a restarted hub is stopped too


def _paid_in_report(served: ServedHub, tmp: Path) -> Decimal:
    """The profile's metered + estimated dollars as `fleet-hub report` gives them."""
    report = fleet.hub_report(served.setup, tmp, "profile")
    return sum(
        (
            Decimal(row["cost"]["metered"]) + Decimal(row["cost"]["estimated"])
            for row in report["rows"]
            if row["profile"] == PROFILE
        ),
        Decimal(0),
    )


def _api_in_report(served: ServedHub, tmp: Path) -> Decimal:
    report = fleet.hub_report(served.setup, tmp, "profile")
    return sum(
        (Decimal(r["cost"]["api_equivalent"]) for r in report["rows"] if r["profile"] == PROFILE),
        Decimal(0),
    )


def _online(served: ServedHub) -> bool:
    reply = httpx.get(served.url + "/api/v1/nodes", headers=served.headers("viewer"), timeout=10)
    return any(n["machine"] == NODE and n["state"] == "online" for n in reply.json())


def _spent(served: ServedHub, name: str) -> Decimal:
    return Decimal(budgets(served)[name]["spent"])


def _today_base() -> float:
    now = time.time()
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(now - 600, today.timestamp() + 1)  # today, in the budget's day (UTC)


def test_a_paid_budget_crossed_only_by_overage_stops_the_agent_once(tmp_path: Path) -> None:
    home = tmp_path / "homes" / PROFILE
    home.mkdir(parents=True)
    with _subscription_fleet(tmp_path, home) as served:
        made = add_budget(served, name="overage", scope=f"profile={PROFILE}", period="day",
                          basis="paid", limit="2.00", action="pause")  # fmt: skip
        assert made.status_code == 201, made.text
        # an Agent SDK run (`claude -p`): about $1 of cache writes a call, all inside the $20
        # credit (paid $0) until the credit is spent
        agent = launch(
            Agent.CLAUDE_CODE, home, "--children", "1", "--machine", NODE, "--profile",
            PROFILE, "--mode", "runaway", "--pace", "0.3", "--entrypoint", "sdk-cli",
            env=fleet.child_env(tmp_path),
        )  # fmt: skip
        try:
            fleet.wait_for(
                lambda: states(agent) == {psutil.STATUS_STOPPED}, 120, "the agent paused"
            )
            fleet.wait_for(lambda: budgets(served)["overage"]["state"] == "stopped", 20, "stopped")
            # the credit was spent first: the stop came from overage alone
            assert _api_in_report(served, tmp_path) > Decimal(20)
            # once the paused agent's last calls are in, the budget counts what the report
            # calls paid, to the cent
            fleet.wait_for(
                lambda: _spent(served, "overage") == _paid_in_report(served, tmp_path),
                30,
                "the budget's figure equal to the report's metered + estimated",
            )
            settled = _spent(served, "overage")
            assert settled > 0  # (the stop lands within about one call of the $2 limit)

            # killed with -9 and started again: the same figure, and no second stop
            restart(served, tmp_path, signal.SIGKILL)
            assert _spent(served, "overage") == settled
            assert budgets(served)["overage"]["state"] == "stopped"
            # the node's next hello names the paused agent again: it must not be stopped twice
            fleet.wait_for(lambda: _online(served), 30, "the node back online")
            with sqlite3.connect(served.setup.data_dir / "hub.db", timeout=5) as con:
                marks = con.execute(
                    "SELECT mark FROM budget_marks WHERE budget = 'overage' AND mark LIKE '100@%'"
                ).fetchall()
                stops = con.execute("SELECT pid FROM budget_stops").fetchall()
            assert len(marks) == 1, marks
            assert [pid for (pid,) in stops] == [agent.pid]
            assert states(agent) == {psutil.STATUS_STOPPED}
        finally:
            agent.destroy()


def test_a_late_call_that_re_draws_the_month_moves_the_budget(tmp_path: Path) -> None:
    home = tmp_path / "claude"
    base = _today_base()
    # $15 calls: two SDK calls ($30 against the $20 credit: $10 overage), an interactive one
    # (the plan's windows: not paid) and one whose log does not say (estimated: $15)
    _transcript(home, SESSION, [("c1", base + 10, "sdk-cli"), ("c2", base + 20, "sdk-cli"),
                                ("c3", base + 30, "cli"), ("c4", base + 40, None)])  # fmt: skip
    with _subscription_fleet(tmp_path, home) as served:
        made = add_budget(served, name="paid", scope=f"profile={PROFILE}", period="day",
                          basis="paid", limit="1000", action="alert")  # fmt: skip
        assert made.status_code == 201, made.text
        fleet.wait_for(lambda: _spent(served, "paid") == Decimal(25), 60, "$10 + $15 counted")
        assert _paid_in_report(served, tmp_path) == Decimal(25)

        # a call from before them arrives late: it takes the credit first, so $15 more of the
        # later calls is overage
        _transcript(home, OTHER_SESSION, [("c0", base + 5, "sdk-py")])
        fleet.wait_for(lambda: _spent(served, "paid") == Decimal(40), 60, "the re-draw counted")
        assert _paid_in_report(served, tmp_path) == Decimal(40)

        # a hub killed with -9 recounts the same from its store
        restart(served, tmp_path, signal.SIGKILL)
        assert _spent(served, "paid") == Decimal(40)
