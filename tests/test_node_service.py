"""`node-agent run` as a service: one per state dir, a damaged outbox replaced, and a failure
that ends in exit status 1 with systemd told why (real processes, real files)."""

from __future__ import annotations

import errno
import resource
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet_harness import child_env, free_port, wait_for
from tests.test_source_claude import assistant, main_file, write

KEY_HEX = "ab" * 32


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A node whose hub never answers (nothing listens): the outbox keeps what was read."""
    home = tmp_path / "claude"
    (home / "projects").mkdir(parents=True)
    key = tmp_path / "node.key"
    key.write_text(KEY_HEX + "\n")
    key.chmod(0o600)
    path = tmp_path / "node.toml"
    path.write_text(
        f'node = "n1"\nstate_dir = "{tmp_path / "state"}"\n'
        f'status_file = "{tmp_path / "profiles.json"}"\n'
        "poll_interval = 0.2\nrescan_interval = 0.5\n\n"
        f'[hub]\nevents = "tcp://127.0.0.1:{free_port()}"\n'
        f'commands = "tcp://127.0.0.1:{free_port()}"\nkey_file = "{key}"\n\n'
        f'[[profiles]]\nname = "a"\nagent = "claude-code"\nhome = "{home}"\n'
    )
    return path


def calls(config: Path, tag: str, count: int) -> None:
    home = config.parent / "claude"
    write(main_file(home), [assistant(f"msg_{tag}_{i}", f"req_{tag}_{i}") for i in range(count)])


def start(config: Path, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "node_agent.cli", "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env={**child_env(config.parent), **env},
    )


@pytest.fixture
def nodes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=15)


def waiting_events(state: Path) -> int:
    """Events in the outbox, read as another process would (the WAL included)."""
    try:
        db = sqlite3.connect(f"file:{state / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError:
        return -1
    try:
        count: int = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'usage'").fetchone()[0]
    except sqlite3.DatabaseError:
        return -1
    finally:
        db.close()
    return count


def test_a_second_node_on_one_state_dir_exits_1_naming_the_first(
    config: Path, nodes: list[subprocess.Popen[str]]
) -> None:
    first = start(config)
    nodes.append(first)
    lock = config.parent / "state" / "node.lock"
    wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), 30, "lock")
    second = start(config)
    nodes.append(second)
    out, _ = second.communicate(timeout=30)
    assert second.returncode == 1
    assert f"in use by pid {first.pid}" in out and "Traceback" not in out
    assert first.poll() is None  # the first one goes on


def test_a_damaged_outbox_is_moved_aside_and_the_logs_read_again(
    config: Path, nodes: list[subprocess.Popen[str]]
) -> None:
    state = config.parent / "state"
    calls(config, "a", 30)
    node = start(config)
    wait_for(lambda: waiting_events(state) == 30, 30, "the first reading")
    node.terminate()
    assert node.wait(timeout=15) == 0
    outbox = state / "outbox.db"
    data = bytearray(outbox.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page after the header's
    outbox.write_bytes(bytes(data))

    node = start(config)
    nodes.append(node)
    wait_for(lambda: waiting_events(state) == 30, 30, "the logs read again into a fresh outbox")
    calls(config, "b", 5)
    wait_for(lambda: waiting_events(state) == 35, 30, "new calls after the recovery")
    assert node.poll() is None
    aside = [p.name for p in state.iterdir() if ".corrupt-" in p.name]
    assert len(aside) == 1 and aside[0].startswith("outbox.db.corrupt-")
    node.terminate()
    out, _ = node.communicate(timeout=15)
    said = [line for line in out.splitlines() if "moved it aside" in line]
    assert len(said) == 1 and "Traceback" not in out


def _small_files() -> None:
    # A file-size limit on the child: a real write error (EFBIG) once its outbox outgrows it.
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))


def test_a_failed_thread_exits_1_and_tells_systemd(config: Path, tmp_path: Path) -> None:
    calls(config, "a", 10)
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(notify))
        receiver.settimeout(30)
        node = subprocess.Popen(
            [sys.executable, "-m", "node_agent.cli", "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**child_env(tmp_path), "NOTIFY_SOCKET": str(notify)},
            preexec_fn=_small_files,
        )
        try:
            assert b"READY=1" in receiver.recv(4096)
            calls(config, "b", 4000)  # far more than 400 kB of outbox
            out, _ = node.communicate(timeout=60)
        finally:
            if node.poll() is None:
                node.kill()
                node.wait()
        messages = []
        receiver.settimeout(0.5)
        while True:
            try:
                messages.append(receiver.recv(4096).decode())
            except TimeoutError:
                break
    assert node.returncode == 1, out
    status = next(m for m in messages if m.startswith("STATUS=failed"))
    assert "ingest thread failed" in status and f"ERRNO={errno.EIO}" in status
    assert "stopping with exit status 1" in out


def test_systemd_status_says_what_keeps_the_node_from_its_hub(config: Path, tmp_path: Path) -> None:
    """`systemctl status` shows the sender's last error (a wrong key's hint among them), not
    only the node's log."""
    calls(config, "a", 3)
    notify = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(notify))
        receiver.settimeout(30)
        node = start(config, NOTIFY_SOCKET=str(notify))
        try:
            messages = [receiver.recv(4096).decode()]
            while not any("cannot reach the hub" in m for m in messages):
                messages.append(receiver.recv(4096).decode())
        finally:
            node.terminate()
            node.communicate(timeout=30)
    assert "STATUS=watching" in messages[0]
    status = next(m for m in messages if "cannot reach the hub" in m)
    assert status.startswith("STATUS=watching; hub at tcp://127.0.0.1:")
