"""The demo's node agents (real `node-agent run` processes, never imported: the hub does not
import node_agent): each machine's node.toml and key, the command that runs one, ending them.

Every node reports only its own profiles' agents (`only_profile_processes`): all the nodes run
on one host and would otherwise each see every fake agent.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import tomlkit

from hub.config import read_secret
from hub.demo._cast import CastMachine
from hub.serve import Hub
from shared.wire import create_key_file, derive_node_key

log = logging.getLogger(__name__)

NODE_POLL: Final = 0.5
NODE_RESCAN: Final = 2.0
NODE_GRACE: Final = 8.0  # seconds from SIGTERM to SIGKILL


def write_node_config(
    base: Path, machine: CastMachine, hub: Hub, *, homes: Mapping[str, Path], status_file: Path
) -> Path:
    """node.toml and its key (mode 600) in `base`, the profile homes (`homes`, by profile);
    returns the config path. A re-run in the same directory rewrites both."""
    base.mkdir(parents=True, exist_ok=True)
    key_file = base / "node.key"
    key_file.unlink(missing_ok=True)  # create_key_file never replaces a key
    create_key_file(key_file, derive_node_key(read_secret(hub.config.secret_file), machine.name))
    profiles = []
    for p in machine.profiles:
        home = homes[p.name]
        home.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {"name": p.name, "agent": p.agent.value, "home": str(home)}
        entry |= {"billing": p.billing.value, "account": p.account}
        if p.plan:
            entry["plan"] = p.plan
        profiles.append(entry)
    document = {
        "node": machine.name,
        "state_dir": str(base / "state"),
        "status_file": str(status_file),
        "poll_interval": NODE_POLL,
        "rescan_interval": NODE_RESCAN,
        "only_profile_processes": True,  # every node shares this host
        "hub": {
            "events": hub.events_url,
            "commands": hub.commands_url,
            "key_file": str(key_file),
        },
        "profiles": profiles,
    }
    config = base / "node.toml"
    config.write_text(tomlkit.dumps(document))
    return config


def node_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "node_agent.cli", "run", "--config", str(config)]


def end_nodes(nodes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM every node at once, SIGKILL those still running after the grace time; reaps."""
    for node in nodes:
        if node.poll() is None:
            with contextlib.suppress(OSError):
                node.terminate()
    deadline = time.monotonic() + NODE_GRACE
    for node in nodes:
        try:
            node.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("demo: node agent %d ignored SIGTERM; killing it", node.pid)
            with contextlib.suppress(OSError):
                node.kill()
            node.wait()
