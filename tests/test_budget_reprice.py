"""A corrected price table moves the budgets at once: a real `fleet-hub serve`, a real
`node-agent run` and a fake agent that logged two Sonnet 4.5 calls and sits at its prompt.
`fleet-hub prices install` doubles the rates: the budget's spent figure doubles as soon as the
serving hub re-prices the day (the figure a restart gives, through the API and `fleet-hub
budget list`), and the re-priced spend over the limit pauses the agent as a live crossing would,
once, across a kill -9. A second table halves the rates: the spend falls under the limit and
the stop stands (a person resumes)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import psutil
import tomlkit

from hub._node_news import pause_target
from node_agent.simulate.fake_agent import LaunchedAgent, launch
from shared.events import Agent
from tests import fleet_harness as fleet
from tests.api_harness import ServedHub, serve_hub
from tests.budget_harness import add_budget, budgets, restart
from tests.test_budget_joiners import paused

NODE = "spark07"
BUDGET = "spark07 day"
RATES = {  # Sonnet 4.5's list rates per MTok
    "input": Decimal(3),
    "output": Decimal(15),
    "reasoning": Decimal(15),
    "cache_read": Decimal("0.30"),
    "cache_write_5m": Decimal("3.75"),
    "cache_write_1h": Decimal(6),
}


def _table(tmp: Path, factor: Decimal) -> Path:
    """Sonnet 4.5's rates times `factor` from yesterday on (installed under one name: a
    second install replaces the first)."""
    since = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    lines = [
        'schema = 1\nprovider = "anthropic"\ncurrency = "USD"',
        "[[models]]",
        'id = "claude-sonnet-4-5"',
        'name = "Claude Sonnet 4.5"',
        'sources = [{ name = "cost report", ref = "reconciliation", checked = 2026-12-01 }]',
        "[[models.periods]]",
        f"from = {since}",
        "[models.periods.rates]",
        *(f'{k} = "{v * factor}"' for k, v in RATES.items()),
    ]
    folder = tmp / f"table-{factor}"
    folder.mkdir()
    path = folder / "sonnet-fix.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _spent(served: ServedHub) -> Decimal:
    return Decimal(str(budgets(served)[BUDGET]["spent"]))


def _listed(served: ServedHub) -> Decimal:
    """The spent figure `fleet-hub budget list --json` shows."""
    done = served.cli("budget", "list", "--json", "--token", served.tokens["viewer"])
    assert done.returncode == 0, done.stderr
    [row] = [r for r in orjson.loads(done.stdout)["budgets"] if r["name"] == BUDGET]
    return Decimal(row["spent"])


def _commands(served: ServedHub, agent: LaunchedAgent, ctime: float) -> list[tuple[str, str]]:
    """What the budget did, from the audit log, oldest first: (action, what of the result
    before its detail), a command to `agent` as ("pause", "paused")."""
    reply = httpx.get(
        served.url + "/api/v1/audit?limit=500", headers=served.headers("viewer"), timeout=10
    )
    target = pause_target(NODE, agent.pid, ctime)
    return [
        (r["action"], r["result"].split(":")[0] if r["target"] == target else r["target"])
        for r in reversed(reply.json()["rows"])
        if r["who"] == f"budget '{BUDGET}'"
    ]


def _hard_marks(served: ServedHub) -> int:
    with sqlite3.connect(served.setup.data_dir / "hub.db", timeout=5) as con:
        [(n,)] = con.execute("SELECT count(*) FROM budget_marks WHERE action = 'pause'")
    return int(n)


def _install(served: ServedHub, table: Path) -> None:
    done = served.cli("prices", "install", str(table))
    assert done.returncode == 0, done.stderr


def _kill_and_restart(served: ServedHub, tmp: Path, started: list[subprocess.Popen[bytes]]) -> None:
    restart(served, tmp, signal.SIGKILL)
    started.append(served.proc)


def test_a_reprice_moves_a_budget_at_once_and_crosses_it_as_a_live_call_would(
    tmp_path: Path,
) -> None:
    served = serve_hub(tmp_path)
    with fleet.processes() as started:
        started.append(served.proc)
        # the node idles between hellos longer than the harness's 3 s before it reads as quiet
        doc = tomlkit.parse(served.setup.config.read_text())
        doc["stale_after"] = 60.0
        served.setup.config.write_text(tomlkit.dumps(doc))
        restart(served, tmp_path)
        started.append(served.proc)
        made = add_budget(
            served, name=BUDGET, scope=f"machine={NODE}", period="day", basis="api",
            limit="1000", action="pause",
        )  # fmt: skip
        assert made.status_code == 201, made.text
        home = tmp_path / "homes" / "p"
        home.mkdir(parents=True)
        truth = tmp_path / "agent.truth"
        agent = launch(
            Agent.CLAUDE_CODE, home, "--calls", "2", "--then", "idle", "--pace", "0.2",
            "--children", "1", "--machine", NODE, "--profile", "p", "--truth", str(truth),
            env=fleet.child_env(tmp_path),
        )  # fmt: skip
        try:
            ctime = psutil.Process(agent.pid).create_time()
            profile = fleet.ProfileSpec("p", Agent.CLAUDE_CODE, home)
            started.append(fleet.start_node(fleet.write_node(tmp_path, NODE, served.setup,
                                                             [profile]), tmp_path))  # fmt: skip
            fleet.wait_for(lambda: len(truth.read_text().splitlines()) == 2, 60, "two calls")
            _wait_hellos(served, 2)  # the node has shipped them
            spent = _spent(served)
            assert spent > 0
            _wait_hellos(served, 2)
            assert _spent(served) == spent
            # a limit between the spend at list rates and at twice those
            limit = spent * Decimal("1.5")
            made = add_budget(
                served, name=BUDGET, scope=f"machine={NODE}", period="day", basis="api",
                limit=str(limit), action="pause",
            )  # fmt: skip
            assert made.status_code in (200, 201), made.text
            assert _spent(served) == spent and not paused(agent)

            _install(served, _table(tmp_path, Decimal(2)))
            fleet.wait_for(lambda: _spent(served) == 2 * spent, 60, "the budget re-priced")
            assert _listed(served) == 2 * spent
            # over the limit by the new prices: stopped as a live crossing is
            fleet.wait_for(lambda: paused(agent), 30, "the agent paused by the re-priced budget")
            fleet.wait_for(
                lambda: budgets(served)[BUDGET]["last_action"] == "100 %: paused 1 agent",
                30,
                "the crossing's summary",
            )
            commands = _commands(served, agent, ctime)
            assert commands == [
                ("pause", "paused"),
                ("budget pause", f"{BUDGET} (machine={NODE})"),
            ], commands
            assert _hard_marks(served) == 1

            # a restart gives the same figure, and acts on nothing again
            _kill_and_restart(served, tmp_path, started)
            assert _spent(served) == 2 * spent
            assert _listed(served) == 2 * spent
            _wait_two_sweeps(served)
            assert _commands(served, agent, ctime) == commands
            assert _hard_marks(served) == 1 and paused(agent)

            # cheaper again: the spend falls under the limit, and the stop stands
            _install(served, _table(tmp_path, Decimal("0.5")))
            fleet.wait_for(lambda: _spent(served) == spent / 2, 60, "the budget re-priced down")
            _wait_two_sweeps(served)
            row = budgets(served)[BUDGET]
            assert row["state"] == "stopped", row
            assert paused(agent)
            assert _commands(served, agent, ctime) == commands  # no resume, no second pause
            _kill_and_restart(served, tmp_path, started)
            assert _spent(served) == spent / 2
            assert _listed(served) == spent / 2
        finally:
            agent.destroy()


def _wait_hellos(served: ServedHub, count: int) -> None:
    before = _batches(served)
    fleet.wait_for(lambda: _batches(served) >= before + count, 30, f"{count} more hellos")


def _wait_two_sweeps(served: ServedHub) -> None:
    """Two hellos and two of the governor's sweeps (SWEEP_S = 5 s) after now."""
    before = _batches(served)
    since = time.monotonic()
    fleet.wait_for(
        lambda: _batches(served) >= before + 2 and time.monotonic() > since + 11,
        60,
        "two hellos and two sweeps",
    )


def _batches(served: ServedHub) -> int:
    reply = httpx.get(served.url + "/metrics", headers=served.headers("viewer"), timeout=10)
    for line in reply.text.splitlines():
        if line.startswith("fleetmeter_batches_total"):
            return int(float(line.split()[-1]))
    raise AssertionError("no batch counter in /metrics")
