"""`fleet-hub demo` ends with everything it started however it is told to: its terminal gone
(tmux kill-server / kill-session; a pty closed under a demo it is not the controlling terminal
of, so no SIGHUP comes), SIGTERM, SIGINT, and kill -9 (its guard then ends the children). Real
processes throughout: the demo, its node agents, fake agents and their tools, found with psutil
by the demo's dir in their command line or environment."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from tests.fleet_harness import ROOT, child_env, wait_for
from tests.test_tui_tmux import Tmux, demo_processes, start_demo, tmux  # noqa: F401 (fixture)

# A demo of two machines: a node agent each, fake agents with their tools, the guard.
AT_LEAST: int = 8
GONE_WITHIN_S: float = 60.0


@dataclass
class PtyDemo:
    """`fleet-hub demo` on a pty of its own (a new session: the pty is not its controlling
    terminal); everything it writes is read off the master, as a terminal would."""

    popen: subprocess.Popen[bytes]
    master: int
    workdir: Path
    output: bytearray = field(default_factory=bytearray)

    def read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the demo closed its end, or we closed ours
                return
            if not chunk:
                return
            self.output += chunk

    def close_terminal(self) -> None:
        os.close(self.master)


@contextmanager
def demo_in_pty(tmp_path: Path) -> Iterator[PtyDemo]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    workdir = tmp_path / "demo"
    env = child_env(tmp_path)
    for name in ("COLUMNS", "LINES"):
        env.pop(name, None)
    env.update(TERM="xterm-256color", LANG="C.UTF-8", FLEETMETER_DEMO_MARK=str(workdir))
    popen = subprocess.Popen(
        [sys.executable, "-m", "hub.cli", "demo", "--machines", "2", "--pace", "0.3",
         "--dir", str(workdir)],
        stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(slave)
    demo = PtyDemo(popen, master, workdir)
    threading.Thread(target=demo.read, daemon=True).start()
    try:
        wait_for(lambda: b"spark02" in demo.output, 120, "the dashboard's machines")
        wait_for(lambda: len(demo_processes(workdir)) >= AT_LEAST + 1, 60, "the demo's fleet")
        yield demo
    finally:
        for proc in demo_processes(workdir):
            with suppress(psutil.Error):
                proc.kill()
        if popen.poll() is None:
            popen.kill()
        popen.wait(10)
        with suppress(OSError):
            os.close(master)


def _all_gone(workdir: Path, what: str) -> None:
    left: list[psutil.Process] = []

    def gone() -> bool:
        nonlocal left
        left = demo_processes(workdir)
        return not left

    try:
        wait_for(gone, GONE_WITHIN_S, what, every=0.5)
    except AssertionError:
        raise AssertionError(
            f"{what}: still running: {[(p.pid, p.name()) for p in left if p.is_running()]}"
        ) from None


def test_a_demo_whose_terminal_closes_without_a_sighup_ends_with_everything(
    tmp_path: Path,
) -> None:
    """The pty is not the demo's controlling terminal: closing it sends no SIGHUP. The
    dashboard's writes then fail (EIO) and its loop wedges on Textual's output queue; the
    demo saw its terminal go and still ends everything it started."""
    with demo_in_pty(tmp_path) as demo:
        demo.close_terminal()
        _all_gone(demo.workdir, "the demo and its tree after its terminal closed")
        demo.popen.wait(10)  # collected (it is among what _all_gone found ended)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_ends_the_demo_in_a_pty_and_everything_it_started(
    tmp_path: Path, sig: signal.Signals
) -> None:
    with demo_in_pty(tmp_path) as demo:
        demo.popen.send_signal(sig)
        _all_gone(demo.workdir, f"the demo and its tree after {sig.name}")
        demo.popen.wait(10)


def test_a_demo_killed_with_sigkill_leaves_nothing_running(tmp_path: Path) -> None:
    """Its guard (hub.demo._guard) ends the node agents, the fake agents and their tools."""
    with demo_in_pty(tmp_path) as demo:
        children = psutil.Process(demo.popen.pid).children(recursive=True)
        assert len(children) >= AT_LEAST
        demo.popen.kill()
        demo.popen.wait(10)
        _all_gone(demo.workdir, "the demo's children after kill -9 of the demo")


@pytest.mark.parametrize("how", ["kill-server", "kill-session"])
def test_a_demo_in_tmux_ends_with_its_terminal(tmux: Tmux, tmp_path: Path, how: str) -> None:  # noqa: F811
    workdir = start_demo(tmux, tmp_path, (120, 40))
    tmux.wait_for("spark01", "spark02", timeout=120)
    wait_for(lambda: len(demo_processes(workdir)) >= AT_LEAST + 1, 60, "the demo's fleet")
    tmux(how, *(["-t", "main"] if how == "kill-session" else []), check=False)
    _all_gone(workdir, f"the demo and its tree after tmux {how}")
