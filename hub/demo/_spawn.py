"""Starting the demo's child processes (node agents and fake agents): an environment kept away
from the real home, a session of their own, output appended to a log file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]  # the checkout (or site-packages)
# Variables a child must not inherit: another agent home, another config, a systemd service's,
# a forge token.
UNINHERITED: Final = frozenset(
    {
        "CLAUDE_CONFIG_DIR",
        "CODEX_HOME",
        "GEMINI_CLI_HOME",
        "OPENCODE_DATA_DIR",
        "FLEETMETER_CONFIG",
        "FLEETMETER_HUB_CONFIG",
        "STATE_DIRECTORY",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        # the demo's repositories are made up: its nodes must not ask GitHub about them
        "FLEETMETER_GITHUB_TOKEN",
        "GITHUB_TOKEN",
    }
)


def child_env(workdir: Path) -> dict[str, str]:
    """Children keep away from the real home: config, state and data dirs under workdir."""
    env = {k: v for k, v in os.environ.items() if k not in UNINHERITED}
    for name in ("config", "state", "data", "cache"):
        env[f"XDG_{name.upper()}_HOME"] = str(workdir / f"xdg-{name}")
    # `python -m node_agent...` must work from a checkout as well as installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def spawn(command: list[str], log_path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as out:
        # A session of its own: a terminal's Ctrl-C reaches only the demo, which ends
        # everything in order (agents first, while nodes and hub still take their logs).
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
