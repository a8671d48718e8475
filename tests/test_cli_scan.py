"""`node-agent scan` as a user runs it: profiles from a config file, errors, time zones."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node_agent import report
from node_agent.simulate.fleet import generate_fleet
from node_agent.simulate.truth import Truth
from node_agent.sources.registry import all_sources
from shared.config import NodeConfig


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    root = tmp_path_factory.mktemp("cli") / "fleet"
    generate_fleet(root, seed=5, machines=1, start=datetime(2026, 10, 12, tzinfo=UTC), days=2)
    return root / "spark01", Truth.load(root / "truth.json")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node_agent.cli", "scan", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def scan_json(*args: str) -> dict[str, Any]:
    proc = run("--json", *args)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def test_subscription_profile_is_subscription_included(
    machine: tuple[Path, Truth], tmp_path: Path
) -> None:
    home, truth = machine
    config = tmp_path / "node.toml"
    config.write_text(
        f'node = "spark01"\n\n[[profiles]]\nname = "max-a"\nagent = "claude-code"\n'
        f'home = "{home / "claude"}"\nbilling = "subscription"\nplan = "max_20x"\n'
        f'account = "ops-a@example.com"\n'
    )
    data = scan_json("--config", str(config), "--by", "profile,account,agent", str(home))
    rows = {(r["profile"], r["agent"]): r for r in data["rows"]}
    sub = rows[("max-a", "claude-code")]
    assert sub["account"] == "ops-a@example.com"
    cost = sub["cost"]
    # the generated logs' calls do not all say how Claude Code was started: since the Agent
    # SDK credit (2026-06-15) those are estimated (`pricing.sdk_credit`), never metered
    included, estimated = Decimal(cost["subscription_included"]), Decimal(cost["estimated"])
    assert included + estimated == Decimal(cost["api_equivalent"]) > 0
    assert Decimal(cost["metered"]) == 0
    want = truth.total(profile="claude")
    assert sub["calls"] == want.calls and Decimal(cost["api_equivalent"]) == want.cost
    # Homes with no profile stay metered API use.
    api = rows[(None, "codex")]
    assert Decimal(api["cost"]["metered"]) > 0
    assert Decimal(api["cost"]["subscription_included"]) == 0


def test_text_report_names_unknown_models_and_problems(machine: tuple[Path, Truth]) -> None:
    home, _ = machine
    proc = run("--by", "agent", str(home))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "TOTAL" in out and "API-equiv" in out
    assert "no price known (shown as unknown, not $0): my-finetune-7b" in out
    assert "unreadable records:" in out and ".jsonl:" in out


def test_tz_moves_day_boundaries(machine: tuple[Path, Truth]) -> None:
    home, _ = machine
    utc = scan_json("--by", "day", str(home))
    tokyo = scan_json("--by", "day", "--tz", "Asia/Tokyo", str(home))
    assert utc["total"] == tokyo["total"]
    assert [r["day"] for r in utc["rows"]] != [r["day"] for r in tokyo["rows"]]
    first = utc["rows"][0]["day"]
    only = scan_json("--by", "day", "--since", first, "--until", first, str(home))
    assert [r["day"] for r in only["rows"]] == [first]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--by", "colour"], 2, "unknown grouping colour"),
        (["--by", "commits"], 2, "or one outcome alone: commit, branch, pr, repo"),
        (["--tz", "Mars/Olympus"], 2, "unknown time zone 'Mars/Olympus'"),
        (["/no/such/dir"], 1, "/no/such/dir: no such file or directory"),
    ],
)
def test_bad_arguments_are_named(args: list[str], code: int, message: str) -> None:
    proc = run(*args)
    assert proc.returncode == code
    assert message in proc.stderr


def test_broken_config_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text('[[profiles]]\nname = "a"\nagent = "vim"\nhome = "/x"\n')
    proc = run("--config", str(config), str(tmp_path))
    assert proc.returncode == 2
    assert f"{config}: profiles[0].agent: unknown agent 'vim'" in proc.stderr


def test_a_bad_path_does_not_lose_the_good_ones(machine: tuple[Path, Truth]) -> None:
    home, truth = machine
    proc = run("--json", str(home), "/no/such/dir")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["total"]["calls"] == truth.total().calls


def test_an_in_process_scan_puts_the_collector_back_as_it_was(
    machine: tuple[Path, Truth], capsys: pytest.CaptureFixture[str]
) -> None:
    import gc

    from node_agent.cli import main

    before = gc.get_threshold(), gc.get_freeze_count()
    assert main(["scan", "--json", "--jobs", "1", str(machine[0])]) == 0
    assert json.loads(capsys.readouterr().out)["total"]["calls"] > 0
    assert (gc.get_threshold(), gc.get_freeze_count()) == before


def test_jobs_beyond_the_units_start_no_more_workers(
    monkeypatch: pytest.MonkeyPatch, machine: tuple[Path, Truth]
) -> None:
    """--jobs 10000 forked ten thousand workers (minutes on two cores) for a few files."""
    asked: list[int] = []
    real = multiprocessing.get_context("fork")

    class Recording:
        def Pool(self, processes: int) -> Any:  # noqa: N802 (multiprocessing's name)
            asked.append(processes)
            return real.Pool(min(processes, 2))

    monkeypatch.setattr(report, "worker_context", Recording)
    path, truth = machine
    built = report.build_report([path], NodeConfig(), report.Query(("day",), UTC), jobs=10_000)
    assert built.rollup.total.calls == truth.total().calls
    targets, _ = report.resolve_targets([path], NodeConfig(), all_sources())
    units, _ = report.plan_units(targets)
    assert asked == [min(len(units), 4 * (os.cpu_count() or 1))]
