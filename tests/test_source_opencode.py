"""OpenCode source on real SQLite files (the schema of OpenCode's session.sql.ts) and on the
legacy JSON storage layout, following research/log-formats.md §4."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_agent.sources.base import FileKind, SourceFile
from node_agent.sources.opencode import OpenCodeSource, opencode_tokens
from shared.events import MAX_REVISION, Agent, Role, Tokens
from tests.recording import Recorder

SCHEMA = """
CREATE TABLE project (id TEXT PRIMARY KEY, worktree TEXT NOT NULL);
CREATE TABLE session (
  id TEXT PRIMARY KEY, project_id TEXT NOT NULL REFERENCES project(id), workspace_id TEXT,
  parent_id TEXT, slug TEXT NOT NULL, directory TEXT NOT NULL, path TEXT, title TEXT NOT NULL,
  version TEXT NOT NULL, cost REAL NOT NULL DEFAULT 0,
  tokens_input INTEGER NOT NULL DEFAULT 0, tokens_output INTEGER NOT NULL DEFAULT 0,
  tokens_reasoning INTEGER NOT NULL DEFAULT 0, tokens_cache_read INTEGER NOT NULL DEFAULT 0,
  tokens_cache_write INTEGER NOT NULL DEFAULT 0, agent TEXT, model TEXT,
  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, time_archived INTEGER);
CREATE TABLE message (
  id TEXT PRIMARY KEY, session_id TEXT NOT NULL REFERENCES session(id) ON DELETE CASCADE,
  time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE part (
  id TEXT PRIMARY KEY, message_id TEXT NOT NULL REFERENCES message(id) ON DELETE CASCADE,
  session_id TEXT NOT NULL, time_created INTEGER NOT NULL, time_updated INTEGER NOT NULL,
  data TEXT NOT NULL);
CREATE INDEX message_session_time_created_id_idx ON message(session_id, time_created, id);
CREATE INDEX part_message_id_id_idx ON part(message_id, id);
CREATE INDEX part_session_idx ON part(session_id);
"""

T0 = 1789113600000  # epoch ms, as OpenCode stores times
CWD = "/home/dev/acme-api"

# One tool turn of two calls. The message's tokens are those of the LAST step only (OpenCode
# overwrites them per step) while its cost accumulates; the step-finish parts hold each call.
STEP_1 = {
    "type": "step-finish",
    "reason": "tool-calls",
    "cost": 0.0451,
    "tokens": {"input": 12, "output": 190, "reasoning": 0, "cache": {"read": 14100, "write": 28}},
}
STEP_2 = {
    "type": "step-finish",
    "reason": "stop",
    "cost": 0.0391,
    "tokens": {"input": 8, "output": 220, "reasoning": 5, "cache": {"read": 14700, "write": 960}},
}
MESSAGE = {
    "role": "assistant",
    "time": {"created": T0, "completed": T0 + 48200},
    "parentID": "msg_user",
    "modelID": "claude-sonnet-4-5",
    "providerID": "anthropic",
    "mode": "build",
    "agent": "build",
    "path": {"cwd": CWD, "root": CWD},
    "cost": 0.0842,
    "tokens": STEP_2["tokens"],
    "finish": "stop",
}
STEP_TOKENS = Tokens(input=20, output=410, reasoning=5, cache_read=28800, cache_write_5m=988)


class DB:
    """OpenCode's store as OpenCode writes it: WAL mode, JSON `data` without ids."""

    def __init__(self, path: Path, journal: str = "wal") -> None:
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA journal_mode={journal}")
        self.conn.executescript(SCHEMA)
        self.conn.execute("INSERT INTO project VALUES ('prj_1', ?)", (CWD,))

    def session(
        self, sid: str, parent: str | None = None, directory: str = CWD, version: str = "1.4.2"
    ) -> None:
        self.conn.execute(
            "INSERT INTO session (id, project_id, parent_id, slug, directory, title, version,"
            " time_created, time_updated) VALUES (?, 'prj_1', ?, ?, ?, 't', ?, ?, ?)",
            (sid, parent, sid, directory, version, T0, T0),
        )

    def message(self, mid: str, sid: str, data: dict[str, Any], updated: int = T0 + 50000) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO message VALUES (?, ?, ?, ?, ?)",
            (mid, sid, T0, updated, orjson.dumps(data)),
        )

    def part(
        self, pid: str, mid: str, sid: str, data: dict[str, Any], created: int = T0 + 20000
    ) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO part VALUES (?, ?, ?, ?, ?, ?)",
            (pid, mid, sid, created, created, orjson.dumps(data)),
        )

    def turn(self, sid: str = "ses_main", mid: str = "msg_a") -> None:
        self.message(mid, sid, MESSAGE)
        self.part(f"{mid}_s1", mid, sid, {"type": "step-start"}, T0 + 100)
        self.part(f"{mid}_p1", mid, sid, STEP_1, T0 + 20000)
        self.part(f"{mid}_t1", mid, sid, {"type": "tool", "tool": "edit", "callID": "c1"})
        self.part(f"{mid}_s2", mid, sid, {"type": "step-start"}, T0 + 20100)
        self.part(f"{mid}_p2", mid, sid, STEP_2, T0 + 48000)


def read(path: Path, source: OpenCodeSource | None = None) -> Recorder:
    sink = Recorder()
    (source or OpenCodeSource()).read_whole(path, sink)
    return sink


def scan(home: Path, reverse: bool = False) -> Recorder:
    source = OpenCodeSource()
    sink = Recorder()
    files = sorted(source.discover(home), key=lambda f: (f.order, f.path), reverse=reverse)
    for file in files:
        source.read_whole(file.path, sink)
    return sink


def total(sink: Recorder) -> Tokens:
    return sum((e.tokens for e in sink.collector.events.counted_usage()), Tokens())


# -- tokens ---------------------------------------------------------------------------------


def test_tokens_are_taken_as_disjoint() -> None:
    assert opencode_tokens(STEP_2["tokens"]) == Tokens(
        input=8, output=220, reasoning=5, cache_read=14700, cache_write_5m=960
    )
    assert opencode_tokens(None) is None
    with pytest.raises(ValueError, match="tokens.read"):
        opencode_tokens({"input": 1, "output": 1, "reasoning": 0, "cache": {"read": -3}})


# -- database -------------------------------------------------------------------------------


def test_multi_step_message_counts_every_step_finish_part(tmp_path: Path) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    db.turn()
    sink = read(db.path)
    assert sink.problems == []
    assert sorted(sink.events) == ["opencode:msg_a_p1", "opencode:msg_a_p2"]
    # The message alone would say 8/220/14700/960: the parts sum to both calls.
    assert total(sink) == STEP_TOKENS
    first = sink.events["opencode:msg_a_p1"]
    assert first.agent is Agent.OPENCODE
    assert first.model == "claude-sonnet-4-5"
    assert first.provider == "anthropic"
    assert first.session_id == "ses_main"
    assert first.role is Role.MAIN and first.parent_session_id is None
    assert first.project == CWD
    assert first.agent_version == "1.4.2"
    assert first.ts == (T0 + 20000) / 1000
    assert first.reported_cost_usd == "0.0451"  # the part's own cost, never the message sum
    assert first.cache_write_unsplit
    assert first.origin == f"{db.path}#msg_a_p1"


def test_child_session_is_a_subagent(tmp_path: Path) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    db.session("ses_child", parent="ses_main")
    db.turn("ses_main", "msg_a")
    db.turn("ses_child", "msg_b")
    events = read(db.path).events
    child = events["opencode:msg_b_p2"]
    assert child.role is Role.SUBAGENT
    assert child.session_id == "ses_child"
    assert child.parent_session_id == "ses_main"
    assert child.subagent_id == "ses_child"
    assert events["opencode:msg_a_p2"].role is Role.MAIN


def test_reads_while_a_wal_writer_keeps_inserting(tmp_path: Path) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    count = 150
    errors: list[BaseException] = []

    def write() -> None:
        conn = sqlite3.connect(db.path, isolation_level=None, timeout=1.0)
        try:
            for i in range(count):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO message VALUES (?, 'ses_main', ?, ?, ?)",
                    (f"m{i}", T0 + i, T0 + i, orjson.dumps(MESSAGE)),
                )
                conn.execute(
                    "INSERT INTO part VALUES (?, ?, 'ses_main', ?, ?, ?)",
                    (f"p{i}", f"m{i}", T0 + i, T0 + i, orjson.dumps(STEP_1)),
                )
                conn.execute("COMMIT")
                time.sleep(0.002)
        except BaseException as exc:  # the writer must never be refused by our reads
            errors.append(exc)
        finally:
            conn.close()

    writer = threading.Thread(target=write)
    writer.start()
    seen: list[int] = []
    source = OpenCodeSource()
    collected = Recorder()
    while writer.is_alive():
        sink = read(db.path)  # a fresh full read each time
        assert sink.problems == []
        seen.append(len(sink.events))
        source.read_whole(db.path, collected)  # and an incremental reader alongside
    writer.join()
    assert errors == []
    assert seen == sorted(seen)  # every read is a consistent, growing snapshot
    assert len(set(seen)) > 1  # reads really happened while rows were being added
    source.read_whole(db.path, collected)
    assert len(collected.events) == count
    assert len(read(db.path).events) == count


def test_an_open_write_transaction_neither_blocks_nor_leaks(tmp_path: Path) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    db.turn()
    db.conn.execute("BEGIN IMMEDIATE")  # OpenCode mid-write
    db.part("msg_a_p3", "msg_a", "ses_main", STEP_1, T0 + 60000)
    started = time.monotonic()
    sink = read(db.path)
    # A read that waited on the writer's lock takes the busy timeout at least; a loaded CI box
    # may take a good part of a second for the read itself.
    assert time.monotonic() - started < OpenCodeSource.busy_timeout_s * 0.9
    assert sink.problems == []
    assert "opencode:msg_a_p3" not in sink.events  # uncommitted
    db.conn.execute("COMMIT")
    assert "opencode:msg_a_p3" in read(db.path).events


def test_the_database_is_opened_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    db.turn()
    refused: list[str] = []
    real_connect = sqlite3.connect

    def probing_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = real_connect(*args, **kwargs)
        try:
            conn.execute("PRAGMA user_version = 7")  # any write must be refused
        except sqlite3.OperationalError as exc:
            refused.append(str(exc))
        return conn

    monkeypatch.setattr(sqlite3, "connect", probing_connect)
    sink = read(db.path)
    monkeypatch.undo()
    assert len(sink.events) == 2
    assert refused and "readonly" in refused[0]
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == 0


def test_locked_rollback_journal_db_is_read_as_a_snapshot(tmp_path: Path) -> None:
    class Quick(OpenCodeSource):
        busy_timeout_s = 0.1

    db = DB(tmp_path / "opencode.db", journal="delete")
    db.session("ses_main")
    db.turn()
    db.conn.execute("BEGIN EXCLUSIVE")  # readers are shut out of a rollback-journal DB
    db.part("msg_a_p3", "msg_a", "ses_main", STEP_1, T0 + 60000)
    sink = read(db.path, Quick())
    db.conn.execute("ROLLBACK")
    assert sink.problems == []
    assert sorted(sink.events) == ["opencode:msg_a_p1", "opencode:msg_a_p2"]


def test_missing_and_corrupt_databases_are_one_clear_problem(tmp_path: Path) -> None:
    missing = read(tmp_path / "opencode.db")
    assert [(p.line, p.reason) for p in missing.problems] == [(0, "database does not exist")]
    corrupt = tmp_path / "opencode-beta.db"
    corrupt.write_bytes(b"this is not a database\n" * 200)
    sink = read(corrupt)
    assert len(sink.problems) == 1
    assert "cannot read OpenCode database" in sink.problems[0].reason
    other = tmp_path / "opencode-dev.db"
    sqlite3.connect(other).execute("CREATE TABLE unrelated (x)").connection.close()
    sink = read(other)
    assert len(sink.problems) == 1 and "no such table" in sink.problems[0].reason


def test_bad_rows_are_reported_and_the_rest_read(tmp_path: Path) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    db.turn()
    torn = '{"type":"step-finish"'
    db.conn.execute(
        "INSERT INTO part VALUES ('broken', 'msg_a', 'ses_main', ?, ?, ?)", (T0, T0, torn)
    )
    bad_tokens = {**STEP_1, "tokens": {"input": "x", "output": 1, "reasoning": 0}}
    db.part("badtok", "msg_a", "ses_main", bad_tokens)
    sink = read(db.path)
    assert sorted(sink.events) == ["opencode:msg_a_p1", "opencode:msg_a_p2"]
    reasons = sorted(p.reason for p in sink.problems)
    assert len(reasons) == 2
    assert reasons[0].startswith("opencode:badtok: tokens.input")
    assert reasons[1].startswith("part broken: invalid JSON")


def test_a_damaged_update_time_keeps_the_revision_in_range(tmp_path: Path) -> None:
    """time_updated near 2^63 made a revision SQLite cannot store: the node's outbox failed on
    it at every restart. The row counts, at the base revision."""
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    db.message("msg_a", "ses_main", MESSAGE, updated=2**63 - 1)
    sink = read(db.path)
    [event] = sink.collector.events.counted_usage()
    assert 0 < event.revision <= MAX_REVISION


def test_re_reads_send_only_changed_rows(tmp_path: Path) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    db.turn()
    source = OpenCodeSource()
    sink = Recorder()
    source.read_whole(db.path, sink)
    assert len(sink.sent) == 2
    source.read_whole(db.path, sink)
    assert len(sink.sent) == 2  # nothing changed, nothing sent
    db.part("msg_a_p3", "msg_a", "ses_main", STEP_1, T0 + 60000)
    source.read_whole(db.path, sink)
    assert [e.event_id for e in sink.sent[2:]] == ["opencode:msg_a_p3"]
    source.reset_file(db.path)  # replaced file: read from scratch, dedupe keys kept
    source.read_whole(db.path, sink)
    assert len(sink.sent) == 3


def test_message_without_step_parts_falls_back_once_finished(tmp_path: Path) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    streaming = {**MESSAGE, "time": {"created": T0}, "finish": None}
    del streaming["finish"]
    db.message("msg_old", "ses_main", streaming)
    assert read(db.path).events == {}  # its step-finish part may still come
    db.message("msg_old", "ses_main", MESSAGE, updated=T0 + 90000)
    [event] = read(db.path).events.values()
    assert event.event_id == "opencode:msg:msg_old"
    assert event.tokens == opencode_tokens(MESSAGE["tokens"])
    assert event.ts == (T0 + 48200) / 1000


def test_rows_migrated_from_json_take_their_message_time(tmp_path: Path) -> None:
    db = DB(tmp_path / "opencode.db")
    db.session("ses_main")
    db.message("msg_a", "ses_main", MESSAGE)
    migration_day = T0 + 40 * 86_400_000  # OpenCode stamps migrated parts with "now"
    db.part("msg_a_p1", "msg_a", "ses_main", STEP_1, migration_day)
    [event] = read(db.path).events.values()
    assert event.ts == (T0 + 48200) / 1000


# -- legacy JSON storage --------------------------------------------------------------------


def write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(data))
    return path


def legacy_store(home: Path) -> Path:
    storage = home / "storage"
    write(
        storage / "session" / "prj_1" / "ses_old.json",
        {
            "id": "ses_old",
            "projectID": "prj_1",
            "directory": "/home/dev/old-app",
            "version": "0.5.1",
            "title": "t",
            "time": {"created": T0, "updated": T0},
        },
    )
    write(
        storage / "session" / "prj_1" / "ses_kid.json",
        {"id": "ses_kid", "parentID": "ses_old", "directory": "/home/dev/old-app"},
    )
    base = {"sessionID": "ses_old"}
    write(
        storage / "message" / "ses_old" / "msg_u.json",
        {"id": "msg_u", **base, "role": "user", "time": {"created": T0}},
    )
    write(storage / "message" / "ses_old" / "msg_a.json", {"id": "msg_a", **base, **MESSAGE})
    for name, data in (
        ("prt_s1", {"type": "step-start"}),
        ("prt_p1", STEP_1),
        ("prt_s2", {"type": "step-start"}),
        ("prt_p2", STEP_2),
    ):
        write(storage / "part" / "msg_a" / f"{name}.json", {"id": name, **data})
    # Written before per-step parts existed: one call, its own tokens.
    single = {**MESSAGE, "tokens": STEP_1["tokens"], "cost": 0.0451}
    write(storage / "message" / "ses_old" / "msg_single.json", {"id": "msg_single", **single})
    write(
        storage / "message" / "ses_kid" / "msg_k.json",
        {"id": "msg_k", "sessionID": "ses_kid", **single},
    )
    return storage


def test_legacy_json_layout(tmp_path: Path) -> None:
    storage = legacy_store(tmp_path)
    source = OpenCodeSource()
    assert source.is_home(tmp_path)
    files = source.discover(tmp_path)
    assert all(f.kind is FileKind.WHOLE for f in files)
    assert len(files) == 4  # every message file; user messages yield nothing
    sink = scan(tmp_path)
    assert sink.problems == []
    assert sorted(sink.events) == [
        "opencode:msg:msg_k",
        "opencode:msg:msg_single",
        "opencode:prt_p1",
        "opencode:prt_p2",
    ]
    step = sink.events["opencode:prt_p1"]
    assert step.project == "/home/dev/old-app"
    assert step.agent_version == "0.5.1"
    assert step.model == "claude-sonnet-4-5"
    assert step.origin == f"{storage / 'part' / 'msg_a' / 'prt_p1.json'}#prt_p1"
    assert sink.events["opencode:msg:msg_single"].tokens == opencode_tokens(STEP_1["tokens"])
    assert sink.events["opencode:msg:msg_single"].reported_cost_usd == "0.0451"
    kid = sink.events["opencode:msg:msg_k"]
    assert kid.role is Role.SUBAGENT and kid.parent_session_id == "ses_old"
    one_call = Tokens(input=12, output=190, cache_read=14100, cache_write_5m=28)
    assert total(sink) == STEP_TOKENS + one_call + one_call


def test_legacy_multi_step_message_without_parts_is_flagged(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    f = write(storage / "message" / "ses_x" / "msg_m.json", {"id": "msg_m", **MESSAGE})
    for name in ("prt_s1", "prt_s2"):
        write(storage / "part" / "msg_m" / f"{name}.json", {"id": name, "type": "step-start"})
    sink = read(f)
    assert list(sink.events) == ["opencode:msg:msg_m"]
    [problem] = sink.problems
    assert problem.path == str(f) and "2 steps" in problem.reason


def test_database_rows_win_over_legacy_files_on_the_same_id(tmp_path: Path) -> None:
    legacy_store(tmp_path)
    db = DB(tmp_path / "opencode.db")
    db.session("ses_old", directory="/home/dev/old-app")
    db.message("msg_a", "ses_old", MESSAGE)
    db.part("prt_p1", "msg_a", "ses_old", STEP_1, T0 + 20000)
    db.part("prt_p2", "msg_a", "ses_old", STEP_2, T0 + 48000)
    for reverse in (False, True):
        sink = scan(tmp_path, reverse=reverse)
        assert len(sink.events) == 4
        assert sink.events["opencode:prt_p1"].origin == f"{db.path}#prt_p1"
        assert sink.events["opencode:prt_p2"].origin == f"{db.path}#prt_p2"


def test_broken_legacy_part_file_is_reported(tmp_path: Path) -> None:
    storage = legacy_store(tmp_path)
    bad = storage / "part" / "msg_a" / "prt_zz.json"
    bad.write_text("{")
    sink = read(storage / "message" / "ses_old" / "msg_a.json")
    assert [(p.path, p.line) for p in sink.problems] == [(str(bad), 0)]
    assert sorted(sink.events) == ["opencode:prt_p1", "opencode:prt_p2"]


# -- homes ----------------------------------------------------------------------------------


def test_homes_and_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENCODE_DATA_DIR", f"{tmp_path / 'a'}, {tmp_path / 'b'}")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert OpenCodeSource().default_homes() == [
        tmp_path / "a",
        tmp_path / "b",
        tmp_path / "xdg" / "opencode",
    ]
    monkeypatch.delenv("OPENCODE_DATA_DIR")
    monkeypatch.delenv("XDG_DATA_HOME")
    assert OpenCodeSource().default_homes() == [Path.home() / ".local" / "share" / "opencode"]

    main = DB(tmp_path / "opencode.db").path
    beta = DB(tmp_path / "opencode-beta.db").path
    source = OpenCodeSource()
    assert source.is_home(tmp_path) and source.is_home(main)
    assert not source.is_home(tmp_path / "opencode.db-wal")
    assert source.discover(tmp_path) == [
        SourceFile(beta, FileKind.WHOLE, 1),
        SourceFile(main, FileKind.WHOLE, 1),
    ]
    assert not source.is_home(tmp_path / "elsewhere")
