"""The demo's guard: a small process that ends what the demo started if the demo itself is
killed (-9, an OOM kill), when it cannot end its children in order.

Every process the demo starts, and everything those start (a fake agent's tools and their
children), carries `RUN_VARIABLE` in its environment. The guard watches the demo's pid; once
it is gone, it kills (SIGKILL: a paused agent is stopped and would not act on SIGTERM)
every process of this user that carries the run's id, then exits. A demo that ends normally
has ended them already and stops the guard.

    python -c "from hub.demo._guard import main; raise SystemExit(main())" DEMO_PID RUN_ID
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import psutil

RUN_VARIABLE: Final = "FLEETMETER_DEMO_RUN"
WATCH_EVERY_S: Final = 0.5
_RUN: Final = "from hub.demo._guard import main; raise SystemExit(main())"


def start_guard(run_id: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start the guard of this process's run (in a session of its own: a terminal's Ctrl-C
    ends the demo, which stops the guard in order)."""
    with open(log_path, "ab") as out:
        return subprocess.Popen(
            # -c, not -m: the package hub.demo imports this module (runpy would warn)
            [sys.executable, "-c", _RUN, str(os.getpid()), run_id],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in env.items() if k != RUN_VARIABLE},  # not one of its own
            start_new_session=True,
        )


def run_processes(run_id: str) -> list[psutil.Process]:
    """This user's processes that carry `run_id` (the demo's children and theirs)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(RUN_VARIABLE) == run_id:
                found.append(proc)
        except (psutil.Error, OSError):  # gone, another user's, or a kernel thread
            continue
    return found


def end_run(run_id: str) -> int:
    """SIGKILL every process of the run; returns how many there were."""
    procs = run_processes(run_id)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(procs, timeout=5)
    return len(procs)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or not args[0].isdigit() or not args[1]:
        print("usage: hub.demo._guard DEMO_PID RUN_ID", file=sys.stderr)
        return 2
    demo_pid, run_id = int(args[0]), args[1]
    try:
        demo = psutil.Process(demo_pid)
        while demo.is_running() and demo.status() != psutil.STATUS_ZOMBIE:
            time.sleep(WATCH_EVERY_S)
    except psutil.Error:
        pass  # already gone
    ended = end_run(run_id)
    if ended:
        print(f"demo {demo_pid} ended without ending its processes: killed {ended}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
