"""The node's systemd unit (readiness and watchdog pings are in `shared.systemd`). The unit follows
research/stack.md §7: `Type=notify` with a watchdog, `User=` the owner of the agents (a
DynamicUser could neither read their 0700 homes nor signal their processes), and the
hardening set that `systemd-analyze security` scores 2.2 OK. `ProtectProc=invisible` and
`ProcSubset=pid` are left out on purpose: the first hides the agents' processes, the second
hides /proc/stat, from which psutil reads the boot time behind every process start time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from shared.systemd import SANDBOX, USER_RE, notify_unit_head, quote_arg
from shared.systemd import sd_notify as sd_notify  # the daemon takes them from here
from shared.systemd import watchdog_interval as watchdog_interval

DESCRIPTION: Final = "fleetmeter node agent: agent logs to the fleet hub"
UNIT_NAME: Final = "node-agent.service"
UNIT_PATH: Final = Path("/etc/systemd/system") / UNIT_NAME
STATE_DIRECTORY: Final = "fleet-node"

_HARDENING: Final = f"""\
# Sandbox (systemd-analyze security node-agent: about 2.2 OK). Logs are read through
# ProtectHome=read-only; writes go only to StateDirectory and LogsDirectory.
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
{SANDBOX}MemoryMax=512M
CPUQuota=50%
# Not ProtectProc=invisible (hides the agents) nor ProcSubset=pid (hides /proc/stat, which
# psutil needs for process start times, the key of every pause/kill command).
"""


def render_unit(exec_start: str | Sequence[str], user: str, config_path: Path | None) -> str:
    """The unit file text. `exec_start` is the node-agent program (one path), or the words of
    a command that starts it (e.g. [python, "-m", "node_agent.cli"]); the unit runs it with
    `run [--config PATH]`. Raises ValueError for a user or path that cannot go in a unit."""
    words = [exec_start] if isinstance(exec_start, str) else list(exec_start)
    if not words or not all(words):
        raise ValueError("exec_start: empty command")
    if not words[0].startswith("/"):
        raise ValueError(f"exec_start: {words[0]!r} must be an absolute path")
    if not USER_RE.fullmatch(user):
        raise ValueError(f"user: {user!r} is not a user name")
    command = [*words, "run"]
    if config_path is not None:
        command += ["--config", str(config_path)]
    if any(c in arg for arg in command for c in "\n\r\0"):
        raise ValueError("exec_start/config_path: a line break cannot go in a unit file")
    exec_line = " ".join(quote_arg(arg) for arg in command)
    head = notify_unit_head(DESCRIPTION, exec_line)
    return f"""\
# Written by `node-agent install-service`. Local changes belong in a drop-in:
#   systemctl edit node-agent
{head}# The owner of the agents: it must read their homes and may signal their processes.
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
