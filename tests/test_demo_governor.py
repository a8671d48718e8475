"""The demo closes the loop by itself: a real headless demo (`python -m hub.demo`, its node
agents and fake agents) whose runaway crosses its budget and is paused by the governor, whose
thrashing session the detector names, whose alerts land signed on the demo's own webhook
receiver, and whose runaway a person brings back with `fleet-hub budget override` and
`fleet-hub resume` against the running demo."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
from standardwebhooks.webhooks import Webhook

from hub.api_client import HubClient, token_for
from hub.config import load_hub_config
from tests.api_harness import fleet_hub
from tests.fleet_harness import ROOT, child_env, wait_for

PACE = "0.3"  # the runaway calls every 0.3 s: its $50 hour budget is crossed ~20 s in
BUDGET = "spark02 claude-api hour"


def ready_line(agents: Path, stem: str) -> dict[str, Any] | None:
    for log in sorted(agents.glob(f"{stem}-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith('{"ready"'):
                found: dict[str, Any] = json.loads(line)
                return found
    return None


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def states(pid: int) -> set[str]:
    return {p.status() for p in tree(pid)}


def truth_calls(agents: Path, stem: str) -> int:
    return sum(
        1
        for journal in agents.glob(f"{stem}-*.truth.jsonl")
        for line in journal.read_text().splitlines()
        if line.startswith('{"kind":"call"')
    )


def port_closed(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as s:
        return s.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80)) != 0


def test_the_runaway_is_paused_alerted_overridden_and_resumed(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log = tmp_path / "demo.log"
    config_path = workdir / "hub" / "hub.toml"
    agents = workdir / "agents"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "hub.demo", "--seconds", "300", "--machines", "2"]
            + ["--pace", PACE, "--workdir", str(workdir)],
            cwd=ROOT,
            env=child_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        began = time.monotonic()
        wait_for(lambda: ready_line(agents, "spark02-claude-api") is not None, 60, "the runaway")
        runaway = ready_line(agents, "spark02-claude-api")
        assert runaway is not None
        pid, session = int(runaway["pid"]), str(runaway["session_id"])
        assert states(pid) != {psutil.STATUS_STOPPED}

        # The governor pauses the runaway's whole tree (state T) by itself.
        wait_for(lambda: states(pid) == {psutil.STATUS_STOPPED}, 60, "the runaway paused", 0.05)
        paused_after = time.monotonic() - began
        config = load_hub_config(config_path)
        client = HubClient(config, token_for(config, None))

        def state() -> str:
            rows = client.get("/api/v1/budgets")["budgets"]
            return str(next(b for b in rows if b["name"] == BUDGET)["state"])

        # the governor marks the crossing done once the node has answered the pause (the tree
        # is stopped a moment before): on a loaded machine this read may fall in between
        wait_for(lambda: state() == "stopped", 10, "the budget stopped")

        def feed() -> list[str]:
            return [line["text"] for line in client.get("/api/v1/feed", limit=500)]

        assert any(t.endswith(f"fleet-hub budget list --config {config_path}") for t in feed())
        crossing = f"budget '{BUDGET}' (machine=spark02,profile=claude-api, hour) at 100 %"
        wait_for(lambda: any(t.startswith(crossing) for t in feed()), 10, "the crossing told")
        told = next(t for t in feed() if t.startswith(crossing))
        assert told.endswith(": paused 1 agent"), told

        # The alerts: the crossing and the thrashing session, delivered to the demo webhook.
        def alerts() -> list[dict[str, Any]]:
            listing = fleet_hub(tmp_path, "alerts", "--json", "--config", str(config_path))
            assert listing.returncode == 0, listing.stderr
            found: list[dict[str, Any]] = json.loads(listing.stdout)["alerts"]
            return found

        def delivered(kind: str, text: str) -> list[dict[str, Any]]:
            return [
                a
                for a in alerts()
                if a["kind"] == kind and text in a["text"] and a["state"] == "delivered"
            ]

        wait_for(lambda: bool(delivered("budget", "at 100 %")), 20, "the crossing delivered")
        wait_for(lambda: bool(delivered("cache_thrash", "")), 20, "the thrash delivered")
        thrash = delivered("cache_thrash", "")
        assert [a["id"] for a in thrash] == [f"cache_thrash:{session}"]
        assert f"session={session}" in thrash[0]["scope"]
        assert thrash[0]["text"].startswith(f"session {session[:8]} on spark02 ")

        # What the receiver kept verifies with an independent Standard Webhooks library.
        secret = (config_path.parent / "demo-webhook.secret").read_text().strip()
        records = [
            json.loads(line)
            for line in (workdir / "webhook" / "deliveries.jsonl").read_text().splitlines()
        ]
        verifier = Webhook(secret)
        bodies = [verifier.verify(r["body"], r["headers"]) for r in records]
        received = {body["data"]["id"]: body["data"] for body in bodies}
        assert len(received) == len(records), "one record per alert (webhook-id dedupes)"
        assert f"cache_thrash:{session}" in received
        stop = next(a for a in received.values() if a["kind"] == "budget" and "100 %" in a["text"])
        assert stop["evidence"]["outcome"] == "paused 1 agent"
        assert any(t.startswith(f"alert delivered to demo-webhook: {stop['text']}") for t in feed())

        # A person raises the limit for an hour and resumes the agent, against the demo.
        raised = fleet_hub(
            tmp_path,
            "budget",
            "override",
            BUDGET,
            "--limit",
            "100000",
            "--until",
            "+1h",
            "--why",
            "the demo's test: worth it",
            "--config",
            str(config_path),
        )
        assert raised.returncode == 0, raised.stderr
        assert f"budget '{BUDGET}' raised to $100,000.00 until" in raised.stdout, raised.stdout
        assert "in the config" not in raised.stdout  # taken by the running hub, not a file
        budget = next(b for b in client.get("/api/v1/budgets")["budgets"] if b["name"] == BUDGET)
        assert (budget["state"], budget["limit_in_force"]) == ("ok", "100000"), budget
        assert budget["override"]["why"] == "the demo's test: worth it"
        resumed = fleet_hub(tmp_path, "resume", "spark02", str(pid), "--config", str(config_path))
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert states(pid) & {psutil.STATUS_RUNNING, psutil.STATUS_SLEEPING}
        assert psutil.STATUS_STOPPED not in states(pid)
        # It runs on: its next calls reach the hub, and the governor leaves it running.
        calls = truth_calls(agents, "spark02-claude-api")

        def called_on() -> bool:
            assert psutil.STATUS_STOPPED not in states(pid), "paused again"
            return truth_calls(agents, "spark02-claude-api") >= calls + 5

        wait_for(called_on, 20, "five more calls of the resumed runaway", 0.05)
        time.sleep(1.5)  # the hub has their batch: a stop would land now
        assert psutil.STATUS_STOPPED not in states(pid)
        assert any("raised to $100,000.00" in t for t in feed())
        sink = config.alerts.sink("demo-webhook")
        assert sink is not None and sink.url is not None
        webhook_url, api_url = sink.url, client.base
    finally:
        demo.send_signal(signal.SIGTERM)
        try:
            demo.wait(60)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, log.read_text()[-3000:]
    # The receiver and the API went with the demo: nothing listens on their ports.
    assert port_closed(webhook_url) and port_closed(api_url)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    print(f"\nrunaway paused {paused_after:.1f} s after the demo started (pace {PACE})")
