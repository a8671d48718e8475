"""The hub's systemd unit, as `fleet-hub install-service` writes it: `Type=notify` with a
watchdog, `Restart=on-failure`, hardened. A system service runs as `User=` (the owner of the
config and the store); a user service (`--user-unit`) runs in that user's manager.

Unlike the node, the hub signals no process and reads no agent's home, so it may hide other
processes (`ProtectProc=invisible`) and write only its store and its config's directory (the
API tokens file lives beside the config).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from shared.systemd import SANDBOX, USER_RE, notify_unit_head, quote_arg

DESCRIPTION: Final = "fleetmeter hub: receiver, store, commands and the HTTP API"
UNIT_NAME: Final = "fleet-hub.service"
SYSTEM_UNIT_PATH: Final = Path("/etc/systemd/system") / UNIT_NAME


def user_unit_path() -> Path:
    return Path.home() / ".config" / "systemd" / "user" / UNIT_NAME


_HARDENING: Final = """\
ProtectSystem=strict
ProtectHome=read-only
ReadWritePaths={writable}
PrivateTmp=yes
PrivateDevices=yes
ProtectProc=invisible
{sandbox}"""


def render_hub_unit(
    exec_start: Sequence[str], config_path: Path, data_dir: Path, user: str | None
) -> str:
    """The unit text. `user` None: a user service (no User=, WantedBy=default.target).
    Raises ValueError for what cannot go in a unit."""
    words = list(exec_start)
    if not words or not all(words) or not words[0].startswith("/"):
        raise ValueError("exec_start: the first word must be an absolute path")
    if user is not None and not USER_RE.fullmatch(user):
        raise ValueError(f"user: {user!r} is not a user name")
    command = [*words, "serve", "--config", str(config_path)]
    writable = [str(data_dir), str(config_path.parent)]
    if any(c in arg for arg in [*command, *writable] for c in "\n\r\0"):
        raise ValueError("a line break cannot go in a unit file")
    exec_line = " ".join(quote_arg(arg) for arg in command)
    user_line = f"User={user}\n" if user is not None else ""
    wanted = "multi-user.target" if user is not None else "default.target"
    hardening = _HARDENING.format(
        writable=" ".join(quote_arg(p) for p in writable), sandbox=SANDBOX
    )
    return f"""\
# Written by `fleet-hub install-service`. Local changes belong in a drop-in:
#   systemctl {"" if user is not None else "--user "}edit fleet-hub
{notify_unit_head(DESCRIPTION, exec_line)}{user_line}Restart=on-failure
RestartSec=2s
WatchdogSec=30s
# SIGTERM: the hub stops listening, commits and exits; this is ample.
TimeoutStopSec=20s
Environment=PYTHONUNBUFFERED=1
{hardening}
[Install]
WantedBy={wanted}
"""
