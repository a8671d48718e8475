"""The whole fleet on loopback: a hub process, node-agent processes, logs growing while they run.

The hub's figures must equal the generator's truth to the token and the cent, through kill -9
of the hub mid-stream, kill -9 of a node, and the hub being away while agents keep writing.
"""

from __future__ import annotations

import signal
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from node_agent.simulate.fleet import generate_fleet
from node_agent.simulate.truth import Total, Truth
from shared.events import Tokens
from tests.fleet_harness import (
    HubSetup,
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

KEYS = ("machine", "profile", "agent", "session", "model", "day", "role")
TRUTH_KEYS = ("machine", "profile", "agent", "session_id", "model", "day", "role")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    root = tmp_path_factory.mktemp("corpus") / "fleet"
    generate_fleet(root, seed=23, machines=2, start=datetime(2026, 10, 5, tzinfo=UTC), days=2)
    return root, Truth.load(root / "truth.json")


def fleet_setup(root: Path, tmp: Path) -> tuple[list[Path], HubSetup, Path, dict[str, Path]]:
    """A hub config, and one node config per generated machine whose profiles point at empty
    live homes (the test grows the logs there)."""
    machines = sorted(p for p in root.iterdir() if p.is_dir())
    hub = make_hub(tmp)
    live = tmp / "live"
    configs = {}
    for machine in machines:
        (live / machine.name).mkdir(parents=True)
        configs[machine.name] = write_node(
            tmp, machine.name, hub, profiles_of(machine, live / machine.name)
        )
    return machines, hub, live, configs


def truth_key(row: dict[str, object]) -> tuple[str, ...]:
    out = []
    for name in KEYS:
        value = str(row.get(name) or "")
        if name == "session" and row.get("agent") == "cursor":
            value = ""
        out.append(value)
    return tuple(out)


def compare(report: dict[str, object], truth: Truth) -> list[object]:
    got: dict[tuple[str, ...], Total] = {}
    rows = report["rows"]
    assert isinstance(rows, list)
    for row in rows:
        total = got.setdefault(truth_key(row), Total())
        total.calls += row["calls"]
        total.tokens = total.tokens + Tokens(
            **row["tokens"], web_search_requests=row["web_search_requests"]
        )
        total.cost += Decimal(row["cost"]["api_equivalent"])
        total.unknown_calls += row["unknown_calls"]
    want = truth.total_by(*TRUTH_KEYS)
    diffs: list[object] = [k for k in set(want) ^ set(got)]
    for key, w in want.items():
        g = got.get(key)
        if g is not None and (g.calls, g.tokens, g.cost, g.unknown_calls) != (
            w.calls,
            w.tokens,
            w.cost,
            w.unknown_calls,
        ):
            diffs.append((key, g, w))
    return diffs


def calls_in(report: dict[str, object]) -> int:
    total = report["total"]
    assert isinstance(total, dict)
    return int(total["calls"])


def test_hub_totals_equal_truth_through_crashes(corpus: tuple[Path, Truth], tmp_path: Path) -> None:
    root, truth = corpus
    machines, hub, live, configs = fleet_setup(root, tmp_path)
    want_calls = truth.total().calls
    with processes() as started:
        hub_proc = start_hub(hub, tmp_path)
        started.append(hub_proc)
        nodes = {name: start_node(cfg, tmp_path) for name, cfg in configs.items()}
        started.extend(nodes.values())

        def step(fraction: float) -> None:
            for machine in machines:
                grow(machine, live / machine.name, fraction)

        step(0.25)
        wait_for(lambda: calls_in(hub_report(hub, tmp_path)) > 0, 30, "the first events")
        # kill -9 of the hub in the middle of a stream; agents keep writing while it is away.
        step(0.4)
        time.sleep(0.3)
        hub_proc.send_signal(signal.SIGKILL)
        hub_proc.wait()
        step(0.55)
        time.sleep(3)
        step(0.6)
        hub_proc = start_hub(hub, tmp_path)
        started.append(hub_proc)
        # kill -9 of a node while it reads; it comes back and resumes from its outbox.
        step(0.75)
        victim = machines[0].name
        time.sleep(0.2)
        nodes[victim].send_signal(signal.SIGKILL)
        nodes[victim].wait()
        step(0.9)
        nodes[victim] = start_node(configs[victim], tmp_path)
        started.append(nodes[victim])
        step(1.0)
        wait_for(
            lambda: calls_in(hub_report(hub, tmp_path)) >= want_calls,
            90,
            f"{want_calls} calls at the hub",
            every=0.5,
        )
        time.sleep(2)  # anything counted twice would show up now
        report = hub_report(hub, tmp_path, *KEYS)
        assert calls_in(report) == want_calls
        diffs = compare(report, truth)
        assert not diffs, f"{len(diffs)} groups differ, e.g. {diffs[:3]}"
        total = report["total"]
        assert isinstance(total, dict)
        assert Decimal(total["cost"]["api_equivalent"]) == truth.total().cost
        for proc in nodes.values():
            assert stop(proc) == 0  # SIGTERM: a clean stop
        assert stop(hub_proc) == 0


@pytest.mark.slow
def test_hub_away_for_a_minute_while_agents_write(
    corpus: tuple[Path, Truth], tmp_path: Path
) -> None:
    """The hub is down for a full minute while logs keep growing: the nodes hold everything in
    their outboxes and deliver it, exactly once, when it returns."""
    root, truth = corpus
    machines, hub, live, configs = fleet_setup(root, tmp_path)
    want_calls = truth.total().calls
    with processes() as started:
        hub_proc = start_hub(hub, tmp_path)
        started.append(hub_proc)
        started.extend(start_node(cfg, tmp_path) for cfg in configs.values())
        for machine in machines:
            grow(machine, live / machine.name, 0.1)
        wait_for(lambda: calls_in(hub_report(hub, tmp_path)) > 0, 30, "the first events")
        assert stop(hub_proc) == 0
        outage_end = time.monotonic() + 60
        fraction = 0.1
        while time.monotonic() < outage_end:
            fraction = min(1.0, fraction + 0.08)
            for machine in machines:
                grow(machine, live / machine.name, fraction)
            time.sleep(5)
        for machine in machines:
            grow(machine, live / machine.name, 1.0)
        assert calls_in(hub_report(hub, tmp_path)) < want_calls  # nothing got through meanwhile
        started.append(start_hub(hub, tmp_path))
        wait_for(
            lambda: calls_in(hub_report(hub, tmp_path)) >= want_calls,
            60,
            "the backlog",
            every=0.5,
        )
        time.sleep(2)
        report = hub_report(hub, tmp_path, *KEYS)
        assert calls_in(report) == want_calls
        diffs = compare(report, truth)
        assert not diffs, f"{len(diffs)} groups differ, e.g. {diffs[:3]}"
