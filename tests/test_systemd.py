"""systemd: notify datagrams on real sockets, the watchdog env, the unit and install-service."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent.cli import main
from node_agent.systemd import render_unit, sd_notify, watchdog_interval

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed")


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    yield sock
    sock.close()


def test_sd_notify_path_socket(
    receiver: socket.socket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    assert sd_notify("READY=1\nSTATUS=tailing 12 files")
    assert receiver.recv(4096) == b"READY=1\nSTATUS=tailing 12 files"


def test_sd_notify_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"fleetmeter-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sd_notify("WATCHDOG=1")
        assert sock.recv(4096) == b"WATCHDOG=1"


def test_sd_notify_without_systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert not sd_notify("READY=1")


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("30000000", None, 30.0),
        ("30000000", "self", 30.0),
        ("30000000", "1", None),  # meant for another process
        (None, None, None),
        ("0", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for var, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, str(os.getpid()) if value == "self" else value)
    assert watchdog_interval() == expected


REQUIRED = (
    "Type=notify",
    "WatchdogSec=30s",
    "Restart=on-failure",
    "RestartSec=2s",
    "TimeoutStopSec=10s",
    "StartLimitIntervalSec=",
    "StartLimitBurst=",
    "StateDirectory=fleet-node",
    "User=ops",
    "ProtectHome=read-only",
    "ProtectSystem=strict",
    "NoNewPrivileges=yes",
    "SystemCallFilter=@system-service",
    "CapabilityBoundingSet=",
    "MemoryDenyWriteExecute=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "UMask=0077",
    "After=network-online.target",
    "WantedBy=multi-user.target",
)


def test_unit_has_the_required_lines() -> None:
    unit = render_unit("/opt/fm/bin/node-agent", "ops", Path("/etc/fleetmeter/node.toml"))
    lines = unit.splitlines()
    for line in REQUIRED:
        assert any(ln.startswith(line) for ln in lines), line
    assert "ExecStart=/opt/fm/bin/node-agent run --config /etc/fleetmeter/node.toml" in lines
    # These two would hide the agents' processes or psutil's boot time.
    assert not any(ln.startswith(("ProtectProc=", "ProcSubset=", "DynamicUser=")) for ln in lines)


def test_unit_quotes_and_escapes_exec_start() -> None:
    unit = render_unit(["/usr/bin/python3", "-m", "node_agent.cli"], "ops", Path("/x/100% y.toml"))
    assert 'ExecStart=/usr/bin/python3 -m node_agent.cli run --config "/x/100%% y.toml"' in unit


@pytest.mark.parametrize(
    ("exec_start", "user", "message"),
    [
        ("/bin/x", "ops\nExecStartPre=/bin/evil", "is not a user name"),
        ("/bin/x", "", "is not a user name"),
        ([], "ops", "empty command"),
        ("node-agent", "ops", "must be an absolute path"),
    ],
)
def test_unit_refuses_what_cannot_go_in_it(
    exec_start: str | list[str], user: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        render_unit(exec_start, user, None)


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, check=False, timeout=60)


@needs_analyze
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "node-agent.service"
    config = tmp_path / "node config.toml"
    unit.write_text(render_unit(sys.executable, "root", config))
    proc = analyze("verify", str(unit))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    # The check itself can fail: a broken unit is reported.
    unit.write_text(unit.read_text().replace("Type=notify", "Type=notifyy"))
    assert "Failed to parse service type" in analyze("verify", str(unit)).stderr


@needs_analyze
def test_sandbox_scores_as_researched(tmp_path: Path) -> None:
    unit = tmp_path / "node-agent.service"
    unit.write_text(render_unit(sys.executable, "fleetop", None))
    proc = analyze("security", "--offline=yes", str(unit))
    if "--offline" in proc.stderr:
        pytest.skip("systemd-analyze too old for --offline")
    match = re.search(r"Overall exposure level for node-agent\.service: ([\d.]+)", proc.stdout)
    assert match is not None, proc.stdout + proc.stderr
    assert float(match.group(1)) <= 2.2


def test_install_service_writes_the_unit_and_says_what_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "node-agent.service"
    config = tmp_path / "node.toml"
    config.write_text('node = "n1"\n')
    code = main(
        ["install-service", "--user", "root", "--output", str(output), "--config", str(config)]
    )
    out = capsys.readouterr().out
    assert code == 0
    unit = output.read_text()
    assert "User=root" in unit and f"--config {config}" in unit
    assert oct(output.stat().st_mode & 0o777) == "0o644"
    for step in (
        "systemctl daemon-reload",
        "systemctl enable --now node-agent",
        "systemd-analyze security node-agent",
    ):
        assert step in out
    assert main(["install-service", "--user", "root", "--print"]) == 0
    assert capsys.readouterr().out.startswith("# Written by `node-agent install-service`")


def test_install_service_without_permission_says_how(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    assert main(["install-service", "--output", str(blocked / "x.service")]) == 1
    assert "use --print / --output FILE" in capsys.readouterr().err
