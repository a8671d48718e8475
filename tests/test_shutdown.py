"""hub.shutdown in real processes: a program asked to end by a signal or a lost terminal runs
its cleanup once and exits, also when its loop is wedged (the dashboard's loop blocked on
Textual's output queue once the terminal is gone) and when there is nothing to ask yet."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.fleet_harness import ROOT, child_env, wait_for

PROGRAM = textwrap.dedent(
    """
    import sys, threading
    from pathlib import Path
    from hub.shutdown import Shutdown

    marks = Path(sys.argv[1])
    mode = sys.argv[2]

    def note(text):
        with marks.open("a") as out:
            out.write(text + "\\n")

    with Shutdown(lambda: note("cleaned"), grace=float(sys.argv[3])) as shutdown:
        wedged = threading.Event()
        if mode == "wedged":  # asked, but its loop never reads the request
            shutdown.asks(lambda: note("asked") or True)
        elif mode == "obedient":
            shutdown.asks(lambda: wedged.set() or True)
        note("ready")
        wedged.wait()  # a lock wait, as the loop's blocked queue.put is
        shutdown.asks(None)
        note("left")
    note("after")
    """
)


def _start(
    tmp_path: Path, mode: str, grace: float, **io: int
) -> tuple[subprocess.Popen[bytes], Path]:
    marks = tmp_path / "marks"
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marks), mode, str(grace)],
        cwd=ROOT, env=child_env(tmp_path), start_new_session=True,
        **{"stdin": subprocess.DEVNULL, **io},  # type: ignore[arg-type]
    )  # fmt: skip
    wait_for(lambda: marks.exists() and "ready" in marks.read_text(), 30, "the program")
    return proc, marks


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_an_obedient_program_ends_by_its_own_path(tmp_path: Path, sig: signal.Signals) -> None:
    proc, marks = _start(tmp_path, "obedient", 30.0)
    proc.send_signal(sig)
    assert proc.wait(30) == 0
    assert marks.read_text().split() == ["ready", "left", "cleaned", "after"]


def test_a_wedged_program_is_cleaned_up_and_ended_after_the_grace(tmp_path: Path) -> None:
    proc, marks = _start(tmp_path, "wedged", 1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert marks.read_text().split() == ["ready", "asked", "cleaned"]


def test_a_second_signal_ends_a_wedged_program_at_once(tmp_path: Path) -> None:
    proc, marks = _start(tmp_path, "wedged", 600.0)
    proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "asked" in marks.read_text(), 30, "the first signal taken")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 128 + signal.SIGINT
    assert marks.read_text().split() == ["ready", "asked", "cleaned"]


def test_with_nothing_to_ask_a_signal_unwinds_through_the_cleanup(tmp_path: Path) -> None:
    proc, marks = _start(tmp_path, "starting", 600.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 128 + signal.SIGTERM
    assert marks.read_text().split() == ["ready", "cleaned"]


@pytest.mark.parametrize("mode", ["obedient", "wedged", "starting"])
def test_a_closed_terminal_ends_it_without_any_signal(tmp_path: Path, mode: str) -> None:
    """The pty is not its controlling terminal (a session of its own): no SIGHUP comes when
    its other end closes; the watch on the terminal sees it go."""
    master, slave = pty.openpty()
    proc, marks = _start(tmp_path, mode, 1.0, stdout=slave, stderr=slave)
    os.close(slave)
    os.close(master)
    code = proc.wait(30)
    assert "cleaned" in marks.read_text().split()
    assert code == (0 if mode == "obedient" else 128 + signal.SIGHUP)


SLOW_CLEANUP = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from hub.shutdown import Shutdown

    marks = Path(sys.argv[1])

    def note(text):
        with marks.open("a") as out:
            out.write(text + "\\n")

    def cleanup():
        note("cleaning")
        for child in range(3):  # the demo's end: agents, nodes, the hub, one after another
            time.sleep(0.7)
            note(f"stopped {child}")

    with Shutdown(cleanup, grace=20.0) as shutdown:
        note("ready")  # then left as after `q`: nothing to ask any more
    note("after")
    """
)


def test_a_signal_during_the_cleanup_does_not_cut_it_short(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    script = tmp_path / "program.py"
    script.write_text(SLOW_CLEANUP)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marks)],
        cwd=ROOT, env=child_env(tmp_path), start_new_session=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: marks.exists() and "cleaning" in marks.read_text(), 30, "the cleanup")
        proc.send_signal(signal.SIGINT)  # Ctrl-C while the children are being stopped
        assert proc.wait(30) == 0
        assert marks.read_text().split() == [
            "ready", "cleaning", "stopped", "0", "stopped", "1", "stopped", "2", "after"
        ]  # fmt: skip
    finally:
        if proc.poll() is None:
            proc.kill()
