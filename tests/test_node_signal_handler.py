"""The node's SIGTERM handler takes no lock: Python runs it in the main thread between any two
bytecodes, also while that thread holds the stop flag's own lock (inside `Event.wait`, after
its wait ends), where a handler that set the flag itself would wait on that lock for good. The
scene runs in a child process, so that a hang fails the test instead of stopping the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fleet_harness import ROOT

SCENE = """
import signal, sys
from pathlib import Path
from node_agent.daemon import Daemon
from shared.config import NodeConfig

state = Path(sys.argv[1])
daemon = Daemon(NodeConfig(node="n1", profiles=(), state_dir=state, status_file=None))
daemon.install_signals()
handler = signal.getsignal(signal.SIGTERM)
# What Python does when the signal lands inside `Event.wait`'s `with self._cond:`: the handler
# runs in this thread with the flag's lock held.
with daemon.stop._cond:
    handler(signal.SIGTERM, None)
    print("handler returned", flush=True)
    assert not daemon.stop.is_set()  # the relay sets it once the lock is free
assert daemon.stop.wait(10), "the relay did not set the stop flag"
print("stopped", flush=True)
"""


def test_a_sigterm_while_the_main_thread_holds_the_stop_flags_lock_still_stops(
    tmp_path: Path,
) -> None:
    (tmp_path / "state").mkdir()
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCENE, str(tmp_path / "state")],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the handler hung the main thread: {exc.stdout!r}") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["handler returned", "stopped"]
