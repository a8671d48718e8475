"""Durable outbox on real SQLite files: round trip, positions committed with events, seq never
reused, revision coalescing, the size bound, and crash safety under SIGKILL of real writer
processes (alone, and racing a second process that sends and acks)."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest

from node_agent.outbox import (
    Batch,
    Outbox,
    OutboxCorrupt,
    OutboxDiskFull,
    OutboxError,
    OutboxFull,
)
from shared.codec import pack, unpack
from shared.events import (
    Agent,
    Event,
    LimitEvent,
    LimitKind,
    ProfileEvent,
    ProfileState,
    Tokens,
    UsageEvent,
)
from tests.small_disk import fill, small_tmpfs

REPO = Path(__file__).resolve().parent.parent


def usage(event_id: str, revision: int = 0, ts: float = 1_700_000_000.0) -> UsageEvent:
    return UsageEvent(
        event_id, ts, Agent.CLAUDE_CODE, "claude-opus-4-1", Tokens(3, 7 + revision), "s1", revision
    )


def ids(batch: Batch | None) -> list[tuple[str, int]]:
    assert batch is not None
    out = []
    for blob in batch.events:
        event = unpack(blob)
        out.append((event.event_id, event.revision if isinstance(event, UsageEvent) else 0))
    return out


def test_round_trip_commit_batch_ack(tmp_path: Path) -> None:
    events: list[Event] = [
        usage("u1", ts=30.0),
        LimitEvent("l1", 10.0, Agent.CODEX, LimitKind.RATE_LIMIT_HIT, resets_at=99.0),
        ProfileEvent("p1", 20.0, "m1", "work", Agent.CLAUDE_CODE, ProfileState.ACTIVE),
    ]
    with Outbox(tmp_path / "ob.db") as ob:
        assert ob.next_batch() is None
        assert ob.oldest_ts() is None
        result = ob.commit(events, {})
        assert (result.stored, result.replaced, result.dropped) == (3, 0, 0)
        assert ob.pending() == 3
        assert ob.oldest_ts() == 10.0
        batch = ob.next_batch()
        assert batch is not None
        assert (batch.stream, batch.seq0, batch.seq1) == (ob.stream_id, 1, 3)
        assert [unpack(b) for b in batch.events] == events
        # not acknowledged: a re-send gets the very same batch, even with new rows behind it
        ob.commit([usage("u2")], {})
        assert ob.next_batch() == batch
        assert ob.stats()["in_flight"] == 3
        assert ob.ack(batch.seq1) == 3
        assert ob.ack(batch.seq1) == 0  # a repeated ack is harmless
        assert ids(ob.next_batch()) == [("u2", 0)]
        stats = ob.stats()
        assert (stats["pending"], stats["acked_seq"], stats["last_seq"]) == (1, 3, 4)
        assert stats["pending_bytes"] == len(pack(usage("u2")))


def test_ack_beyond_what_was_sent_is_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.db") as ob:
        ob.commit([usage("a"), usage("b")], {})
        with pytest.raises(ValueError, match="only up to 0 was sent"):
            ob.ack(2)
        batch = ob.next_batch(max_events=1)
        assert batch is not None and batch.seq1 == 1
        with pytest.raises(ValueError, match="only up to 1 was sent"):
            ob.ack(2)
        assert ob.pending() == 2


def test_positions_are_saved_with_events_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    with Outbox(path) as ob:
        ob.commit([usage("a")], {"f1": b"\x00pos1", "f2": b"pos2"})
        ob.commit([], {"f1": b"pos1b", "f2": None, "f3": b"pos3"})  # None deletes
        ob.set_meta("node", b"state")
        ob.set_meta("gone", b"x")
        ob.set_meta("gone", None)
        stream = ob.stream_id
    with Outbox(path) as ob:
        assert ob.positions() == {"f1": b"pos1b", "f3": b"pos3"}
        assert ob.get_meta("node") == b"state"
        assert ob.get_meta("gone") is None
        assert ob.pending() == 1
        assert ob.stream_id == stream
    with Outbox(tmp_path / "other.db") as other:
        assert other.stream_id != stream


def test_an_event_the_wire_cannot_carry_is_left_out_and_the_rest_committed(
    tmp_path: Path,
) -> None:
    """A revision past SQLite's 64 bits (an OpenCode row's damaged time) or a string msgpack
    cannot encode stopped the reader at every restart; now only that event is left out."""
    unpackable = msgspec.structs.replace(
        usage("bad-text"), session_id="s\ud800"
    )  # a lone surrogate
    with Outbox(tmp_path / "ob.db") as ob:
        result = ob.commit([usage("big", revision=2**63), unpackable, usage("ok")], {"f1": b"pos"})
        assert result.stored == 1 and ob.positions() == {"f1": b"pos"}
        assert ids(ob.next_batch()) == [("ok", 0)]


def test_seq_never_reused_after_prune_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    with Outbox(path) as ob:
        ob.commit([usage(f"e{i}") for i in range(5)], {})
        batch = ob.next_batch()
        assert batch is not None and batch.seq1 == 5
        assert ob.ack(5) == 5
        assert ob.pending() == 0
    with Outbox(path) as ob:
        ob.commit([usage("late")], {})
        batch = ob.next_batch()
        assert batch is not None and (batch.seq0, batch.seq1) == (6, 6)


def test_coalescing_keeps_the_highest_revision_with_a_new_seq(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.db") as ob:
        ob.commit([usage("a", 1), usage("b", 0)], {})
        result = ob.commit([usage("a", 3)], {})
        assert (result.stored, result.replaced, result.dropped) == (1, 1, 0)
        assert ob.pending() == 2
        # lower and equal revisions are dropped; a higher one within one commit supersedes
        result = ob.commit([usage("a", 2), usage("a", 3), usage("b", 1), usage("b", 4)], {})
        assert (result.stored, result.replaced, result.dropped) == (2, 2, 2)
        batch = ob.next_batch()
        assert ids(batch) == [("a", 3), ("b", 4)]  # rows 1, 2 and 4 were superseded
        assert batch is not None and (batch.seq0, batch.seq1) == (1, 5)
        assert ob.stats()["pending_bytes"] == sum(len(b) for b in batch.events)
        # ranges stay contiguous across holes, so the hub's gap check sees none
        ob.ack(batch.seq1)
        ob.commit([usage("a", 9), usage("c")], {})
        ob.commit([usage("a", 10)], {})  # row 6 is superseded by row 8 before it is sent
        batch = ob.next_batch()
        assert ids(batch) == [("c", 0), ("a", 10)]
        assert batch is not None and (batch.seq0, batch.seq1) == (6, 8)


def test_limit_and_profile_events_first_one_wins(tmp_path: Path) -> None:
    first = LimitEvent("l", 1.0, Agent.CODEX, LimitKind.QUOTA_SNAPSHOT, used_percent=10.0)
    second = LimitEvent("l", 2.0, Agent.CODEX, LimitKind.QUOTA_SNAPSHOT, used_percent=20.0)
    with Outbox(tmp_path / "ob.db") as ob:
        ob.commit([first], {})
        assert ob.commit([second], {}).dropped == 1
        batch = ob.next_batch()
        assert batch is not None and [unpack(b) for b in batch.events] == [first]


def test_new_revision_of_an_in_flight_row_leaves_the_batch_alone(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.db") as ob:
        ob.commit([usage("a", 1), usage("b")], {})
        sent = ob.next_batch()
        assert ids(sent) == [("a", 1), ("b", 0)]
        result = ob.commit([usage("a", 2)], {})
        assert (result.stored, result.replaced) == (1, 1)
        assert ob.next_batch() == sent  # the re-send is byte-identical
        assert ob.pending() == 3  # both revisions wait; the hub keeps the higher
        # a further revision replaces the waiting (not in-flight) one, not the sent one
        ob.commit([usage("a", 5)], {})
        assert ob.pending() == 3
        assert sent is not None
        ob.ack(sent.seq1)
        assert ids(ob.next_batch()) == [("a", 5)]


def test_outbox_full_commits_nothing(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.db", max_events=5) as ob:
        ob.commit([usage(f"e{i}", 1) for i in range(4)], {"f": b"4"})
        assert not ob.stats()["full"]
        with pytest.raises(OutboxFull, match="4 events waiting for the hub, limit 5") as info:
            ob.commit([usage("x"), usage("y")], {"f": b"6", "g": b"new"})
        assert (info.value.pending, info.value.limit) == (4, 5)
        assert ob.pending() == 4
        assert ob.positions() == {"f": b"4"}
        assert ids(ob.next_batch(max_events=10)) == [(f"e{i}", 1) for i in range(4)]
        assert ob.stats()["pending_bytes"] == sum(len(pack(usage(f"e{i}", 1))) for i in range(4))
        ob.commit([usage("x")], {"f": b"5"})  # exactly at the limit is fine
        assert ob.is_full
        # a commit that does not grow the outbox still goes through when full
        ob.commit([usage("x", 2)], {"f": b"6"})
        with pytest.raises(OutboxFull):
            ob.commit([usage("z")], {"f": b"7"})
        assert ob.positions() == {"f": b"6"}
        ob.ack(4)
        assert ob.pending() == 1 and not ob.stats()["full"]


def test_empty_outbox_accepts_an_oversized_commit(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.db", max_events=3) as ob:
        ob.commit([usage(f"e{i}") for i in range(5)], {"f": b"5"})
        assert ob.pending() == 5
        with pytest.raises(OutboxFull):
            ob.commit([usage("more")], {})


def test_batch_bounded_by_count_and_bytes(tmp_path: Path) -> None:
    events = [usage(f"e{i:02d}") for i in range(10)]
    size = len(pack(events[0]))
    assert all(len(pack(e)) == size for e in events)
    with Outbox(tmp_path / "ob.db") as ob:
        ob.commit(events, {})
        batch = ob.next_batch(max_events=100, max_bytes=3 * size + size // 2)
        assert batch is not None and (batch.seq0, batch.seq1, len(batch.events)) == (1, 3, 3)
        ob.ack(batch.seq1)
        batch = ob.next_batch(max_events=2)
        assert batch is not None and (batch.seq0, batch.seq1) == (4, 5)
        ob.ack(batch.seq1)
        # an event bigger than max_bytes still goes, alone
        batch = ob.next_batch(max_bytes=1)
        assert batch is not None and (batch.seq0, batch.seq1) == (6, 6)


def test_commit_of_1000_events_is_one_transaction(tmp_path: Path) -> None:
    with Outbox(tmp_path / "ob.db") as ob:
        statements: list[str] = []
        ob._db.set_trace_callback(statements.append)
        ob.commit([usage(f"e{i}") for i in range(1000)], {f"f{i}": b"p" for i in range(50)})
        ob._db.set_trace_callback(None)
        assert statements.count("BEGIN IMMEDIATE") == 1
        assert statements.count("COMMIT") == 1
        assert ob.pending() == 1000 and len(ob.positions()) == 50


def test_not_an_outbox_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxCorrupt, match="is damaged"):
        Outbox(junk)
    newer = tmp_path / "newer.db"
    Outbox(newer).close()
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(OutboxError, match="schema version 99"):
        Outbox(newer)


# -- real processes ------------------------------------------------------------------------

# Commits batches of `per` events e<n>..; the position "log" is the count committed so far.
# With kill_at > 0 it SIGKILLs itself just before its kill_at-th SQL statement, so a test can
# put the crash at every statement boundary of a commit, not only where a timer happens to land.
WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from node_agent.outbox import Outbox
    from shared.events import Agent, Tokens, UsageEvent

    path, per, kill_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    with Outbox(path) as ob:
        done = int(ob.positions().get("log", b"0"))
        if kill_at:
            seen = [0]
            def trace(statement):
                seen[0] += 1
                if seen[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
            ob._db.set_trace_callback(trace)
        print("ready", flush=True)
        while True:
            events = [
                UsageEvent(f"e{n}", float(n), Agent.CODEX, "gpt-5", Tokens(1, 1), "s")
                for n in range(done, done + per)
            ]
            ob.commit(events, {"log": str(done + per).encode()})
            done += per
    """
)


def spawn_writer(tmp_path: Path, db: Path, per: int, kill_at: int = 0) -> subprocess.Popen[str]:
    script = tmp_path / "writer.py"
    if not script.exists():
        script.write_text(WRITER)
    return subprocess.Popen(
        [sys.executable, str(script), str(db), str(per), str(kill_at)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def start_writer(tmp_path: Path, db: Path, per: int) -> subprocess.Popen[str]:
    """A writer that is committing in a loop by the time this returns."""
    child = spawn_writer(tmp_path, db, per)
    assert child.stdout is not None
    line = child.stdout.readline()
    if line != "ready\n":
        child.kill()
        _, err = child.communicate()
        raise AssertionError(f"writer did not start: {line!r} {err}")
    return child


def reap_killed(child: subprocess.Popen[str]) -> None:
    _, err = child.communicate(timeout=30)
    # it was still writing when killed: no exception (e.g. "database is locked") ended it
    assert child.returncode == -signal.SIGKILL, err
    assert err == ""


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    reap_killed(child)


def stored(db: Path) -> tuple[int, list[str]]:
    """(saved position, ids of the events waiting), then prunes them as the hub's ack would."""
    with Outbox(db) as ob:
        position = int(ob.positions().get("log", b"0"))
        names: list[str] = []
        while (batch := ob.next_batch(max_events=100_000, max_bytes=1 << 30)) is not None:
            names += [unpack(b).event_id for b in batch.events]
            ob.ack(batch.seq1)
    return position, names


def test_sigkill_at_random_moments_never_separates_events_from_positions(
    tmp_path: Path,
) -> None:
    db = tmp_path / "ob.db"
    rng = random.Random(20240607)
    total = 0
    for _ in range(10):
        child = start_writer(tmp_path, db, per=250)  # resumes from the saved position
        time.sleep(rng.uniform(0.0, 0.06))
        kill(child)
        position, names = stored(db)
        # every event up to the position is there exactly once, and nothing beyond it
        assert names == [f"e{n}" for n in range(total, position)]
        total = position
    assert total > 0


def test_sigkill_at_every_statement_of_a_commit(tmp_path: Path) -> None:
    # per=2: one commit is ~9 statements; 1..24 covers every boundary of more than two commits
    kill_points = range(1, 25)
    children = {k: spawn_writer(tmp_path, tmp_path / f"ob{k}.db", 2, k) for k in kill_points}
    committed = set()
    for k, child in children.items():
        reap_killed(child)
        position, names = stored(tmp_path / f"ob{k}.db")
        assert names == [f"e{n}" for n in range(position)], f"killed at statement {k}"
        committed.add(position)
    assert {0, 2, 4} <= committed  # crashes landed before, between and after commits


def test_sigkill_while_another_process_sends_and_acks(tmp_path: Path) -> None:
    db = tmp_path / "ob.db"
    rng = random.Random(7)
    received: list[str] = []
    acked = 0
    with Outbox(db) as hub_side:
        for _ in range(4):
            child = start_writer(tmp_path, db, per=100)
            deadline = time.monotonic() + rng.uniform(0.1, 0.3)
            sends = 0
            while time.monotonic() < deadline or sends < 3:  # a few sends even on a slow box
                assert time.monotonic() < deadline + 30, "no batch from the writer"
                batch = hub_side.next_batch(max_events=300)
                if batch is None:
                    continue
                sends += 1
                if sends % 3 == 0:  # a failed send: the retry must be the same batch
                    assert hub_side.next_batch(max_events=300) == batch
                assert batch.seq0 == acked + 1  # contiguous ranges: the hub sees no gap
                received += [unpack(b).event_id for b in batch.events]
                assert hub_side.ack(batch.seq1) == len(batch.events)
                acked = batch.seq1
            kill(child)
        while (batch := hub_side.next_batch()) is not None:
            received += [unpack(b).event_id for b in batch.events]
            hub_side.ack(batch.seq1)
        position = int(hub_side.positions()["log"])
        assert hub_side.pending() == 0
    # each event once, in order, and exactly those up to the saved position
    assert position > 0
    assert received == [f"e{n}" for n in range(position)]


def test_processes_creating_one_outbox_at_once_agree_on_the_stream(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    code = "import sys; from pathlib import Path; from node_agent.outbox import Outbox\n"
    code += "ob = Outbox(Path(sys.argv[1])); print(ob.stream_id); ob.close()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [c.communicate(timeout=30) for c in children]
    assert all(c.returncode == 0 for c in children), outputs
    streams = {out.strip() for out, _ in outputs}
    assert len(streams) == 1
    with Outbox(db) as ob:
        assert streams == {ob.stream_id}


def test_a_damaged_page_fails_the_check(tmp_path: Path) -> None:
    path = tmp_path / "ob.db"
    with Outbox(path) as ob:
        ob.commit([usage(f"e{i}") for i in range(3000)], {"f": b"p"})
    with Outbox(path) as ob:
        ob.verify()  # a sound file passes
    data = bytearray(path.read_bytes())
    middle = len(data) // 2  # pages of the events table and its indexes
    data[middle : middle + 3 * 4096] = b"\xff" * (3 * 4096)
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxCorrupt), Outbox(path) as ob:
        ob.verify()


def test_a_full_disk_stores_nothing_and_says_so(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "2m") as disk, Outbox(disk / "ob.db") as ob:
        ob.commit([usage("first")], {"f": b"1"})
        filler = fill(disk)
        with pytest.raises(OutboxDiskFull, match="no room on the disk"):
            ob.commit([usage(f"e{i}") for i in range(2000)], {"f": b"2"})
        assert ob.pending() == 1 and ob.positions() == {"f": b"1"}
        filler.unlink()
        assert ob.commit([usage(f"e{i}") for i in range(2000)], {"f": b"2"}).stored == 2000
