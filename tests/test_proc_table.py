"""The inventory's sweep reads /proc itself (`node_agent.procs.proc_table`), not through psutil's
per-process objects: on real processes it must read what psutil reads (a command names a
process by psutil's (pid, create_time)), and a pid the kernel hands to another process must
not be taken for the agent that had it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import suppress
from pathlib import Path

import psutil
import pytest

from node_agent.procs import ProcessInventory
from node_agent.procs.proc_table import cmdline, sweep
from shared.config import NodeConfig, Profile
from shared.events import Agent
from tests.fleet_harness import wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc")

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started into the list are killed and reaped afterwards, pass or fail."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        with suppress(OSError):
            proc.send_signal(signal.SIGKILL)
        proc.wait()


def run_as(tmp: Path, name: str, *args: str, env: Mapping[str, str] | None = None) -> list[str]:
    """A command line whose program is `sleep` under another name (its comm is that name)."""
    program = tmp / name
    if not program.exists():
        program.symlink_to(shutil.which("sleep") or "/bin/sleep")
    return [str(program), *args]


def psutil_row(pid: int) -> tuple[float, int, str, str]:
    proc = psutil.Process(pid)
    with proc.oneshot():
        return proc.create_time(), proc.ppid(), proc.name(), proc.status()


def same_name(ours: str, theirs: str) -> bool:
    """psutil completes a name of 15 bytes or more (cut by the kernel) from the command line."""
    return ours == theirs or (len(ours) >= 15 and theirs.startswith(ours))


def test_the_sweep_reads_what_psutil_reads(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    sleeping = subprocess.Popen(run_as(tmp_path, "sleepy", "60"))
    stopped = subprocess.Popen(run_as(tmp_path, "stopped", "60"))
    # A name with parentheses and spaces, arguments with spaces: Python under that name.
    (tmp_path / "a) b (c").symlink_to(sys.executable)
    odd_argv = [str(tmp_path / "a) b (c"), "-c", "import time; time.sleep(60)", "two words"]
    odd = subprocess.Popen(odd_argv)
    zombie = subprocess.Popen(["true"])  # exits, not reaped until the fixture's wait
    started += [sleeping, stopped, odd, zombie]
    stopped.send_signal(signal.SIGSTOP)
    wait_for(lambda: psutil.Process(stopped.pid).status() == "stopped", 10, "the stop")
    wait_for(lambda: psutil.Process(zombie.pid).status() == "zombie", 10, "the zombie")
    for asleep in (sleeping, odd):  # a process still starting up reads "running"
        wait_for(lambda p=asleep: psutil.Process(p.pid).status() == "sleeping", 30, "at its sleep")

    rows = {row.pid: row for row in sweep()}
    me = os.getpid()
    want = {
        sleeping.pid: ("sleepy", "sleeping"),
        stopped.pid: ("stopped", "stopped"),
        odd.pid: ("a) b (c", "sleeping"),
        zombie.pid: ("true", "zombie"),
    }
    for pid, (name, status) in want.items():
        row = rows[pid]
        assert (row.ppid, row.name, row.status) == (me, name, status)
        assert (row.create_time, row.ppid, row.name, row.status) == psutil_row(pid)
    assert cmdline(odd.pid) == tuple(odd_argv)
    assert cmdline(odd.pid) == tuple(psutil.Process(odd.pid).cmdline())
    assert cmdline(zombie.pid) == ()
    # Every other process alike, where psutil could read it (some exit meanwhile).
    compared = 0
    for pid, row in rows.items():
        with suppress(psutil.Error):
            theirs = psutil_row(pid)
            if theirs[3] == row.status:  # a running process may change state between reads
                assert (row.create_time, row.ppid) == theirs[:2], pid
                # Kernel workers (kthreadd's children) rename themselves for each work item.
                if row.ppid != 2:
                    assert same_name(row.name, theirs[2]), (row.name, theirs[2])
                compared += 1
    assert compared >= len(want)


def claude_profiles(tmp: Path) -> tuple[NodeConfig, dict[str, str], dict[str, str]]:
    """Two Claude profiles, and the environment an agent of each runs with."""
    homes = {name: tmp / name for name in ("claude-a", "claude-b")}
    for home in homes.values():
        home.mkdir()
    profiles = tuple(Profile(name, Agent.CLAUDE_CODE, home) for name, home in homes.items())
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}
    env_a = {**base, "CLAUDE_CONFIG_DIR": str(homes["claude-a"])}
    env_b = {**base, "CLAUDE_CONFIG_DIR": str(homes["claude-b"])}
    return NodeConfig(node="test", profiles=profiles), env_a, env_b


def start_at(
    pid: int, argv: Sequence[str], env: Mapping[str, str], started: list[subprocess.Popen[bytes]]
) -> subprocess.Popen[bytes]:
    """Start `argv` with exactly this pid (the kernel hands out ns_last_pid + 1 next); other
    processes forking meanwhile can take it first, so it is tried again."""
    for _ in range(500):
        try:
            NS_LAST_PID.write_text(str(pid - 1))
        except OSError as exc:
            pytest.skip(f"cannot choose the next pid here ({exc}): needs CAP_SYS_ADMIN")
        proc = subprocess.Popen(argv, env=dict(env))
        started.append(proc)
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    pytest.skip(f"pid {pid} kept going to other processes")


def started_after(moment: float) -> bool:
    """Whether a process started now gets a start time (psutil's) later than `moment`."""
    probe = subprocess.Popen(["true"])
    try:
        return psutil.Process(probe.pid).create_time() > moment
    finally:
        probe.wait()


def listed(inventory: ProcessInventory, pid: int) -> tuple[str | None, float] | None:
    """(profile, create_time) of the agent the inventory lists at `pid`, or None."""
    found = next((p for p in inventory.scan() if p.pid == pid), None)
    return (found.profile, found.create_time) if found is not None else None


def test_a_reused_pid_is_not_taken_for_the_agent_that_had_it(
    tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> None:
    config, env_a, env_b = claude_profiles(tmp_path)
    inventory = ProcessInventory(config)
    agent = subprocess.Popen(run_as(tmp_path, "claude", "60"), env=env_a)
    started.append(agent)
    pid = agent.pid
    first = listed(inventory, pid)
    assert first is not None and first[0] == "claude-a"

    # The agent exits; its pid goes to a program that is no agent.
    agent.kill()
    agent.wait()
    other = start_at(pid, run_as(tmp_path, "sleep", "60"), env_a, started)
    assert listed(inventory, pid) is None

    # ... and then to another agent, of the other profile: a new identity, read afresh.
    other.kill()
    other.wait()
    # A process's identity is (pid, start time), and start times count clock ticks (10 ms;
    # coarser still on some sandboxed kernels, seen here): a pid comes round again after its
    # whole range is used, never within the tick, which only forcing it makes possible. So the
    # new agent starts in a later tick than the old one.
    # psutil's start time is the boot time (whole seconds in /proc/stat) plus the ticks, so it
    # can run behind the wall clock: a fresh probe each time asks the kernel's own clock.
    wait_for(lambda: started_after(first[1]), 10, "a later start")
    start_at(pid, run_as(tmp_path, "claude", "60"), env_b, started)
    again = listed(inventory, pid)
    assert again is not None
    assert again[0] == "claude-b" and again[1] != first[1]
    assert again[1] == psutil.Process(pid).create_time()
