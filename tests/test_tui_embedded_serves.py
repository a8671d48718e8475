"""A dashboard that started an embedded hub serves it as `fleet-hub serve` does: its header
names the API, a second dashboard attaches to it instead of failing on taken ports, the CLI
goes through it, and its alerts are delivered (the courier runs beside it)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.fleet_harness import wait_for
from tests.test_alerts_serve import AlertHub
from tests.test_tui_attached_tmux import start_dashboard
from tests.test_tui_tmux import Tmux


def test_a_second_dashboard_attaches_to_the_first_ones_embedded_hub(tmp_path: Path) -> None:
    hub = AlertHub(tmp_path)  # a hub config with a webhook sink to a local receiver
    first, second = Tmux(f"fleetmeter-emb1-{id(hub)}"), Tmux(f"fleetmeter-emb2-{id(hub)}")
    config = str(hub.setup.config)
    try:
        start_dashboard(first, tmp_path, "--config", config)
        screen = first.wait_for("embedded hub, api http://", timeout=60)
        url = re.search(r"embedded hub, api (http://[\d.:]+)", screen)
        assert url is not None and url.group(1) == hub.api, screen
        assert httpx.get(f"{hub.api}/api/v1/health", timeout=5).status_code == 200

        # the CLI acts through the embedded hub, whose courier delivers the alert
        raised = hub.cli("alerts", "test")
        assert raised.returncode == 0, raised.stderr
        alert = raised.stdout.split()[3]
        wait_for(lambda: alert in hub.receiver.arrived(), 30, "the test alert delivered")

        start_dashboard(second, tmp_path, "--config", config)
        second.wait_for(f"attached to {hub.api}", "today", timeout=60)
        assert first.alive(), "the first dashboard died"

        second.keys("q")
        first.keys("q")
        deadline = time.monotonic() + 30
        while (first.alive() or second.alive()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not first.alive() and not second.alive(), "a dashboard did not exit on q"
        # the embedded hub's API went with its dashboard
        wait_for(lambda: not _answers(hub.api), 15, "the API closed")
    finally:
        first("kill-server", check=False)
        second("kill-server", check=False)
        hub.receiver.stop()


def _answers(api: str) -> bool:
    try:
        httpx.get(f"{api}/api/v1/health", timeout=1)
    except httpx.HTTPError:
        return False
    return True
