"""Budgets on a real `fleet-hub serve`: signed batches over nng, judged in the store's ingest
transaction, read back through the HTTP API; the CLI's names against the running hub."""

from __future__ import annotations

import subprocess
import time
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import tomlkit

from shared.config import Billing
from shared.events import Agent, LimitEvent, LimitKind, LimitWindow, UsageEvent
from shared.hello import ProfileInfo
from tests.api_harness import ServedHub, fleet_hub, serve_hub
from tests.budget_harness import add_budget, api_price, budgets, hello, restart, send, usage
from tests.fleet_harness import make_hub, processes, wait_for


def _feed(served: ServedHub) -> list[str]:
    reply = httpx.get(served.url + "/api/v1/feed", headers=served.headers("viewer"), timeout=10)
    return [line["text"] for line in reply.json()]


def test_a_limit_met_exactly_is_100_percent_and_a_nanodollar_more_is_not(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)
    with processes() as started:
        started.append(served.proc)
        calls = [usage("spark01", n) for n in range(3)]
        prices = [api_price(c) for c in calls]
        total = sum(prices, Decimal(0))
        for name, limit in (("exact", total), ("above", total + Decimal("0.000000001"))):
            made = add_budget(
                served, name=name, scope="machine=spark01", period="day", basis="api",
                limit=str(limit), thresholds=[50, 99, 100],
            )  # fmt: skip
            assert made.status_code == 201, made.text
        send(served.setup, "spark01", calls[:2], hello("spark01"))
        rows = budgets(served)
        assert Decimal(rows["exact"]["spent"]) == prices[0] + prices[1]
        assert rows["exact"]["state"] == "warning"
        send(served.setup, "spark01", calls[2:], None)
        rows = budgets(served)
        assert Decimal(rows["exact"]["spent"]) == total  # exact, no float anywhere
        assert rows["exact"]["state"] == "breached"
        assert rows["above"]["state"] == "warning"  # 99.99999... %: not at its limit
        wait_for(
            lambda: any("budget 'exact'" in t and "at 100 %" in t for t in _feed(served)),
            10, "the crossing in the feed",
        )  # fmt: skip
        send(served.setup, "spark01", calls, None)  # the same calls again: nothing added twice
        rows = budgets(served)
        assert Decimal(rows["exact"]["spent"]) == total
        lines = _feed(served)
        assert sum("budget 'exact'" in t and "at 100 %" in t for t in lines) == 1
        assert not any("budget 'above'" in t and "at 100 %" in t for t in lines)
        assert any("budget 'above'" in t and "at 99 %" in t for t in lines)


def test_each_basis_and_scope_counts_its_own_calls(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)
    node = "spark02"
    profiles = (
        ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, "ops@example.com"),
        ProfileInfo("api-a", Agent.CLAUDE_CODE, Billing.API, "billing@example.com"),
    )
    table = [
        ("paid", "machine=spark02", "day", "paid", "100"),
        ("api", "machine=spark02", "day", "api", "100"),
        ("proj", "agent=claude-code,project=/src/x", "week", "api", "100"),
        ("acct", "account=billing@example.com", "month", "paid", "100"),
        ("opus", "model=claude-opus-4-1", "hour", "api", "100"),
        ("sess", "profile=api-a", "session", "api", "100"),
        ("roll", "machine=spark02", "5h", "api", "100"),
        ("quota", "profile=max-a", "5h", "quota", "80"),
    ]
    with processes() as started:
        started.append(served.proc)
        for name, scope, period, basis, limit in table:
            made = add_budget(
                served, name=name, scope=scope, period=period, basis=basis, limit=limit
            )
            assert made.status_code == 201, made.text
        sub = [usage(node, n, session="s1", profile="max-a", project="/src/x") for n in range(2)]
        api = [usage(node, n, session="s2", profile="api-a", project="/src/y") for n in range(3)]
        opus = [usage(node, 9, session="s3", profile="api-a", model="claude-opus-4-1")]
        reading = LimitEvent(
            event_id="claude:spark02:limit:1", ts=time.time(), agent=Agent.CLAUDE_CODE,
            kind=LimitKind.QUOTA_SNAPSHOT, window=LimitWindow.FIVE_HOUR, used_percent=85.0,
            resets_at=time.time() + 3600, machine=node, profile="max-a",
        )  # fmt: skip
        send(served.setup, node, [*sub, *api, *opus, reading], hello(node, profiles))
        rows = budgets(served)

        def price(calls: list[UsageEvent]) -> Decimal:
            return sum((api_price(c) for c in calls), Decimal(0))

        paid_calls = api + opus  # the subscription's calls cost nothing at the margin
        assert Decimal(rows["paid"]["spent"]) == price(paid_calls)
        assert Decimal(rows["api"]["spent"]) == price(sub + api + opus)
        assert Decimal(rows["proj"]["spent"]) == price(sub)
        assert Decimal(rows["acct"]["spent"]) == price(paid_calls)
        assert Decimal(rows["opus"]["spent"]) == price(opus)
        assert Decimal(rows["sess"]["spent"]) == price(opus)  # its costliest session: s3
        assert rows["sess"]["bucket"] == "s3"
        assert Decimal(rows["roll"]["spent"]) == price(sub + api + opus)
        assert Decimal(rows["quota"]["spent"]) == Decimal("85.0")
        assert rows["quota"]["state"] == "breached"
        assert all(rows[n]["state"] == "ok" for n in ("paid", "api", "proj", "acct", "opus"))

        # a call of unknown price: its scope is unverified, never silently allowed
        send(served.setup, node, [usage(node, 1, session="s4", model="mystery-model-9")], None)
        rows = budgets(served)
        assert rows["api"]["state"] == "unverified"
        assert "1 call of unknown price" in rows["api"]["unverified"]
        assert rows["proj"]["state"] == "ok"  # a scope it is not in stays verified
        assert Decimal(rows["api"]["spent"]) == price(sub + api + opus)

        # a hub restart recounts from the roll-ups: the same figures
        started.append(restart(served, tmp_path))
        again = budgets(served)
        for name in ("paid", "api", "proj", "acct", "opus", "roll"):
            assert again[name]["spent"] == rows[name]["spent"], name
        assert again["api"]["state"] == "unverified"


def test_the_budget_commands_against_a_running_hub(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)
    config = served.setup.config
    with processes() as started:
        started.append(served.proc)
        done = served.cli(
            "budget", "add", "fleet-day", "--scope", "fleet", "--period", "day",
            "--basis", "paid", "--limit", "10", "--action", "alert",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        names = [t["name"] for t in tomlkit.parse(config.read_text())["budgets"]]  # type: ignore[union-attr]
        assert names == ["fleet-day"]
        child = served.cli(
            "budget", "add", "spark01-day", "--scope", "machine=spark01", "--period", "day",
            "--basis", "paid", "--limit", "20", "--action", "pause",
        )  # fmt: skip
        assert child.returncode == 2
        assert child.stderr.count("\n") == 1 and "exceeds its parent 'fleet-day'" in child.stderr
        bad = served.cli(
            "budget", "add", "x", "--scope", "galaxy=far", "--period", "day", "--basis",
            "paid", "--limit", "5", "--action", "pause",
        )  # fmt: skip
        assert bad.returncode == 2 and "not a scope kind" in bad.stderr
        ok = served.cli(
            "budget", "add", "spark09-day", "--scope", "machine=spark09", "--period", "day",
            "--basis", "paid", "--limit", "5", "--action", "pause",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr
        # roles: a viewer reads but may not change; an agent sees what applies to it
        refused = httpx.post(
            served.url + "/api/v1/budgets", headers=served.headers("viewer"), timeout=10,
            json={"name": "v", "scope": "fleet", "period": "day", "basis": "paid", "limit": "1"},
        )  # fmt: skip
        assert refused.status_code == 403
        assert set(budgets(served, "agent")) == {"fleet-day"}  # bound to spark01
        assert set(budgets(served, "viewer")) == {"fleet-day", "spark09-day"}

        over = served.cli(
            "budget", "override", "fleet-day", "--limit", "25", "--until", "+2h",
            "--why", "release night",
        )  # fmt: skip
        assert over.returncode == 0, over.stderr
        listed = served.cli("budget", "list", "--json")
        rows = {r["name"]: r for r in orjson.loads(listed.stdout)["budgets"]}
        assert rows["fleet-day"]["limit_in_force"] == "25"
        assert rows["fleet-day"]["override"]["why"] == "release night"
        audit = httpx.get(served.url + "/api/v1/audit", headers=served.headers("viewer"))
        acts = [(r["who"], r["action"], r["result"]) for r in audit.json()["rows"]]
        assert any(
            who == "local-admin" and act == "budget override" and "release night" in result
            for who, act, result in acts
        )
        assert served.cli("budget", "rm", "spark09-day").returncode == 0
        assert set(budgets(served)) == {"fleet-day"}

        # an edit by hand (with a comment) is taken by the running hub, and the comment stays
        text = config.read_text() + (
            '\n[[budgets]]\n# the nightly batch: may not pass $3 an hour\nname = "nightly"\n'
            'scope = "project=/srv/batch"\nperiod = "hour"\nbasis = "api"\n'
            'limit = "3"  # dollars\n'
        )
        config.write_text(text)
        wait_for(lambda: "nightly" in budgets(served), 10, "the hand edit to be taken")
        assert served.cli("budget", "rm", "fleet-day").returncode == 0
        kept = config.read_text()
        assert "# the nightly batch: may not pass $3 an hour" in kept and "# dollars" in kept
        assert "# Relative paths are relative" in kept  # init's comments too
        assert set(budgets(served)) == {"nightly"}


def test_the_budget_commands_without_a_hub(tmp_path: Path) -> None:
    setup = make_hub(tmp_path)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return fleet_hub(tmp_path, "budget", *args, "--config", str(setup.config))

    added = cli(
        "add", "spark02 day", "--scope", "machine=spark02", "--period", "day", "--basis",
        "paid", "--limit", "50", "--action", "pause", "--next-period", "resume",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "a hub reads it when it starts" in added.stdout
    listed = orjson.loads(cli("list", "--json").stdout)["budgets"]
    assert [(b["name"], b["limit"], b["state"]) for b in listed] == [("spark02 day", "50", "ok")]
    assert cli("override", "spark02 day", "--lift", "--until", "+1h").returncode == 2  # no why
    over = cli("override", "spark02 day", "--limit", "60", "--until", "+1h", "--why", "demo",
               "--who", "ana")  # fmt: skip
    assert over.returncode == 0, over.stderr
    audit = fleet_hub(tmp_path, "audit", "--json", "--config", str(setup.config))
    rows = orjson.loads(audit.stdout)
    assert [(r["who"], r["action"]) for r in rows] == [("ana", "budget override")]
    assert "raised to $60.00" in rows[0]["result"] and "demo" in rows[0]["result"]
    listed = orjson.loads(cli("list", "--json").stdout)["budgets"]
    assert listed[0]["limit_in_force"] == "60"
    assert cli("rm", "spark02 day").returncode == 0
    assert cli("rm", "spark02 day").returncode == 2
    assert "budgets" not in tomlkit.parse(setup.config.read_text())


def test_a_node_gone_quiet_leaves_its_budgets_unverified(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)  # nodes are stale after 3 s here
    with processes() as started:
        started.append(served.proc)
        made = add_budget(
            served, name="spark05 day", scope="machine=spark05", period="day", basis="api",
            limit="100", action="pause",
        )  # fmt: skip
        assert made.status_code == 201, made.text
        send(served.setup, "spark05", [usage("spark05", 1)], hello("spark05"))
        wait_for(lambda: budgets(served)["spark05 day"]["state"] == "unverified", 20, "unverified")
        row = budgets(served)["spark05 day"]
        assert "spark05 has gone quiet" in row["unverified"]
        wait_for(lambda: any("spark05 has gone quiet" in t for t in _feed(served)), 10, "told")
