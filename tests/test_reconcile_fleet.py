"""End to end: a generated fleet through a real `fleet-hub serve` and real node agents, held
against provider reports made from the generator's truth, first faithful, then with faults:

- a machine missing from the fleet (spark03 bills to spark02's key but runs no node agent),
- a wrong rate in the tables (the provider bills gpt-5-codex output at $15, the tables say $10),
- a cache write mis-tiered (5-minute writes of one row billed at the 1-hour tier),
- overage on a subscription (the provider bills spark01's claude-max2 subscription profile),
- calls filed under the wrong key (spark01's gpt-5 calls: the provider has none on its key).

Each drift is found with the right cause, none where there is no fault, through the API and
on the store directly; the findings reach the alert outbox once, through repeated scheduled
runs and a kill -9 of the hub.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_agent.simulate.fleet import generate_fleet
from node_agent.simulate.truth import Truth
from shared.config import Billing
from tests.fleet_harness import (
    child_env,
    grow,
    hub_report,
    make_hub,
    processes,
    profiles_of,
    start_hub,
    start_node,
    stop,
    wait_for,
    write_node,
)
from tests.provider_api import ANTHROPIC_KEY, OPENAI_KEY, ProviderApi, ProviderData

THRESHOLD_USD = Decimal("0.10")  # the generated rows are a few dollars each
KEYS = {  # (machine, profile) -> (provider, key id, workspace / project)
    ("spark01", "claude"): ("anthropic", "apikey_spark01", "wrkspc_fleet"),
    ("spark02", "claude"): ("anthropic", "apikey_shared", "wrkspc_fleet"),
    ("spark01", "codex"): ("openai", "key_codex01", "proj_fleet"),
    ("spark02", "codex"): ("openai", "key_codex02", "proj_fleet"),
}
MISSING = {("spark03", "claude"): ("anthropic", "apikey_shared", "wrkspc_fleet")}
SUBSCRIPTION = {("spark01", "claude-max2"): ("anthropic", "apikey_max2", "wrkspc_extra")}
RUNNING = ("spark01", "spark02")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    root = tmp_path_factory.mktemp("corpus") / "fleet"
    # the last two finished UTC days: the hub's schedule re-checks them
    first = datetime.now(UTC).date() - timedelta(days=2)
    start = datetime(first.year, first.month, first.day, tzinfo=UTC)
    generate_fleet(root, seed=23, machines=3, start=start, days=2, jobs=1)
    return root, Truth.load(root / "truth.json")


def reconcile_config(api: ProviderApi, tmp: Path) -> str:
    keys = tmp / "keys"
    keys.mkdir()
    for name, key in (("anthropic", ANTHROPIC_KEY), ("openai", OPENAI_KEY)):
        (keys / f"{name}.key").write_text(key + "\n")
        (keys / f"{name}.key").chmod(0o600)
    lines = [
        "[reconcile]",
        "interval = 1.5",
        "days = 3",
        f"threshold_usd = {THRESHOLD_USD}",
        'fleet_tz = "Europe/Berlin"',
        "[reconcile.anthropic]",
        f'key_file = "{keys / "anthropic.key"}"',
        f'base_url = "{api.url}"',
        "[reconcile.openai]",
        f'key_file = "{keys / "openai.key"}"',
        f'base_url = "{api.url}"',
    ]
    by_key: dict[tuple[str, str], list[str]] = {}
    for (machine, profile), (provider, key, _) in {**KEYS, **MISSING, **SUBSCRIPTION}.items():
        by_key.setdefault((provider, key), []).append(f"{machine}/{profile}")
    for (provider, key), profiles in by_key.items():
        lines += [
            "[[reconcile.keys]]",
            f'provider = "{provider}"',
            f'key = "{key}"',
            f"profiles = {orjson.dumps(profiles).decode()}",
        ]
    return "\n".join(lines) + "\n"


def cli(config: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hub.cli", *args, "--config", str(config)],
        capture_output=True,
        env=child_env(tmp),
        check=False,
        timeout=120,
    )


def reconcile(config: Path, tmp: Path, since: str, until: str) -> dict[str, Any]:
    done = cli(config, tmp, "reconcile", "--json", "--since", since, "--until", until)
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def reconcile_alerts(config: Path, tmp: Path) -> list[dict[str, Any]]:
    done = cli(config, tmp, "alerts", "--json", "--limit", "10000")
    assert done.returncode == 0, done.stderr.decode()
    alerts: list[dict[str, Any]] = orjson.loads(done.stdout)["alerts"]
    return [a for a in alerts if a["kind"].startswith("reconcile_")]


def expected_cause(row: dict[str, Any], truth: Truth) -> str | None:
    """The fault planted on this row, if any."""
    if row["key"] == "apikey_max2":
        return "overage"
    if (
        row["key"] == "apikey_shared"
        and truth.total(
            machine="spark03", profile="claude", model=row["model"], day=row["day"]
        ).calls
    ):
        return "unseen_usage"
    if row["model"] == "gpt-5-codex":
        return "price"
    if (row["key"], row["model"], row["day"]) in wrong_key(truth):
        return "fleet_excess"
    if (row["key"], row["model"], row["day"]) in tier_fault(truth):
        return "cache_tier"
    return None


def tier_fault(truth: Truth) -> dict[tuple[str, str, str], int]:
    """spark01's biggest Sonnet day: its 5-minute writes billed at the 1-hour tier."""
    day = max(
        (g.key.day for g in truth.select(machine="spark01", profile="claude")),
        key=lambda d: (
            truth.total(
                machine="spark01", profile="claude", model="claude-sonnet-4-5-20250929", day=d
            ).tokens.cache_write_5m
        ),
    )
    model = "claude-sonnet-4-5-20250929"
    moved = truth.total(machine="spark01", profile="claude", model=model, day=day)
    return {("apikey_spark01", model, day): moved.tokens.cache_write_5m}


def wrong_key(truth: Truth) -> set[tuple[str, str, str]]:
    """spark01's gpt-5 calls, which the provider has on no key (the fleet filed them wrong)."""
    return {
        ("key_codex01", "gpt-5", g.key.day) for g in truth.select(machine="spark01", model="gpt-5")
    }


def faulty(truth: Truth) -> ProviderData:
    return ProviderData.from_truth(
        truth,
        {**KEYS, **MISSING, **SUBSCRIPTION},
        output_rate={"gpt-5-codex": Decimal(15)},
        to_1h=tier_fault(truth),
        unbilled=wrong_key(truth),
    )


def cursor_row(row: dict[str, Any]) -> None:
    """Cursor's own dollars against the same calls: its Cost is the price rounded to the cent
    per row (node_agent.simulate.cursor), so the two agree within the threshold."""
    assert row["cause"] is None and abs(Decimal(row["drift"]["usd"])) <= THRESHOLD_USD, row
    assert row["fleet"]["tokens"] == row["billed"]["tokens"] and row["billed"]["usd"], row


def check_causes(result: dict[str, Any], truth: Truth) -> list[dict[str, Any]]:
    """Every row's cause is its planted fault's (where it drifts past the threshold), every
    row without a fault matches to the micro-dollar; returns the rows that drift."""
    drifting = []
    for row in result["rows"]:
        want = expected_cause(row, truth)
        drift = abs(Decimal(row["drift"]["usd"]))
        if row["provider"] == "cursor":
            cursor_row(row)
        elif want is None:
            assert drift == 0 and row["cause"] is None, row
            assert row["fleet"]["tokens"] == row["billed"]["tokens"], row
        elif drift > THRESHOLD_USD:
            assert row["cause"] == want, row
            drifting.append(row)
        else:
            assert row["cause"] is None, row
    return drifting


def test_reconciliation_finds_each_planted_fault_and_nothing_else(
    corpus: tuple[Path, Truth], tmp_path: Path
) -> None:
    root, truth = corpus
    days = sorted({g.key.day for g in truth.select()})
    since, until = days[0], days[-1]
    api = ProviderApi(faulty(truth), page_size=1)
    hub = make_hub(tmp_path)
    with api.running(), processes() as started:
        hub_proc = start_hub(hub, tmp_path)
        started.append(hub_proc)
        live = tmp_path / "live"
        for name in RUNNING:
            specs = [
                replace(p, billing=Billing.SUBSCRIPTION) if p.name == "claude-max2" else p
                for p in profiles_of(root / name, live / name)
            ]
            grow(root / name, live / name, 1.0)
            started.append(start_node(write_node(tmp_path, name, hub, specs), tmp_path))
        want_calls = sum(truth.total(machine=m).calls for m in RUNNING)
        wait_for(
            lambda: hub_report(hub, tmp_path)["total"]["calls"] >= want_calls,
            90,
            f"{want_calls} calls at the hub",
            every=0.5,
        )
        # reconciliation from the next start on: a run before the nodes' backlogs landed
        # would rightly find usage no node had reported yet
        assert stop(hub_proc) == 0
        hub.config.write_text(hub.config.read_text() + reconcile_config(api, tmp_path))
        hub_proc = start_hub(hub, tmp_path)
        started.append(hub_proc)

        # the faults: each drift with its cause, through the running hub's API
        result = reconcile(hub.config, tmp_path, since, until)
        drifting = check_causes(result, truth)
        assert {r["cause"] for r in drifting} == {
            "overage",
            "unseen_usage",
            "price",
            "cache_tier",
            "fleet_excess",
        }
        assert len(result["findings"]) == len(drifting)
        print("\nfaults found:", Counter(r["cause"] for r in drifting))
        price = next(r for r in drifting if r["cause"] == "price")
        assert "output $10/MTok in the tables" in price["explanation"]
        assert "imply $15/MTok" in price["explanation"]

        # the schedule raises the same findings: each once, through a kill -9 of the hub
        ids = {f["id"] for f in result["findings"]}
        wait_for(
            lambda: {a["id"] for a in reconcile_alerts(hub.config, tmp_path)} == ids,
            30,
            "the findings in the outbox",
        )
        hub_proc.send_signal(signal.SIGKILL)
        hub_proc.wait()
        hub_proc = start_hub(hub, tmp_path)
        started.append(hub_proc)
        log = hub.config.parent / "hub.log"
        runs = log.read_text().count("reconciled ")
        wait_for(lambda: log.read_text().count("reconciled ") >= runs + 2, 30, "two more runs")
        alerts = reconcile_alerts(hub.config, tmp_path)
        assert sorted(a["id"] for a in alerts) == sorted(ids)
        assert stop(hub_proc) == 0

        # with no hub serving: the same rows from the store directly
        offline = reconcile(hub.config, tmp_path, since, until)
        assert offline["rows"] == result["rows"]
        assert sorted(a["id"] for a in reconcile_alerts(hub.config, tmp_path)) == sorted(ids)

        # faithful reports: every compared row matches to the micro-dollar, nothing is found
        api.data = ProviderData.from_truth(truth, KEYS)
        clean = reconcile(hub.config, tmp_path, since, until)
        assert clean["rows"] and not clean["findings"] and not clean["errors"]
        assert {r["provider"] for r in clean["rows"]} == {"anthropic", "openai", "cursor"}
        for row in clean["rows"]:
            if row["provider"] == "cursor":
                cursor_row(row)
                continue
            assert Decimal(row["drift"]["usd"]) == 0 and row["cause"] is None, row
            if row["key"] != "apikey_max2":  # a subscription's calls are on no API bill
                assert row["fleet"]["tokens"] == row["billed"]["tokens"], row
        billed = sum(Decimal(r["billed"]["usd"]) for r in clean["rows"])
        print(f"\nfault-free: {len(clean['rows'])} rows, billed ${billed}, drift $0")
        assert "spark01/gemini" in clean["unmapped_profiles"]
        assert len(reconcile_alerts(hub.config, tmp_path)) == len(ids)
