"""A kill storm: agents' logs grow while the hub and the nodes are killed with SIGKILL at random
moments and started again. Afterwards the hub holds every call once: its figures equal the
generator's truth and, per machine, `node-agent scan` of the same logs."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from node_agent.simulate.fleet import generate_fleet
from node_agent.simulate.truth import Truth
from tests.fleet_harness import (
    child_env,
    grow,
    hub_report,
    processes,
    start_hub,
    start_node,
    stop,
    wait_for,
)
from tests.test_fleet import KEYS, calls_in, compare, fleet_setup

STEPS = 16


@pytest.mark.slow
def test_no_call_lost_or_doubled_through_a_kill_storm(tmp_path: Path) -> None:
    chance = random.Random(7)
    root = tmp_path / "corpus" / "fleet"
    generate_fleet(root, seed=7, machines=3, start=datetime(2026, 10, 5, tzinfo=UTC), days=1)
    truth = Truth.load(root / "truth.json")
    machines, hub, live, configs = fleet_setup(root, tmp_path)
    kills = 0
    with processes() as started:
        hub_proc = start_hub(hub, tmp_path)
        started.append(hub_proc)
        nodes = {name: start_node(config, tmp_path) for name, config in configs.items()}
        started.extend(nodes.values())
        for step in range(1, STEPS + 1):
            for machine in machines:
                grow(machine, live / machine.name, step / STEPS)
            time.sleep(chance.uniform(0.0, 0.5))  # a random moment of reading and sending
            if chance.random() < 0.4 and hub_proc.poll() is None:
                hub_proc.send_signal(signal.SIGKILL)
                hub_proc.wait()
                kills += 1
            name = chance.choice(sorted(nodes))
            nodes[name].send_signal(signal.SIGKILL)
            nodes[name].wait()
            kills += 1
            nodes[name] = start_node(configs[name], tmp_path)
            started.append(nodes[name])
            if hub_proc.poll() is not None and chance.random() < 0.6:  # away a while, or not
                hub_proc = start_hub(hub, tmp_path)
                started.append(hub_proc)
        if hub_proc.poll() is not None:
            hub_proc = start_hub(hub, tmp_path)
            started.append(hub_proc)
        want = truth.total().calls
        wait_for(lambda: calls_in(hub_report(hub, tmp_path)) >= want, 90, f"{want} calls", 0.5)
        time.sleep(2)  # anything counted twice would show up now
        report = hub_report(hub, tmp_path, *KEYS)
        assert kills >= STEPS and calls_in(report) == want
        diffs = compare(report, truth)
        assert not diffs, f"{len(diffs)} groups differ, e.g. {diffs[:3]}"
        by_machine = {row["machine"]: row for row in hub_report(hub, tmp_path, "machine")["rows"]}
        for name, config in configs.items():
            scan = subprocess.run(
                [sys.executable, "-m", "node_agent.cli", "scan", "--json", "--config", str(config)],
                capture_output=True,
                env=child_env(tmp_path),
                timeout=60,
                check=True,
            )
            total = orjson.loads(scan.stdout)["total"]
            got = by_machine[name]
            assert (got["calls"], got["tokens"], got["cost"]) == (
                total["calls"],
                total["tokens"],
                total["cost"],
            ), name
        for proc in nodes.values():
            assert stop(proc) == 0
        assert stop(hub_proc) == 0
