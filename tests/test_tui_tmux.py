"""`fleet-hub demo` in a real terminal: tmux runs it, capture-pane reads the screen, send-keys
drives it, and quitting must leave no process of the demo behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.fleet_harness import ROOT, child_env


class Tmux:
    def __init__(self, socket: str) -> None:
        self.socket = socket

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-u", "-L", self.socket, *args], capture_output=True, text=True, check=check
        )

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "main").stdout

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", "main", *keys)

    def alive(self) -> bool:
        return self("has-session", "-t", "main", check=False).returncode == 0

    def wait_for(self, *texts: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen() if self.alive() else screen
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {texts} on the screen:\n{screen}")

    def wait_gone(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text not in self.screen():
                return
            time.sleep(0.2)
        raise AssertionError(f"{text!r} still on the screen after {timeout:g} s")


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    assert shutil.which("tmux"), "this test needs tmux (apt-get install tmux; .ci/run does)"
    t = Tmux(f"fleetmeter-test-{os.getpid()}")
    try:
        yield t
    finally:
        t("kill-server", check=False)


def demo_processes(workdir: Path) -> list[psutil.Process]:
    """Every process whose command line or environment points into the demo's dir."""
    mine = []
    needle = str(workdir)
    for proc in psutil.process_iter(["cmdline", "status", "name"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.info["name"].startswith("tmux"):
                continue
            if any(needle in part for part in proc.info["cmdline"] or ()):
                mine.append(proc)
                continue
            if any(needle in value for value in proc.environ().values()):
                mine.append(proc)
        except (psutil.Error, OSError):
            continue
    return mine


def start_demo(tmux: Tmux, tmp_path: Path, size: tuple[int, int], **extra_env: str) -> Path:
    """`fleet-hub demo` with two machines in a tmux window of `size`; returns its dir."""
    workdir = tmp_path / "demo"
    env = child_env(tmp_path)
    env["TERM"] = "xterm-256color"
    env["LANG"] = "C.UTF-8"
    env["FLEETMETER_DEMO_MARK"] = str(workdir)  # lets demo_processes find every descendant
    env.update(extra_env)
    command = (
        # COLUMNS/LINES (pytest's own, passed on by the tmux server) would override the
        # window's size for Textual.
        f"unset COLUMNS LINES; cd {ROOT} && "
        f"exec {sys.executable} -m hub.cli demo --machines 2 --pace 0.3 --dir {workdir}"
    )
    tmux(
        "new-session", "-d", "-s", "main", "-x", str(size[0]), "-y", str(size[1]),
        *(arg for key, value in env.items() for arg in ("-e", f"{key}={value}")),
        command,
    )  # fmt: skip
    return workdir


def quit_and_nothing_left(tmux: Tmux, workdir: Path) -> None:
    tmux.keys("q")
    deadline = time.monotonic() + 60
    while tmux.alive() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not tmux.alive(), "fleet-hub demo did not exit on q"
    deadline = time.monotonic() + 15
    left = demo_processes(workdir)
    while left and time.monotonic() < deadline:
        time.sleep(0.3)
        left = demo_processes(workdir)
    assert not left, [(p.pid, p.name()) for p in left]


def test_the_demo_in_a_real_terminal_and_nothing_left_after_quit(
    tmux: Tmux, tmp_path: Path
) -> None:
    workdir = start_demo(tmux, tmp_path, (200, 50))
    screen = tmux.wait_for("spark01", "spark02", "online", "Machines", timeout=90)
    assert "today" in screen and "burn" in screen  # the header line

    tmux.keys("3")  # sessions: the fake agents' sessions, running
    screen = tmux.wait_for("running", "main $", timeout=60)
    (tmp_path / "screen-sessions.txt").write_text(screen)

    tmux.keys("?")
    tmux.wait_for("Keys", "pause the selected session")
    tmux.keys("Escape")
    tmux.wait_gone("pause the selected session")  # else "1" right after ESC reads as alt+1

    tmux.keys("1")
    screen = tmux.wait_for("spark01", "cache rd")
    (tmp_path / "screen-machines.txt").write_text(screen)
    assert demo_processes(workdir), "the demo's processes should be running before quit"
    quit_and_nothing_left(tmux, workdir)


def test_the_demo_at_80x24_without_colour(tmux: Tmux, tmp_path: Path) -> None:
    """The smallest usual terminal, NO_COLOR: the header keeps every figure, the footer the
    halt keys, the Sessions tab its key columns, and the runaway's cache ratio is marked."""
    workdir = start_demo(tmux, tmp_path, (80, 24), NO_COLOR="1")
    # the header is redrawn on its own tick, which may come after the table's rows: both
    screen = tmux.wait_for("spark01", "spark02", "online", "Machines", "2/2", "met $", timeout=90)
    lines = screen.splitlines()
    header, footer = lines[0], lines[-1]
    for part in ("met $", "sub $", "est", "unk", "/h", "→", "2/2"):
        assert part in header, (part, header)
    for key in ("p Pause", "r Resume", "k Kill", "P Pause all", "R Resume all", "q Quit"):
        assert key in footer, (key, footer)
    # spark02's runaway writes the cache and never reads it: marked, not only red
    screen = tmux.wait_for("▼", timeout=60)
    (tmp_path / "screen-machines-80x24.txt").write_text(screen)
    assert "spark02" in next(line for line in screen.splitlines() if "▼" in line)

    tmux.keys("3")
    screen = tmux.wait_for("running", "main $", "process", timeout=60)
    (tmp_path / "screen-sessions-80x24.txt").write_text(screen)
    assert "more columns (c)" in screen
    row = next(line for line in screen.splitlines() if "running" in line)
    assert "spark0" in row and "$" in row

    tmux.keys("?")
    screen = tmux.wait_for("Keys", "pause the selected session")
    tmux.keys("Escape")
    tmux.wait_gone("pause the selected session")
    quit_and_nothing_left(tmux, workdir)
