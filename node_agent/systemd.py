"""systemd integration without a dependency: readiness and watchdog pings, and the unit file.

`sd_notify` sends one datagram to `$NOTIFY_SOCKET` (a leading `@` is the abstract namespace);
without systemd the variable is unset and it returns False. The unit follows
research/stack.md §7: `Type=notify` with a watchdog, `User=` the owner of the agents (a
DynamicUser could neither read their 0700 homes nor signal their processes), and the
hardening set that `systemd-analyze security` scores 2.2 OK. `ProtectProc=invisible` and
`ProcSubset=pid` are left out on purpose: the first hides the agents' processes, the second
hides /proc/stat, from which psutil reads the boot time behind every process start time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final

UNIT_NAME: Final = "node-agent.service"
UNIT_PATH: Final = Path("/etc/systemd/system") / UNIT_NAME
STATE_DIRECTORY: Final = "fleet-node"
# What useradd accepts (and systemd's User= with it): no blanks, no specifiers.
_USER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")

_HARDENING: Final = """\
# Sandbox (systemd-analyze security node-agent: about 2.2 OK). Logs are read through
# ProtectHome=read-only; writes go only to StateDirectory and LogsDirectory.
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
CapabilityBoundingSet=
UMask=0077
MemoryMax=512M
CPUQuota=50%
# Not ProtectProc=invisible (hides the agents) nor ProcSubset=pid (hides /proc/stat, which
# psutil needs for process start times, the key of every pause/kill command).
"""


def sd_notify(message: str) -> bool:
    """Send `message` (e.g. "READY=1", "WATCHDOG=1") to systemd; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    import socket  # only under systemd: `node-agent scan` starts faster without it

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects `WATCHDOG=1`; None when no watchdog is set for us."""
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    # Set for another process (we were started by something that inherited the env).
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


def _quote(arg: str) -> str:
    """One ExecStart= argument: '%' and '$' escaped, quoted when it has blanks or quotes."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\"'\\"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(exec_start: str | Sequence[str], user: str, config_path: Path | None) -> str:
    """The unit file text. `exec_start` is the node-agent program (one path), or the words of
    a command that starts it (e.g. [python, "-m", "node_agent.cli"]); the unit runs it with
    `run [--config PATH]`. Raises ValueError for a user or path that cannot go in a unit."""
    words = [exec_start] if isinstance(exec_start, str) else list(exec_start)
    if not words or not all(words):
        raise ValueError("exec_start: empty command")
    if not words[0].startswith("/"):
        raise ValueError(f"exec_start: {words[0]!r} must be an absolute path")
    if not _USER_RE.fullmatch(user):
        raise ValueError(f"user: {user!r} is not a user name")
    command = [*words, "run"]
    if config_path is not None:
        command += ["--config", str(config_path)]
    if any(c in arg for arg in command for c in "\n\r\0"):
        raise ValueError("exec_start/config_path: a line break cannot go in a unit file")
    exec_line = " ".join(_quote(arg) for arg in command)
    return f"""\
# Written by `node-agent install-service`. Local changes belong in a drop-in:
#   systemctl edit node-agent
[Unit]
Description=fleetmeter node agent: agent logs to the fleet hub
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_line}
# The owner of the agents: it must read their homes and may signal their processes.
User={user}
Restart=on-failure
RestartSec=2s
WatchdogSec=30s
TimeoutStopSec=10s
# /var/lib/{STATE_DIRECTORY}: the outbox and read positions ($STATE_DIRECTORY).
StateDirectory={STATE_DIRECTORY}
LogsDirectory={STATE_DIRECTORY}
Environment=PYTHONUNBUFFERED=1
{_HARDENING}
[Install]
WantedBy=multi-user.target
"""
