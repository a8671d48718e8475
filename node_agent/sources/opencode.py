"""OpenCode: the SQLite store `opencode.db` and the legacy JSON storage it replaced.

research/log-formats.md §4. A model call is a `step-finish` part: `message.data.tokens` is
overwritten by every step (a multi-step tool turn shows only its last call) and
`message.data.cost` accumulates, so neither is summed. Part data holds the usage; the part's
session row gives project (`directory`), subagent role (`parent_id`) and CLI version, and its
message row gives `modelID` / `providerID`.

- Database (`opencode.db`, channel builds `opencode-<channel>.db`): opened read-only, inside one
  read transaction, never locking the live writer (OpenCode runs it in WAL mode). Rows are
  updated in place, so a per-database high-water mark of `time_updated` keeps later reads to
  the rows that changed.
- Legacy storage (before the database): `storage/message/<sessionID>/<messageID>.json`,
  `storage/part/<messageID>/<partID>.json`, `storage/session/<projectID>/<sessionID>.json`.
  Each message file is one whole-file source that reads its own parts. IDs come from the file
  paths, as OpenCode's own migration does.

Event ids: `opencode:<part id>`; an assistant message without any step-finish part (written by
releases before per-step parts) falls back to its own tokens as `opencode:msg:<message id>`.
Revisions: a database row gets `_DB_REVISION_BASE + time_updated` (ms), a legacy file its
mtime in ms, which is lower: the database wins on the ids it shares with migrated files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing, contextmanager
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import msgspec
import orjson

from node_agent.sources._values import count as _int
from node_agent.sources._values import text as _str
from node_agent.sources._values import token_count
from node_agent.sources.base import FileKind, ParseProblem, Sink, Source, SourceFile
from node_agent.sources.homes import OpenCodeHomes, databases
from node_agent.sources.homes import is_db_name as _is_db_name
from shared.events import Agent, Role, Tokens, UsageEvent

# sqlite3 is imported where a database is read: a scan of the other agents starts faster.
if TYPE_CHECKING:
    import sqlite3

# Above any legacy revision (an mtime in ms stays below 2**44 until the year 2527).
_DB_REVISION_BASE = 1 << 44
# Re-read rows this far behind the newest `time_updated` seen: clocks step, and rows of one
# transaction can carry slightly older stamps than rows already read.
_LOOKBACK_MS = 10 * 60 * 1000


class _Session(msgspec.Struct, frozen=True):
    parent_id: str | None = None
    directory: str | None = None
    version: str | None = None


class _Call(msgspec.Struct, frozen=True):
    """One billed call found in either store, before it becomes an event."""

    event_id: str
    session_id: str
    usage: dict[str, Any]  # step-finish part data, or message data for the fallback
    message: dict[str, Any]  # message data: model, provider, cwd, times
    ts_ms: float
    revision: int
    origin: str


def opencode_tokens(raw: Any) -> Tokens | None:
    """`{input, output, reasoning, cache: {read, write}}` into disjoint buckets.

    OpenCode has already taken cache reads and writes out of `input`, and reports reasoning
    apart from output. Cache writes carry no TTL, so they go to the 5-minute bucket (the event
    is then marked unsplit). None when absent; ValueError when malformed.
    """
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError("tokens is not an object")
    cache = raw.get("cache")
    if cache is None:
        cache = {}
    if not isinstance(cache, dict):
        raise ValueError("tokens.cache is not an object")
    values: dict[str, int] = {}
    for name, source in (
        ("input", raw),
        ("output", raw),
        ("reasoning", raw),
        ("read", cache),
        ("write", cache),
    ):
        value = source.get(name)
        if value is None:
            values[name] = 0
            continue
        number = token_count(value)
        if number is None:
            raise ValueError(f"tokens.{name} is not a count: {value!r}")
        values[name] = number
    return Tokens(
        input=values["input"],
        output=values["output"],
        reasoning=values["reasoning"],
        cache_read=values["read"],
        cache_write_5m=values["write"],
    )


def _cost(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return format(Decimal(repr(value)), "f")
    except InvalidOperation:
        return None  # nan / inf


def _message_time_ms(message: dict[str, Any]) -> float | None:
    """When the message's last call ended (completed), else when it started."""
    times = message.get("time")
    if not isinstance(times, dict):
        return None
    for key in ("completed", "created"):
        value = times.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _finished(message: dict[str, Any]) -> bool:
    """No more steps will be added: the fallback may trust the message's own tokens."""
    times = message.get("time")
    completed = isinstance(times, dict) and times.get("completed") is not None
    return completed or message.get("finish") is not None or message.get("error") is not None


class OpenCodeSource(OpenCodeHomes, Source):
    # How long to wait for a lock before reading the database as an immutable snapshot.
    busy_timeout_s: ClassVar[float] = 2.0

    def __init__(self) -> None:
        self._emitted: dict[str, int] = {}  # event id -> highest revision sent
        self._high_water: dict[Path, int] = {}  # database -> newest time_updated read
        self._legacy_sessions: dict[Path, dict[str, _Session]] = {}

    # -- where ---------------------------------------------------------------------------

    def discover(self, home: Path) -> list[SourceFile]:
        if home.is_file():
            return [SourceFile(home, FileKind.WHOLE, 1)] if _is_db_name(home.name) else []
        files = [
            SourceFile(message, FileKind.WHOLE, 0)
            for message in sorted((home / "storage" / "message").glob("*/*.json"))
        ]
        files.extend(SourceFile(db, FileKind.WHOLE, 1) for db in databases(home))
        return files

    def read_whole(self, path: Path, sink: Sink) -> None:
        if path.suffix == ".db":
            self._read_db(path, sink)
        elif path.suffix == ".json" and path.parent.parent.name == "message":
            self._read_legacy_message(path, sink)
        else:
            sink.problem(ParseProblem(str(path), 0, "not an OpenCode database or message file"))

    def reset_file(self, path: Path) -> None:
        self._high_water.pop(path, None)
        if path.suffix == ".json":
            self._legacy_sessions.pop(path.parent.parent.parent, None)

    # -- database ------------------------------------------------------------------------

    def _read_db(self, path: Path, sink: Sink) -> None:
        import sqlite3

        if not path.is_file():
            sink.problem(ParseProblem(str(path), 0, "database does not exist"))
            return
        since = self._high_water.get(path)
        try:
            try:
                with self._snapshot(path, immutable=False) as conn:
                    calls, newest = self._db_calls(conn, path, since, sink)
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc):
                    raise
                # Locked beyond the timeout (a rollback-journal writer, a checkpoint): read the
                # file as it stands, without taking any lock. Uncheckpointed WAL pages are not
                # seen now; the next read picks them up.
                with self._snapshot(path, immutable=True) as conn:
                    calls, newest = self._db_calls(conn, path, since, sink)
        except sqlite3.Error as exc:
            sink.problem(ParseProblem(str(path), 0, f"cannot read OpenCode database: {exc}"))
            return
        if newest is not None:
            self._high_water[path] = max(newest, since or 0)
        for call, session in calls:
            self._emit(call, session, sink)

    @contextmanager
    def _snapshot(self, path: Path, *, immutable: bool) -> Iterator[sqlite3.Connection]:
        import sqlite3

        mode = "immutable=1" if immutable else "mode=ro"
        uri = f"file:{quote(str(path))}?{mode}"
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_s, isolation_level=None)
        with closing(conn):
            # One read transaction: parts, messages and sessions from the same snapshot.
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")  # read-only: ending it is all there is to do

    def _db_calls(
        self, conn: sqlite3.Connection, path: Path, since: int | None, sink: Sink
    ) -> tuple[list[tuple[_Call, _Session]], int | None]:
        sessions = _db_sessions(conn)
        after = -1 if since is None else since - _LOOKBACK_MS
        calls: list[tuple[_Call, _Session]] = []
        newest: int | None = None
        # instr() is a cheap pre-filter; the JSON is checked properly below. Rows older than
        # the high-water mark are rejected on time_updated before their data is loaded.
        part_rows = conn.execute(
            "SELECT p.id, p.message_id, p.session_id, p.time_created, p.time_updated,"
            " p.data, m.data FROM part p LEFT JOIN message m ON m.id = p.message_id"
            " WHERE p.time_updated > ? AND instr(p.data, 'step-finish') > 0",
            (after,),
        )
        for part_id, message_id, session_id, created, updated, data, message_data in part_rows:
            newest = _newer(newest, updated)
            where = f"part {part_id}"
            part = _row_json(data, path, where, sink)
            if part is None or part.get("type") != "step-finish":
                continue
            message = _row_json(message_data, path, f"message {message_id}", sink) or {}
            ts_ms = _part_time_ms(created, message)
            if ts_ms is None:
                sink.problem(ParseProblem(str(path), 0, f"{where}: no timestamp"))
                continue
            call = _Call(
                event_id=f"opencode:{part_id}",
                session_id=str(session_id),
                usage=part,
                message=message,
                ts_ms=ts_ms,
                revision=_db_revision(updated),
                origin=f"{path}#{part_id}",
            )
            calls.append((call, sessions.get(str(session_id), _Session())))
        message_rows = conn.execute(
            "SELECT m.id, m.session_id, m.time_updated, m.data,"
            " (SELECT count(*) FROM part p WHERE p.message_id = m.id"
            "  AND instr(p.data, 'step-start') > 0)"
            " FROM message m WHERE m.time_updated > ? AND instr(m.data, 'assistant') > 0"
            " AND NOT EXISTS (SELECT 1 FROM part p WHERE p.message_id = m.id"
            "  AND instr(p.data, 'step-finish') > 0)",
            (after,),
        )
        for message_id, session_id, updated, data, step_starts in message_rows:
            newest = _newer(newest, updated)
            info = _row_json(data, path, f"message {message_id}", sink)
            if info is None:
                continue
            call_or_none = _fallback_call(
                info,
                str(message_id),
                str(session_id),
                _db_revision(updated),
                f"{path}#{message_id}",
                _int(step_starts) or 0,
                str(path),
                sink,
            )
            if call_or_none is not None:
                calls.append((call_or_none, sessions.get(str(session_id), _Session())))
        return calls, newest

    # -- legacy JSON storage -------------------------------------------------------------

    def _read_legacy_message(self, path: Path, sink: Sink) -> None:
        loaded = _load_json_file(path, sink)
        if loaded is None:
            return
        message, mtime_ms = loaded
        if message.get("role") != "assistant":
            return
        message_id = path.stem
        session_id = path.parent.name
        storage = path.parent.parent.parent
        session = self._legacy_session(storage, session_id)
        step_starts = 0
        found_step_finish = False
        calls: list[_Call] = []
        for part_path in sorted((storage / "part" / message_id).glob("*.json")):
            part_loaded = _load_json_file(part_path, sink)
            if part_loaded is None:
                continue
            part, part_mtime_ms = part_loaded
            kind = part.get("type")
            if kind == "step-start":
                step_starts += 1
            if kind != "step-finish":
                continue
            found_step_finish = True
            ts_ms = _message_time_ms(message)  # legacy parts carry no time of their own
            if ts_ms is None:
                sink.problem(ParseProblem(str(part_path), 0, "no timestamp on its message"))
                continue
            calls.append(
                _Call(
                    event_id=f"opencode:{part_path.stem}",
                    session_id=session_id,
                    usage=part,
                    message=message,
                    ts_ms=ts_ms,
                    revision=part_mtime_ms,
                    origin=f"{part_path}#{part_path.stem}",
                )
            )
        if not found_step_finish:
            fallback = _fallback_call(
                message,
                message_id,
                session_id,
                mtime_ms,
                f"{path}#{message_id}",
                step_starts,
                str(path),
                sink,
            )
            if fallback is not None:
                calls.append(fallback)
        for call in calls:
            self._emit(call, session, sink)

    def _legacy_session(self, storage: Path, session_id: str) -> _Session:
        cache = self._legacy_sessions.setdefault(storage, {})
        if session_id in cache:
            return cache[session_id]
        session = _Session()
        # `session/<projectID>/<sessionID>.json` (older builds: `session/info/<id>.json`).
        for candidate in sorted(storage.glob(f"session/*/{session_id}.json")):
            try:
                data = orjson.loads(candidate.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            if isinstance(data, dict):
                session = _Session(
                    parent_id=_str(data.get("parentID")),
                    directory=_str(data.get("directory")),
                    version=_str(data.get("version")),
                )
                cache[session_id] = session  # only a found session is final
                break
        return session

    # -- shared --------------------------------------------------------------------------

    def _emit(self, call: _Call, session: _Session, sink: Sink) -> None:
        try:
            tokens = opencode_tokens(call.usage.get("tokens"))
        except ValueError as exc:
            path, _, _ = call.origin.rpartition("#")
            sink.problem(ParseProblem(path, 0, f"{call.event_id}: {exc}"))
            return
        if tokens is None or tokens.is_zero():
            sink.skip("opencode: call without tokens")
            return
        if self._emitted.get(call.event_id, -1) >= call.revision:
            return  # already sent this (or a newer) version
        self._emitted[call.event_id] = call.revision
        message = call.message
        model = _str(message.get("modelID")) or "unknown"
        path_info = message.get("path")
        cwd = _str(path_info.get("cwd")) if isinstance(path_info, dict) else None
        subagent = session.parent_id is not None
        sink.usage(
            UsageEvent(
                event_id=call.event_id,
                ts=call.ts_ms / 1000.0,
                agent=Agent.OPENCODE,
                model=model,
                tokens=tokens,
                session_id=call.session_id,
                revision=call.revision,
                role=Role.SUBAGENT if subagent else Role.MAIN,
                parent_session_id=session.parent_id,
                subagent_id=call.session_id if subagent else None,
                provider=_str(message.get("providerID")),
                project=session.directory or cwd,
                cache_write_unsplit=tokens.cache_write_5m > 0,
                reported_cost_usd=_cost(call.usage.get("cost")),
                agent_version=session.version,
                origin=call.origin,
            )
        )


def _fallback_call(
    message: dict[str, Any],
    message_id: str,
    session_id: str,
    revision: int,
    origin: str,
    step_starts: int,
    problem_path: str,
    sink: Sink,
) -> _Call | None:
    """The message's own tokens, for an assistant message that has no step-finish part."""
    if message.get("role") != "assistant" or message.get("tokens") is None:
        return None
    if not _finished(message):
        return None  # still streaming: its step-finish part may be on its way
    ts_ms = _message_time_ms(message)
    if ts_ms is None:
        sink.problem(ParseProblem(problem_path, 0, f"message {message_id}: no timestamp"))
        return None
    if step_starts > 1:
        # Its tokens are those of the last step only; nothing better exists on disk.
        reason = f"message {message_id}: {step_starts} steps but no step-finish part;"
        sink.problem(ParseProblem(problem_path, 0, f"{reason} counted its last step only"))
    return _Call(
        event_id=f"opencode:msg:{message_id}",
        session_id=session_id,
        usage=message,
        message=message,
        ts_ms=ts_ms,
        revision=revision,
        origin=origin,
    )


def _db_sessions(conn: sqlite3.Connection) -> dict[str, _Session]:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(session)")}
    wanted = [c for c in ("parent_id", "directory", "version") if c in columns]
    if "id" not in columns:
        return {}
    select = ", ".join(["id", *wanted])
    sessions: dict[str, _Session] = {}
    for row in conn.execute(f"SELECT {select} FROM session"):
        values = dict(zip(["id", *wanted], row, strict=True))
        sessions[str(values["id"])] = _Session(
            parent_id=_str(values.get("parent_id")),
            directory=_str(values.get("directory")),
            version=_str(values.get("version")),
        )
    return sessions


def _part_time_ms(created: Any, message: dict[str, Any]) -> float | None:
    """The part row's creation time; for rows migrated from JSON (stamped with the migration
    time, after their message completed) the message's completion time."""
    message_ms = _message_time_ms(message)
    created_ms = _int(created)
    if created_ms is None or created_ms <= 0:
        return message_ms
    times = message.get("time")
    completed = times.get("completed") if isinstance(times, dict) else None
    if isinstance(completed, int | float) and not isinstance(completed, bool) and completed > 0:
        return float(min(created_ms, completed))
    return float(created_ms)


def _row_json(data: Any, path: Path, where: str, sink: Sink) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        value = orjson.loads(data)
    except (orjson.JSONDecodeError, TypeError) as exc:
        sink.problem(ParseProblem(str(path), 0, f"{where}: invalid JSON: {exc}"))
        return None
    if not isinstance(value, dict):
        sink.problem(ParseProblem(str(path), 0, f"{where}: data is not a JSON object"))
        return None
    return value


def _load_json_file(path: Path, sink: Sink) -> tuple[dict[str, Any], int] | None:
    if not path.is_file():  # a FIFO would block the reader, a device fill memory
        sink.problem(ParseProblem(str(path), 0, "not a regular file"))
        return None
    try:
        mtime_ms = path.stat().st_mtime_ns // 1_000_000  # before reading: never too new
        raw = path.read_bytes()
    except OSError as exc:
        sink.problem(ParseProblem(str(path), 0, f"cannot read: {exc}"))
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        sink.problem(ParseProblem(str(path), 0, f"invalid JSON: {exc}"))
        return None
    if not isinstance(value, dict):
        sink.problem(ParseProblem(str(path), 0, "not a JSON object"))
        return None
    return value, mtime_ms


def _db_revision(updated: object) -> int:
    """A database row's revision: the base plus its update time in ms. A time beyond 2^44 ms
    (the year 2527) is damage: it would lift the revision past what the outbox and the hub
    accept, so the row counts at the base revision instead."""
    ms = _int(updated)
    return _DB_REVISION_BASE + (ms if ms is not None and 0 <= ms < _DB_REVISION_BASE else 0)


def _newer(current: int | None, value: Any) -> int | None:
    number = _int(value)
    if number is None:
        return current
    return number if current is None else max(current, number)


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text or "unable to open" in text
