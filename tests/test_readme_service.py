"""Walks the hub's commands in the README's "Running a fleet" as written, in order: init,
install-service (the unit goes to a temp file instead of /etc, and its own ExecStart stands in
for systemctl), enroll, nodes, report, audit, pause; then the dashboard beside the service.
A signed batch from spark02 stands in for a node agent; tmux is the dashboard's terminal."""

from __future__ import annotations

import getpass
import re
import shlex
import subprocess
from pathlib import Path

from hub.config import load_hub_config
from tests.api_harness import ServedHub, call, fleet_hub
from tests.fleet_harness import HubSetup, child_env, free_port, stop, wait_for
from tests.test_tui_attached_tmux import start_dashboard
from tests.test_tui_tmux import Tmux, tmux  # noqa: F401 (the fixture)

ROOT = Path(__file__).resolve().parent.parent


def readme_hub_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Running a fleet") :]
    block = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "fleet-hub init" in b)
    commands = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["sudo"] and "fleet-hub" in words[1]:
            words = ["fleet-hub", *words[2:]]
        if words[:1] == ["fleet-hub"]:
            commands.append(words[1:] or ["(dashboard)"])
    return commands


def test_the_readme_runs_the_hub_as_a_service_first(
    tmp_path: Path,
    tmux: Tmux,  # noqa: F811
) -> None:
    commands = readme_hub_commands()
    assert [c[0] for c in commands] == [
        "init", "install-service", "enroll", "nodes", "report", "report", "audit", "pause",
        "(dashboard)",
    ]  # fmt: skip
    config = tmp_path / "hub.toml"
    local = [
        "--events",
        f"tcp://127.0.0.1:{free_port()}",
        "--commands",
        f"tcp://127.0.0.1:{free_port()}",
        "--api",
        f"127.0.0.1:{free_port()}",
        "--no-advertise",
    ]  # fmt: skip — the README's defaults would listen on every interface of the CI machine
    unit = tmp_path / "fleet-hub.service"
    served: ServedHub | None = None
    try:
        for words in commands:
            extra = ["--config", str(config)]
            if words[0] == "init":
                extra += local
            if words[0] == "install-service":
                words = [w.replace("$USER", getpass.getuser()) for w in words]
                extra += ["--output", str(unit)]
            if words[0] == "(dashboard)":  # beside the service: attached to it
                start_dashboard(tmux, tmp_path, *extra)
                assert served is not None
                tmux.wait_for(f"attached to {served.url}", "spark02", timeout=60)
                tmux.keys("q")
                continue
            done = fleet_hub(tmp_path, *words, *extra)
            if words[0] == "pause":  # no node agent listens: the hub says so, and audits it
                assert done.returncode == 1 and "no answer" in done.stdout, done.stderr
                continue
            assert done.returncode == 0, (words, done.stderr)
            if words[0] == "install-service":
                served = start_the_unit(unit, config, tmp_path)
            if words[0] == "enroll":
                assert served is not None
                served.send("spark02", [call("spark02", n) for n in range(2)])
            if words[0] == "nodes":
                assert "spark02" in done.stdout
        assert served is not None
        audit = served.cli("audit")
        assert "pause" in audit.stdout and "local-admin" in audit.stdout
    finally:
        if served is not None:
            stop(served.proc)


def start_the_unit(unit: Path, config: Path, tmp: Path) -> ServedHub:
    """What systemd would run: the unit's ExecStart, as written."""
    exec_start = next(
        line.removeprefix("ExecStart=")
        for line in unit.read_text().splitlines()
        if line.startswith("ExecStart=")
    )
    log = tmp / "hub.log"
    proc = subprocess.Popen(
        shlex.split(exec_start),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env(tmp),
    )
    wait_for(
        lambda: "fleet-hub serving" in log.read_text() or proc.poll() is not None, 30, "the hub"
    )
    assert proc.poll() is None, log.read_text()
    hub = load_hub_config(config)
    secret = bytes.fromhex(hub.secret_file.read_text().strip())
    setup = HubSetup(config, hub.events, hub.commands, hub.data_dir, secret)
    return ServedHub(setup, proc, f"http://{hub.api_listen}", {}, tmp)
