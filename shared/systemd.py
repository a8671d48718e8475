"""systemd integration without a dependency, for both services (node-agent and fleet-hub):
readiness and watchdog pings, and quoting for unit files.

`sd_notify` sends one datagram to `$NOTIFY_SOCKET` (a leading `@` is the abstract namespace);
without systemd the variable is unset and it returns False.
"""

from __future__ import annotations

import os
import re
from typing import Final

# The sandbox both units share (each adds its own filesystem view and limits).
SANDBOX: Final = """\
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
"""


def notify_unit_head(description: str, exec_line: str) -> str:
    """A unit's lines from [Unit] to ExecStart=, as both services have them: after the
    network, restarts bounded, readiness told by the main process."""
    return f"""\
[Unit]
Description={description}
After=network-online.target
Wants=network-online.target
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_line}
"""


# What useradd accepts (and systemd's User= with it): no blanks, no specifiers.
USER_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?")


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


def quote_arg(arg: str) -> str:
    """One ExecStart= argument: '%' and '$' escaped, quoted when it has blanks or quotes."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\"'\\"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def program_words(script: str, module: str) -> list[str]:
    """How systemd should start this same installation's `script` (not whatever is first on
    PATH): the console script beside this interpreter, else on PATH, else `python -m module`."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / script  # the venv's console script
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which(script)
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(sys.executable).absolute()), "-m", module]
