"""A node with no hub address finds the hub over zeroconf (loopback only) and reports to it."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from hub.config import HubConfig, load_hub_config
from hub.serve import Hub
from node_agent.daemon import Daemon
from shared.config import load_config
from shared.discovery import ZeroconfAdvertiser, ZeroconfDiscovery
from tests.fleet_harness import make_hub, wait_for

SERVICE = f"_fhd-{os.getpid() % 10**6}._tcp.local."


def test_a_node_finds_the_hub_by_zeroconf_and_reports(tmp_path: Path) -> None:
    setup = make_hub(tmp_path)
    config = replace(load_hub_config(setup.config), advertise=True)

    def advertiser(cfg: HubConfig, events: str, commands: str) -> ZeroconfAdvertiser:
        return ZeroconfAdvertiser(
            "hub-it",
            events,
            commands,
            service_type=SERVICE,
            interfaces=["127.0.0.1"],
            cooperating_responders=True,
        )

    hub = Hub(config, advertiser_factory=advertiser)
    service = hub.start()
    try:
        if hub._advertiser is None:  # noqa: SLF001 (the one place a skip is decided)
            pytest.skip("multicast on loopback is not possible here")
        key_file = tmp_path / "node.key"
        key_file.write_text(setup.key("spark09").hex())
        key_file.chmod(0o600)
        node_toml = tmp_path / "node.toml"
        node_toml.write_text(
            'node = "spark09"\n'
            f'state_dir = "{tmp_path / "state"}"\n'
            f'status_file = "{tmp_path / "profiles.json"}"\n'
            "[hub]\n"
            f'key_file = "{key_file}"\n'
            "[[profiles]]\n"
            'name = "c1"\nagent = "claude-code"\n'
            f'home = "{tmp_path / "claude"}"\n'
        )
        node_config = load_config(node_toml)
        assert node_config.discover_hub
        daemon = Daemon(node_config, discovery=ZeroconfDiscovery(SERVICE, ["127.0.0.1"]))
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            wait_for(
                lambda: [n.record.node for n in service.nodes()] == ["spark09"],
                20,
                "the node to report through the address it found",
            )
            assert daemon.sender is not None and daemon.sender.address == hub.events_url.replace(
                "0.0.0.0", "127.0.0.1"
            )
        finally:
            daemon.stop.set()
            thread.join(15)
        assert not thread.is_alive()
    finally:
        hub.stop()
