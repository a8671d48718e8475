"""Halting through the API, end to end: `fleet-hub pause|resume|kill` → a real
`fleet-hub serve` → Surveyor0 → a real `node-agent run` → a fake agent's process tree; each
outcome audited with the token's name and counted in /metrics."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

from node_agent.simulate.fake_agent import launch
from shared.events import Agent
from tests.api_harness import serve_hub
from tests.fleet_harness import (
    ProfileSpec,
    child_env,
    processes,
    start_node,
    stop,
    wait_for,
    write_node,
)
from tests.test_fleet_commands import states

NODE = "spark07"


def test_pause_resume_kill_from_the_cli_through_the_api(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)
    home = tmp_path / "homes" / "claude-max-a"
    home.mkdir(parents=True)
    config = write_node(
        tmp_path,
        NODE,
        served.setup,
        [ProfileSpec("claude-max-a", Agent.CLAUDE_CODE, home)],
        events=served.setup.events,
        commands=served.setup.commands,
    )
    agent = launch(
        Agent.CLAUDE_CODE, home, "--pace", "0.2", "--children", "1",
        "--machine", NODE, "--profile", "claude-max-a", env=child_env(tmp_path),
    )  # fmt: skip
    with processes() as started:
        started.append(served.proc)
        try:
            started.append(start_node(config, tmp_path))

            def reported() -> bool:
                rows = httpx.get(served.url + "/api/v1/machines", headers=served.headers("viewer"))
                return any(r["agents_running"] for r in rows.json() if r["machine"] == NODE)

            wait_for(reported, 30, "the agent in the node's hello")
            pid = str(agent.pid)
            paused = served.cli("pause", NODE, pid, "--token", served.tokens["operator"])
            assert paused.returncode == 0 and "paused" in paused.stdout, paused.stderr
            assert states(agent) == {psutil.STATUS_STOPPED}
            resumed = served.cli("resume", NODE, pid)  # the local admin's token
            assert resumed.returncode == 0 and "resumed" in resumed.stdout, resumed.stderr
            assert psutil.STATUS_STOPPED not in states(agent)
            tree = agent.tree()
            killed = served.cli("kill", NODE, pid)
            assert killed.returncode == 0 and "killed" in killed.stdout, killed.stderr
            assert [p.pid for p in tree if p.is_running() and p.status() != "zombie"] == []

            audit = httpx.get(served.url + "/api/v1/audit", headers=served.headers("viewer"))
            who = [(r["who"], r["action"], r["result"]) for r in audit.json()["rows"]]
            assert who[-1] == ("t-operator", "pause", who[-1][2]) and "paused" in who[-1][2]
            assert [w[0] for w in who[:2]] == ["local-admin", "local-admin"]
            text = httpx.get(served.url + "/metrics", headers=served.headers("viewer")).text
            counted = {
                (s.labels["action"], s.labels["outcome"]): s.value
                for f in text_string_to_metric_families(text)
                if f.name == "fleetmeter_commands"
                for s in f.samples
            }
            assert counted == {
                ("pause", "paused"): 1,
                ("resume", "resumed"): 1,
                ("kill", "killed"): 1,
            }
        finally:
            agent.destroy()
            stop(served.proc)
