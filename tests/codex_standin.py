"""A real stand-in for a Codex CLI process mid-turn, for the interrupt tests that need no npm:
named `codex` (as the native binary's comm reads), its rollout open for writing with a turn
in progress (`task_started`), a tool shell (`bash -c 'sleep 600'`) and a non-shell child (an
MCP server's place: `sleep 600`) below it.

    python tests/codex_standin.py ROLLOUT --on-sigint abort|exit|ignore [--idle]

On SIGINT: `abort` writes `turn_aborted` (reason interrupted) and goes on (the TUI), `exit`
writes it and exits (`codex exec`), `ignore` does nothing (a Codex that does not react).
`--idle`: the turn has ended already (`task_complete`). `--shell-first`: the shell was started
before the turn (`started_at` says when the turn began). Prints one JSON line once ready.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from node_agent.simulate.fake_agent import set_process_name

TURN = "01a24808-6298-70b2-8cd0-b840f6c9a30e"


def line(kind: str, **more: object) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    payload = {"type": kind, "turn_id": TURN, **more}
    return json.dumps({"timestamp": stamp, "type": "event_msg", "payload": payload}) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("rollout", type=Path)
    parser.add_argument("--on-sigint", choices=("abort", "exit", "ignore"), required=True)
    parser.add_argument("--idle", action="store_true")
    parser.add_argument("--shell-first", action="store_true", help="a shell an earlier turn left")
    args = parser.parse_args()
    set_process_name("codex")
    rollout = args.rollout.open("a", buffering=1)
    server = subprocess.Popen(["sleep", "600"])  # started with the session, before any turn
    shell = None
    if args.shell_first:
        shell = subprocess.Popen(["bash", "-c", "sleep 600; echo never"])
        time.sleep(2.1)  # task_started's started_at is in whole seconds
        rollout.write(line("task_started", started_at=int(time.time())))
    else:
        rollout.write(line("task_started"))
    if args.idle:
        rollout.write(line("task_complete", last_agent_message="done"))
    if shell is None:
        shell = subprocess.Popen(["bash", "-c", "sleep 600; echo never"])
    interrupted = False

    def on_sigint(_sig: int, _frame: FrameType | None) -> None:
        nonlocal interrupted
        if args.on_sigint != "ignore":
            rollout.write(line("turn_aborted", reason="interrupted"))
            interrupted = True

    signal.signal(signal.SIGINT, on_sigint)
    ready = {"ready": True, "shell": shell.pid, "server": server.pid}
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    while not (interrupted and args.on_sigint == "exit"):
        time.sleep(0.02)
    rollout.close()
    return 1  # codex exec exits 1 after an interrupted turn (0.171.0)


if __name__ == "__main__":
    sys.exit(main())
