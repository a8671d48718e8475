"""The daemon's reader is woken by file events: a line written to a followed log is committed
at once, not at the next poll; new files are announced; without file events it polls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from node_agent import daemon as daemon_module
from node_agent.daemon import Daemon
from node_agent.file_events import FileEvents
from shared.config import NodeConfig, Profile
from shared.events import Agent
from tests.test_source_claude import assistant, main_file, write
from tests.test_source_opencode import DB


def wait_until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until `check` held; fails after `timeout`."""
    began = time.monotonic()
    while not check():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.005)
    return time.monotonic() - began


@contextmanager
def ingesting(
    tmp_path: Path, poll: float, profile: Profile | None = None
) -> Iterator[tuple[Daemon, Path]]:
    home = tmp_path / "claude"
    log = write(main_file(home), [assistant("msg_0", "req_0")])
    claude = Profile("p", Agent.CLAUDE_CODE, home)
    config = NodeConfig(
        node="n1",
        profiles=(claude,) if profile is None else (claude, profile),
        state_dir=tmp_path / "state",
        status_file=None,
        poll_interval=poll,
        rescan_interval=poll * 2,
    )
    (tmp_path / "state").mkdir()
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon._ingest, daemon=True)
    thread.start()
    try:
        # The first read found the files (the Claude log has one call).
        wait_until(lambda: daemon.pending >= (1 if profile is None else 2), 20)
        yield daemon, log
    finally:
        daemon.stop.set()
        thread.join(10)
        assert not thread.is_alive()


def test_a_written_line_is_read_at_once_not_at_the_next_poll(tmp_path: Path) -> None:
    with ingesting(tmp_path, poll=30.0) as (daemon, log):
        for n in range(1, 6):
            write(log, [assistant(f"msg_{n}", f"req_{n}")])
            assert wait_until(lambda n=n: daemon.pending == 1 + n, 5) < 2  # poll: 30 s
        # A new session file in a new project folder is found without waiting for a rescan.
        other = write(home_of(log) / "projects" / "-new-project" / "s2.jsonl", [])
        write(other, [assistant("msg_new", "req_new")])
        wait_until(lambda: daemon.pending == 7, 5)


def home_of(log: Path) -> Path:
    return log.parent.parent.parent


def test_a_sqlite_store_written_through_its_wal_is_read_at_once(tmp_path: Path) -> None:
    """OpenCode writes its database through `opencode.db-wal`: that file's events count."""
    home = tmp_path / "opencode"
    home.mkdir()
    db = DB(home / "opencode.db")
    db.session("ses_main")
    db.turn(mid="msg_a")
    with ingesting(tmp_path, 30.0, Profile("o", Agent.OPENCODE, home)) as (daemon, _log):
        before = daemon.pending
        db.turn(mid="msg_b")
        assert wait_until(lambda: daemon.pending > before, 5) < 2  # poll: 30 s


def test_without_file_events_the_reader_polls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_module.FileEvents, "open", classmethod(lambda cls: None))
    with ingesting(tmp_path, poll=0.2) as (daemon, log):
        write(log, [assistant("msg_1", "req_1")])
        wait_until(lambda: daemon.pending == 2, 10)


def test_file_events_name_the_written_file_and_announce_new_ones(tmp_path: Path) -> None:
    events = FileEvents.open()
    assert events is not None  # Linux: inotify is there
    try:
        log = write(tmp_path / "a.jsonl", [b"{}"])
        events.watch([str(tmp_path)])
        assert events.wait(0.05).written == set()  # nothing happened
        write(log, [b"{}"])
        changes = events.wait(5)
        assert changes.written == {str(log)} and not changes.rescan
        (tmp_path / "b.jsonl").write_bytes(b"")
        assert events.wait(5).rescan
        events.watch([str(tmp_path / "missing")])  # refused with a warning, never raised
    finally:
        events.close()
