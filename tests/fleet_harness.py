"""Real hubs and real node-agent processes on loopback, for the fleet's integration tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from hub.config import init_hub, load_hub_config
from hub.serve import Hub
from node_agent.sources.registry import all_sources
from shared.config import Billing
from shared.events import Agent
from shared.wire import derive_node_key

ROOT = Path(__file__).resolve().parent.parent


_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on, never one this process was given before: the
    kernel may hand a just-closed port out again, and a hub's events, commands and API ports
    are picked one after the other (the same port twice failed a kill-storm run)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def child_env(tmp: Path) -> dict[str, str]:
    """Keep children away from the real home: config, state and data dirs under tmp."""
    env = dict(os.environ)
    env.update(
        XDG_CONFIG_HOME=str(tmp / "xdg-config"),
        XDG_STATE_HOME=str(tmp / "xdg-state"),
        XDG_DATA_HOME=str(tmp / "xdg-data"),
        XDG_CACHE_HOME=str(tmp / "xdg-cache"),
        PYTHONPATH=str(ROOT),
    )
    return env


@dataclass
class HubSetup:
    config: Path
    events: str
    commands: str
    data_dir: Path
    secret: bytes

    def key(self, node: str) -> bytes:
        return derive_node_key(self.secret, node)


def make_hub(tmp: Path, *, events: str | None = None, commands: str | None = None) -> HubSetup:
    events = events or f"tcp://127.0.0.1:{free_port()}"
    commands = commands or f"tcp://127.0.0.1:{free_port()}"
    config_path = tmp / "hub" / "hub.toml"
    init_hub(
        config_path,
        overrides={
            "events": events,
            "commands": commands,
            "data_dir": str(tmp / "hub" / "data"),
            "advertise": False,
            "stale_after": 3.0,
            "api": {"listen": f"127.0.0.1:{free_port()}"},  # not the default: tests run beside hubs
        },
    )
    config = load_hub_config(config_path)
    secret = bytes.fromhex(config.secret_file.read_text().strip())
    return HubSetup(config_path, events, commands, config.data_dir, secret)


@contextmanager
def running_hub(tmp: Path) -> Iterator[tuple[Hub, HubSetup]]:
    """An in-process hub (the same core as `fleet-hub serve`) on loopback, and its setup."""
    setup = make_hub(tmp)
    running = Hub(load_hub_config(setup.config))
    running.start()
    try:
        yield running, setup
    finally:
        running.stop()


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    agent: Agent
    home: Path
    billing: Billing = Billing.API
    account: str | None = None


def write_node(
    tmp: Path,
    name: str,
    hub: HubSetup,
    profiles: Sequence[ProfileSpec],
    *,
    events: str | None = None,
    commands: str | None = None,
) -> Path:
    """A node.toml and its key file; returns the config path."""
    base = tmp / "nodes" / name
    base.mkdir(parents=True, exist_ok=True)
    key_file = base / "node.key"
    key_file.write_text(hub.key(name).hex() + "\n")
    key_file.chmod(0o600)
    lines = [
        f'node = "{name}"',
        f'state_dir = "{base / "state"}"',
        f'status_file = "{base / "profiles.json"}"',
        "poll_interval = 0.2",
        "rescan_interval = 1.0",
        "",
        "[hub]",
        f'events = "{events or hub.events}"',
        f'commands = "{commands or hub.commands}"',
        f'key_file = "{key_file}"',
    ]
    for p in profiles:
        lines += [
            "",
            "[[profiles]]",
            f'name = "{p.name}"',
            f'agent = "{p.agent.value}"',
            f'home = "{p.home}"',
            f'billing = "{p.billing.value}"',
        ]
        if p.account:
            lines.append(f'account = "{p.account}"')
    config = base / "node.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def start_node(config: Path, tmp: Path) -> subprocess.Popen[bytes]:
    log = open(config.parent / "node.log", "ab")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen(
        [sys.executable, "-m", "node_agent.cli", "run", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env(tmp),
    )


def start_hub(hub: HubSetup, tmp: Path) -> subprocess.Popen[bytes]:
    log = open(hub.config.parent / "hub.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "serve", "--config", str(hub.config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env(tmp),
    )
    wait_for(
        lambda: (
            "fleet-hub serving" in (hub.config.parent / "hub.log").read_text()
            or proc.poll() is not None
        ),
        30,
        "the hub to listen",
    )
    assert proc.poll() is None, (hub.config.parent / "hub.log").read_text()
    return proc


def hub_report(hub: HubSetup, tmp: Path, *by: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli",
            "report",
            "--json",
            "--config",
            str(hub.config),
            "--by",
            ",".join(by) or "machine",
        ],
        capture_output=True,
        env=child_env(tmp),
        check=False,
    )
    if proc.returncode != 0:
        return {"rows": [], "total": {"calls": 0}}
    data: dict[str, Any] = orjson.loads(proc.stdout)
    return data


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@contextmanager
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every process started into the list is killed on the way out, whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def profiles_of(machine: Path, live: Path) -> list[ProfileSpec]:
    out = []
    for home in sorted(machine.iterdir()):
        for source in all_sources():
            if source.is_home(home):
                out.append(ProfileSpec(home.name, source.agent, live / home.name))
    return out


def grow(src_root: Path, dst_root: Path, fraction: float) -> None:
    """Append the next part of every JSONL file (cutting lines in half); copy other files whole
    once `fraction` reaches 1 (a database or CSV appears when it is complete)."""
    for src in sorted(src_root.rglob("*")):
        if not src.is_file():
            continue
        dst = dst_root / src.relative_to(src_root)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not src.name.endswith(".jsonl"):
            if fraction >= 1.0 and not dst.exists():
                dst.write_bytes(src.read_bytes())
            continue
        data = src.read_bytes()
        have = dst.stat().st_size if dst.exists() else 0
        upto = max(have, int(len(data) * fraction))
        if upto > have:
            with open(dst, "ab") as fh:
                fh.write(data[have:upto])
