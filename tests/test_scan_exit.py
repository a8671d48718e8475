"""A scan run as its own process leaves without tearing the interpreter down (it cost a Codex
scan ~20 ms): what it printed is all there, its status is kept, and a reader that went away
still gets one line, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from node_agent.simulate.fleet import generate_fleet

# The console script's way in (argv from sys.argv), with an exit hook that says whether the
# interpreter ran its teardown.
PROBE = """
import atexit, sys
atexit.register(lambda: print("torn down", file=sys.stderr))
from node_agent.entry import main
sys.argv = ["node-agent", *sys.argv[1:]]
sys.exit(main())
"""


@pytest.fixture(scope="module")
def codex_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("exit") / "fleet"
    generate_fleet(root, seed=31, machines=1, start=datetime(2026, 10, 12, tzinfo=UTC), days=1)
    return root / "spark01" / "codex"


def _run(
    tmp_path: Path, *args: str, stdout: int = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_a_scan_prints_everything_and_skips_the_teardown(tmp_path: Path, codex_home: Path) -> None:
    proc = _run(tmp_path, "scan", "--json", "--no-cache", str(codex_home))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["total"]["calls"] > 0  # the whole JSON, flushed
    assert "torn down" not in proc.stderr


def test_its_status_is_kept(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _run(tmp_path, "scan", "--json", str(empty))
    assert proc.returncode == 1  # a path that is no agent's home
    assert json.loads(proc.stdout)["total"]["calls"] == 0
    assert "no agent's logs" in proc.stderr and "torn down" not in proc.stderr


def test_other_commands_exit_as_before(tmp_path: Path) -> None:
    proc = _run(tmp_path, "scan", "--help")  # argparse exits itself: not a finished scan
    assert proc.returncode == 0 and "torn down" in proc.stderr


def test_a_reader_gone_before_the_last_flush_gets_one_line(tmp_path: Path) -> None:
    """A small report stays in the buffer until the exit's flush, which then meets the pipe."""
    empty = tmp_path / "empty"
    empty.mkdir()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = _run(tmp_path, "scan", "--json", str(empty), stdout=write_end)
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert "broken pipe" in proc.stderr
    assert proc.returncode == 1


def test_a_scan_started_without_stdout_says_so_in_one_line(tmp_path: Path) -> None:
    """fd 1 closed at start: Python has no sys.stdout; the scan's error is its one line, and
    the exit's flush adds no traceback."""
    empty = tmp_path / "empty"
    empty.mkdir()
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "scan", "--json", str(empty)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=120,
        check=False,
        preexec_fn=lambda: os.close(1),  # the child starts without fd 1
    )
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert proc.returncode == 1
