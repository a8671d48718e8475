"""The node's durable outbox: events waiting for the hub, and the log read positions they came from.

One SQLite file (WAL). `commit()` appends events and updates read positions in ONE transaction,
so after a crash at any instant the saved positions say exactly which log lines have become
events: nothing read is lost (its position did not advance) and nothing is read twice into the
outbox (its position advanced with it).

Sending (research/stack.md §1.2): `next_batch()` hands out the oldest waiting rows as a sequence
range `seq0..seq1`; the link sends it and, on the hub's ack, calls `ack(seq1)`, which prunes
them. Until then every call returns the very same batch (same range, same bytes, also across a
restart), so a re-send after a failure adds nothing at the hub, which keeps one row per event
id whatever the sequence says (the range is for diagnostics and liveness only). `seq` is
AUTOINCREMENT: never reused, even after a prune and a reopen, and `stream_id` is new whenever
the file is created, so a fresh outbox's ranges are told apart from an old one's.

Revisions (shared/events.py): the same `event_id` may be committed again with a higher
`revision`. While the older row waits it is replaced: deleted, and the new one appended with a
new seq. A row already handed out in a batch is never touched (the batch must stay the same);
the new revision is appended after it and the hub keeps the highest. A revision that is not
higher than the waiting one is dropped. Limit and profile events have no revision (0): the
first one wins.

Bounded: past `max_events` waiting rows a growing commit raises `OutboxFull` and stores nothing,
positions included; the reader stops until acks make room and then reads the same lines again.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, TypedDict

from shared.codec import pack
from shared.events import MAX_REVISION, Event, LimitEvent, UsageEvent

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
DEFAULT_MAX_EVENTS: Final = 500_000
DEFAULT_BATCH_EVENTS: Final = 500
DEFAULT_BATCH_BYTES: Final = 512 << 10

_SCHEMA: Final = (
    """CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reused after a prune
        event_id TEXT NOT NULL,
        revision INTEGER NOT NULL,
        ts REAL NOT NULL,
        kind TEXT NOT NULL,
        body BLOB NOT NULL  -- shared.codec.pack(event)
    )""",
    # not UNIQUE: an in-flight row and its newer revision may both wait
    "CREATE INDEX events_by_id ON events(event_id)",
    "CREATE INDEX events_by_ts ON events(ts)",
    "CREATE TABLE positions (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    # one row; counters kept in the same transactions as the rows, so they are exact and O(1)
    """CREATE TABLE head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        stream_id TEXT NOT NULL,
        created REAL NOT NULL,
        pending INTEGER NOT NULL,
        pending_bytes INTEGER NOT NULL,
        sent_seq INTEGER NOT NULL,  -- highest seq handed out by next_batch()
        acked_seq INTEGER NOT NULL
    )""",
)


class OutboxError(Exception):
    """The file is not a usable outbox (not SQLite, newer schema, no WAL)."""


class OutboxCorrupt(OutboxError):
    """SQLite says the file is damaged or not a database: only moving it aside helps."""


class OutboxDiskFull(OutboxError):
    """A write found no room on the disk; SQLite rolled it back, so nothing was stored."""


def _primary_code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF  # extended codes keep it in the low byte


def _translated(exc: sqlite3.Error, path: Path) -> OutboxError | None:
    """The outbox's own error for a damaged file or a full disk; None for any other."""
    code = _primary_code(exc)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return OutboxCorrupt(f"outbox {path} is damaged: {exc}")
    if code == sqlite3.SQLITE_FULL:
        return OutboxDiskFull(f"no room on the disk for outbox {path}")
    return None


class OutboxFull(OutboxError):
    """The commit would push the outbox past its limit; nothing was stored."""

    def __init__(self, pending: int, limit: int, adding: int) -> None:
        super().__init__(
            f"outbox full: {pending} events waiting for the hub, limit {limit}; "
            f"refused a commit of {adding} more (nothing stored, positions unchanged)"
        )
        self.pending = pending
        self.limit = limit


@dataclass(frozen=True, slots=True)
class Batch:
    """Waiting events `seq0..seq1` (packed), sent as one request; `ack(seq1)` on the hub's ack.

    Consecutive batches have contiguous ranges (seq0 is one past the last acknowledged seq), so
    a hub can tell a real gap; inside a range rows may be missing (superseded revisions, whose
    newer row comes later), so the hub must not expect seq1 - seq0 + 1 events.
    """

    stream: str
    seq0: int
    seq1: int
    events: list[bytes]


@dataclass(frozen=True, slots=True)
class CommitResult:
    stored: int  # rows appended (new events and new revisions)
    replaced: int  # of those, how many superseded a waiting row of the same event_id
    dropped: int  # not stored: the outbox already holds that revision or a higher one


class OutboxStats(TypedDict):
    stream: str
    pending: int
    pending_bytes: int
    in_flight: int  # rows handed out in a batch, not yet acknowledged
    max_events: int
    full: bool
    oldest_ts: float | None
    last_seq: int
    acked_seq: int
    positions: int


def _set_wal(db: sqlite3.Connection, attempts: int = 200) -> str:
    """Switch a (possibly brand-new) database to WAL. Changing the journal mode needs an
    exclusive lock that SQLite does not wait for with the busy timeout: when several processes
    open a new outbox at once (a daemon and a status command), retry for a few seconds."""
    for attempt in range(attempts):
        try:
            mode: str = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            return mode
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.025)
    raise AssertionError("unreachable")


def _revision(event: Event) -> int:
    return event.revision if isinstance(event, UsageEvent) else 0


def _rows(events: Sequence[Event]) -> list[tuple[str, int, float, str, bytes]]:
    """The outbox rows of `events`. An event the wire cannot carry (a revision past what any
    source produces, a value msgpack cannot pack) is logged and left out: kept, it would stop
    the reader at every restart on the same log line, and the hub would refuse it anyway."""
    rows = []
    for event in events:
        revision = _revision(event)
        try:
            if not 0 <= revision <= MAX_REVISION:
                raise ValueError(f"revision {revision} is out of range (0..{MAX_REVISION})")
            rows.append((event.event_id, revision, event.ts, _kind(event), pack(event)))
        except (ValueError, OverflowError, TypeError) as exc:  # UnicodeError is a ValueError
            log.warning("event %r left out: it cannot be sent: %s", event.event_id, exc)
    return rows


def _kind(event: Event) -> str:
    if isinstance(event, UsageEvent):
        return "usage"
    return "limit" if isinstance(event, LimitEvent) else "profile"


_OPEN: weakref.WeakSet[Outbox] = weakref.WeakSet()  # for `Outbox.open_ones`


class Outbox:
    """See the module doc. Thread-safe: the reader and the link may share one instance."""

    def __init__(
        self, path: Path, *, max_events: int = DEFAULT_MAX_EVENTS, busy_timeout: float = 30.0
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        self.path = path
        self.max_events = max_events
        self._lock = threading.RLock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write
        # lock up front and waits on the busy timeout instead of failing on a lock upgrade.
        try:
            db = sqlite3.connect(
                path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.DatabaseError as exc:  # a directory in its place, a read-only dir
            raise OutboxError(
                f"cannot open outbox {path}: {exc} (it must be a file this user can write)"
            ) from exc
        try:
            self.stream_id = self._open(db, path)
        except BaseException:
            db.close()
            raise
        self._db = db
        _OPEN.add(self)

    @staticmethod
    def _open(db: sqlite3.Connection, path: Path) -> str:
        try:
            mode = _set_wal(db)
            if mode != "wal":
                raise OutboxError(f"outbox {path} needs WAL journal mode, SQLite gave {mode!r}")
            # FULL, not NORMAL. NORMAL in WAL is safe against a process crash (kill -9: the
            # committed WAL frames are in the OS cache) and on power loss it only rolls back the
            # last transactions, positions with their events, so the lines are re-read. But a
            # batch may already have reached the hub before that power loss, and the rolled-back
            # AUTOINCREMENT counter would then give the same seq numbers to other events (the
            # hub stores by event id, so it would not drop them; FULL keeps a range meaning one
            # set of events all the same). FULL syncs the WAL at each
            # commit, before anything committed can be sent; one fsync per commit (commits are
            # batches of events) is cheap.
            db.execute("PRAGMA synchronous=FULL")
            db.execute("BEGIN IMMEDIATE")  # two processes creating the file at once: one wins
            try:
                version = db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    for statement in _SCHEMA:
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO head VALUES (1, ?, ?, 0, 0, 0, 0)",
                        (secrets.token_hex(8), time.time()),
                    )
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION:
                    raise OutboxError(
                        f"outbox {path} has schema version {version},"
                        f" this node-agent knows {SCHEMA_VERSION}"
                    )
                stream: str = db.execute("SELECT stream_id FROM head").fetchone()[0]
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise _translated(exc, path) or OutboxError(
                f"cannot open outbox {path}: {exc}"
            ) from exc
        return stream

    def verify(self) -> None:
        """Read every page once (SQLite's quick_check); raises OutboxCorrupt when one is damaged.
        Costs a read of the file: for start-up, not for every commit."""
        with self._lock:
            try:
                rows = self._db.execute("PRAGMA quick_check").fetchall()
            except sqlite3.DatabaseError as exc:
                raise _translated(exc, self.path) or OutboxCorrupt(
                    f"outbox {self.path} is damaged: {exc}"
                ) from exc
        if rows != [("ok",)]:
            raise OutboxCorrupt(f"outbox {self.path} is damaged: {rows[0][0]}")

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()
            _OPEN.discard(self)

    def shrink_memory(self) -> None:
        """Hand back the connection's page cache (it fills again as far as it is used): the
        first read of every log and its backlog leave ~1 MB per connection behind."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA shrink_memory")

    @staticmethod
    def open_ones() -> list[Outbox]:
        """Every outbox of this process not yet closed (the daemon's threads each have one)."""
        return list(_OPEN)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; rolled back on any exception (OutboxFull included). A full
        disk raises OutboxDiskFull and a damaged file OutboxCorrupt, so callers can tell the
        condition to wait out from the one to recover from."""
        with self._lock:
            db = self._db
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:  # SQLite may already have rolled back (disk full)
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                translated = _translated(exc, self.path)
                if translated is None:
                    raise
                raise translated from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: several queries see the same snapshot."""
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")

    # -- writing -----------------------------------------------------------------------------

    def commit(
        self, events: Sequence[Event], positions: Mapping[str, bytes | None]
    ) -> CommitResult:
        """Append `events` and set `positions` (None deletes a key) in one transaction.

        Raises OutboxFull, storing nothing, when the commit would add rows past `max_events`.
        An empty outbox accepts any commit, so one oversized commit cannot wedge the reader.
        """
        rows = _rows(events)
        stored = replaced = dropped = 0
        if not rows and not positions:
            return CommitResult(0, 0, 0)  # no transaction, no fsync
        with self._write() as db:
            before, pending_bytes, sent_seq = db.execute(
                "SELECT pending, pending_bytes, sent_seq FROM head"
            ).fetchone()
            pending = before
            for event_id, revision, ts, kind, body in rows:
                # the newest row of this id; ids within one commit are seen here too
                old = db.execute(
                    "SELECT seq, revision, length(body) FROM events WHERE event_id = ?"
                    " ORDER BY seq DESC LIMIT 1",
                    (event_id,),
                ).fetchone()
                if old is not None:
                    old_seq, old_revision, old_len = old
                    if revision <= old_revision:
                        dropped += 1
                        continue
                    replaced += 1
                    if old_seq > sent_seq:  # not handed out yet: the new revision supersedes it
                        db.execute("DELETE FROM events WHERE seq = ?", (old_seq,))
                        pending -= 1
                        pending_bytes -= old_len
                db.execute(
                    "INSERT INTO events (event_id, revision, ts, kind, body)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (event_id, revision, ts, kind, body),
                )
                stored += 1
                pending += 1
                pending_bytes += len(body)
            if pending > self.max_events and pending > before > 0:
                raise OutboxFull(before, self.max_events, pending - before)
            if rows:
                db.execute(
                    "UPDATE head SET pending = ?, pending_bytes = ?", (pending, pending_bytes)
                )
            for key, value in positions.items():
                if value is None:
                    db.execute("DELETE FROM positions WHERE key = ?", (key,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO positions (key, value) VALUES (?, ?)",
                        (key, bytes(value)),
                    )
        return CommitResult(stored, replaced, dropped)

    def next_batch(
        self, max_events: int = DEFAULT_BATCH_EVENTS, max_bytes: int = DEFAULT_BATCH_BYTES
    ) -> Batch | None:
        """The oldest waiting events, or None. Until `ack`, returns the same batch every time.

        Bounded by count and by the sum of packed sizes, but never empty: an event larger than
        `max_bytes` goes alone. (One event is a few hundred bytes, far below the default 512 KiB;
        the hub's receive cap must sit above max_bytes plus the frame overhead.)
        """
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        with self._write() as db:
            sent_seq, acked_seq = db.execute("SELECT sent_seq, acked_seq FROM head").fetchone()
            # rows handed out and not acknowledged are the batch in flight: hand it out again
            rows: list[tuple[int, bytes]] = db.execute(
                "SELECT seq, body FROM events WHERE seq <= ? ORDER BY seq", (sent_seq,)
            ).fetchall()
            if not rows:
                size = 0
                candidates: list[tuple[int, bytes]] = db.execute(
                    "SELECT seq, body FROM events ORDER BY seq LIMIT ?", (max_events,)
                ).fetchall()
                for seq, body in candidates:
                    if rows and size + len(body) > max_bytes:
                        break
                    rows.append((seq, body))
                    size += len(body)
                if not rows:
                    return None
                db.execute("UPDATE head SET sent_seq = ?", (rows[-1][0],))
        return Batch(self.stream_id, acked_seq + 1, rows[-1][0], [body for _, body in rows])

    def ack(self, seq1: int) -> int:
        """The hub has stored everything up to `seq1`: prune those rows; returns how many.

        Raises ValueError for a seq beyond what next_batch() handed out (pruning it would lose
        events the hub never saw). A repeated or stale ack removes nothing.
        """
        with self._write() as db:
            (sent_seq,) = db.execute("SELECT sent_seq FROM head").fetchone()
            if seq1 > sent_seq:
                raise ValueError(f"ack for seq {seq1}, but only up to {sent_seq} was sent")
            count, size = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(length(body)), 0) FROM events WHERE seq <= ?",
                (seq1,),
            ).fetchone()
            if count:
                db.execute("DELETE FROM events WHERE seq <= ?", (seq1,))
            db.execute(
                "UPDATE head SET pending = pending - ?, pending_bytes = pending_bytes - ?,"
                " acked_seq = MAX(acked_seq, ?)",
                (count, size, seq1),
            )
        removed: int = count
        return removed

    # -- reading -----------------------------------------------------------------------------

    def positions(self) -> dict[str, bytes]:
        with self._lock:
            return {
                key: bytes(value)
                for key, value in self._db.execute("SELECT key, value FROM positions")
            }

    def pending(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT pending FROM head").fetchone()[0]
        return count

    @property
    def is_full(self) -> bool:
        return self.pending() >= self.max_events

    def oldest_ts(self) -> float | None:
        """Time of the oldest waiting event: how far behind the hub is this node."""
        with self._lock:
            ts: float | None = self._db.execute("SELECT MIN(ts) FROM events").fetchone()[0]
        return ts

    def stats(self) -> OutboxStats:
        with self._read() as db:
            pending, pending_bytes, sent_seq, acked_seq = db.execute(
                "SELECT pending, pending_bytes, sent_seq, acked_seq FROM head"
            ).fetchone()
            (in_flight,) = db.execute(
                "SELECT COUNT(*) FROM events WHERE seq <= ?", (sent_seq,)
            ).fetchone()
            (oldest,) = db.execute("SELECT MIN(ts) FROM events").fetchone()
            last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            (n_positions,) = db.execute("SELECT COUNT(*) FROM positions").fetchone()
        return OutboxStats(
            stream=self.stream_id,
            pending=pending,
            pending_bytes=pending_bytes,
            in_flight=in_flight,
            max_events=self.max_events,
            full=pending >= self.max_events,
            oldest_ts=oldest,
            last_seq=last[0] if last else 0,
            acked_seq=acked_seq,
            positions=n_positions,
        )

    # -- node-level key/value ----------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    def set_meta(self, key: str, value: bytes | None) -> None:
        """Set (or with None delete) one value; committed at once."""
        with self._write() as db:
            if value is None:
                db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, bytes(value))
                )
