"""The demo killed with -9 leaves nothing running: its guard ends the node agents, the fake
agents and their tools (12 processes were left behind before the guard, paused ones too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.fleet_harness import ROOT, child_env, wait_for


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_a_demo_killed_with_sigkill_leaves_no_process_behind(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "hub.demo", "--seconds", "600", "--machines", "1"]
        + ["--workdir", str(tmp_path / "demo")],
        cwd=ROOT,
        env=child_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        parent = psutil.Process(demo.pid)

        def started() -> list[psutil.Process]:
            return [p for p in parent.children(recursive=True) if alive(p)]

        # a node agent and its fake agents, each with a tool shell and its child
        wait_for(lambda: len(started()) >= 8, 90, "the demo's processes")
        time.sleep(1.0)  # the last agents' tools
        guards = [
            p for p in started() if "from hub.demo._guard import main" in " ".join(p.cmdline())
        ]
        assert len(guards) == 1
        children = [p for p in started() if p not in guards]
        agent = next(p for p in children if "fake_agent" in " ".join(p.cmdline()))
        agent.send_signal(signal.SIGSTOP)  # a paused agent is ended too
        os.kill(demo.pid, signal.SIGKILL)
        demo.wait(10)
        wait_for(lambda: not any(alive(p) for p in children), 20, "the demo's processes to end")
        wait_for(lambda: not alive(guards[0]), 10, "the guard to exit")
        log = (tmp_path / "demo" / "guard.log").read_text()
        assert f"demo {demo.pid} ended without ending its processes: killed" in log
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def test_a_demo_that_ends_in_order_stops_its_guard(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hub.demo", "--seconds", "3", "--machines", "1"]
        + ["--workdir", str(tmp_path / "demo")],
        cwd=ROOT,
        env=child_env(tmp_path),
        capture_output=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert (tmp_path / "demo" / "guard.log").read_text() == ""  # it had nothing to do
    leftover = [
        p
        for p in psutil.process_iter(["cmdline"])
        if str(tmp_path) in " ".join(p.info["cmdline"] or ()) and alive(p)
    ]
    assert leftover == []
