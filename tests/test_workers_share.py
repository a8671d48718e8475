"""`workers.share`: work spread over this process and forked helpers comes back whole and in
order, even when a helper is killed (-9) mid-way, or while it holds the lock of the claims.

Run in a fresh interpreter each (a real subprocess): `share` forks, and this test session may
have loaded pynng, which must not be forked (see `workers`)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import fcntl, json, os, signal, sys, time
    from node_agent import workers

    mode, count, helpers, chunk = sys.argv[1], *map(int, sys.argv[2:5])
    parent = os.getpid()

    def here(item):
        time.sleep(0.002)  # work that takes a while: every process gets some
        return ["here", item * 3, os.getpid()]

    done_there = []

    def there(item):
        time.sleep(0.002)
        done_there.append(item)
        if mode == "kill" and len(done_there) == 6:
            os.kill(os.getpid(), signal.SIGKILL)  # lost mid-way, within its second claim
        if mode == "raise" and len(done_there) == 6:
            raise RuntimeError("a bug in the reader")
        return json.dumps(["there", item * 3, os.getpid()]).encode()

    if mode == "held":
        real_help = workers._help

        def dies_holding_the_lock(there, work, claims, send):
            there(work[0])  # some work first, so the parent is under way
            fcntl.lockf(claims._fd, fcntl.LOCK_EX)  # the lock of the claims, never let go
            os.kill(os.getpid(), signal.SIGKILL)

        workers._help = dies_holding_the_lock

    def back(message):
        return json.loads(bytes(message))

    started = []
    out = workers.share(
        here, there, back, list(range(count)), helpers, lambda: started.append(1), chunk
    )
    loaded = "multiprocessing" in sys.modules
    print(json.dumps({"parent": parent, "out": out, "started": started, "loaded": loaded}))
    """
)


def run(mode: str, count: int, helpers: int, chunk: int) -> dict[str, object]:
    found, _stderr = run_with_stderr(mode, count, helpers, chunk)
    return found


def run_with_stderr(
    mode: str, count: int, helpers: int, chunk: int
) -> tuple[dict[str, object], str]:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(count), str(helpers), str(chunk)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, object] = json.loads(done.stdout)
    return found, done.stderr


@pytest.mark.parametrize(
    ("count", "helpers", "chunk"), [(0, 1, 4), (1, 1, 4), (300, 1, 4), (257, 3, 1)]
)
def test_every_item_comes_back_once_in_order(count: int, helpers: int, chunk: int) -> None:
    found = run("plain", count, helpers, chunk)
    out = found["out"]
    assert isinstance(out, list)
    assert [value for _, value, _ in out] == [item * 3 for item in range(count)]
    assert found["started"] == [1]
    assert found["loaded"] is False  # forked without multiprocessing (~10 ms of a scan's start)
    if count >= 300:  # enough work that every process took some
        where = {(how, pid) for how, _, pid in out}
        assert ("here", found["parent"]) in where
        assert len({pid for how, pid in where if how == "there"}) >= 1


@pytest.mark.parametrize("mode", ["kill", "held"])
def test_a_helper_killed_loses_nothing(mode: str) -> None:
    """Killed mid-way (its items taken and not sent are done again here), or killed holding
    the claims' lock (the kernel lets go of it, and this process takes the rest)."""
    found = run(mode, 200, 1, 4)
    out = found["out"]
    assert isinstance(out, list)
    assert [value for _, value, _ in out] == [item * 3 for item in range(200)]
    assert any(how == "here" for how, _, _ in out)


def test_the_module_loads_where_there_is_no_fcntl() -> None:
    """Windows has neither fcntl nor fork: `worker_context` (its process pool) still loads."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['fcntl'] = None; import node_agent.workers",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_a_helper_that_fails_says_so_in_one_line_and_loses_nothing() -> None:
    found, stderr = run_with_stderr("raise", 200, 1, 4)
    out = found["out"]
    assert isinstance(out, list)
    assert [value for _, value, _ in out] == [item * 3 for item in range(200)]
    assert stderr.splitlines() == [
        "node-agent: a helper process failed (RuntimeError: a bug in the reader);"
        " its items were done again in the main process"
    ]
    assert "Traceback" not in stderr
