"""A running `node-agent run` ends soon after SIGTERM: every thread's wait is ended by the
stop, none sleeps on to its next duty (the daemon's join of a thread waits up to 10 s).
A real node process against an in-process hub on loopback."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from node_agent.outcomes.watch import MIN_GAP_S
from tests.fleet_harness import running_hub, start_node, wait_for, write_node

# Well under the daemon's 10 s join of a thread that did not wake; generous for a loaded box.
EXIT_WITHIN_S = 6.0


def test_sigterm_ends_a_connected_node_before_any_thread_join_times_out(tmp_path: Path) -> None:
    with running_hub(tmp_path) as (_hub, setup):
        config = write_node(tmp_path, "spark09", setup, [])
        node = start_node(config, tmp_path)
        log = config.parent / "node.log"
        try:
            wait_for(lambda: "connected to the hub" in log.read_text(), 30, "the node connected")
            # Not an assertion: past the outcome watch's first gap, all threads idle.
            time.sleep(MIN_GAP_S + 1.5)
            node.send_signal(signal.SIGTERM)
            try:
                code = node.wait(EXIT_WITHIN_S)
            except subprocess.TimeoutExpired:
                code = None
            assert code == 0, f"the node did not exit within {EXIT_WITHIN_S} s of SIGTERM"
        finally:
            node.kill()
            node.wait()
