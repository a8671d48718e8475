"""The alert outbox in the hub's store: findings, their deliveries, silences, acknowledgements.

`raise_finding` is idempotent on the finding's id: the alert and one delivery row per sink
that routes it are written in one transaction (a second raise of the id adds nothing). The
courier claims due deliveries (marking them in flight, with the attempt counted, before it
sends) and settles each with its outcome. A kill -9 at any moment leaves each of these steps
wholly done or not at all; a delivery in flight when the hub died is found by
`recover_in_flight` at the next start and sent again at once, with the same webhook-id.

The tables are this module's own (CREATE TABLE IF NOT EXISTS on open), on a connection of its
own to the store's file: the courier's writes never wait for the service's lock, and ingest
waits at most for one short transaction here.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import orjson

from hub._transaction import immediate
from hub.alerts.match import kind_matches, scope_matches
from hub.alerts.settings import AlertSettings
from hub.findings import Finding, Severity

_TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS alerts (
        id          TEXT PRIMARY KEY,  -- the finding's id: raising it again adds nothing
        kind        TEXT NOT NULL,
        scope       TEXT NOT NULL,
        severity    TEXT NOT NULL,
        start       REAL NOT NULL,
        text        TEXT NOT NULL,
        evidence    TEXT NOT NULL,     -- JSON object of exact strings
        raised      REAL NOT NULL,
        silenced_by INTEGER,           -- the silence that held it when raised
        acked_by    TEXT,
        acked_at    REAL,
        acked_until REAL               -- the ack lapses then (NULL: it holds for good)
    )""",
    "CREATE INDEX IF NOT EXISTS alerts_raised ON alerts (raised)",
    """CREATE TABLE IF NOT EXISTS alert_deliveries (
        alert_id     TEXT NOT NULL,
        sink         TEXT NOT NULL,
        state        TEXT NOT NULL,    -- pending, delivered, dead, silenced
        attempts     INTEGER NOT NULL DEFAULT 0,
        next_at      REAL NOT NULL,
        deadline     REAL NOT NULL,    -- past it a failed delivery is dead-lettered
        in_flight    INTEGER NOT NULL DEFAULT 0,
        last_at      REAL,
        last_result  TEXT,
        delivered_at REAL,
        PRIMARY KEY (alert_id, sink)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS alert_deliveries_due ON alert_deliveries (state, next_at)",
    """CREATE TABLE IF NOT EXISTS alert_silences (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        scope   TEXT NOT NULL,
        kind    TEXT NOT NULL,
        until   REAL NOT NULL,
        who     TEXT NOT NULL,
        why     TEXT NOT NULL,
        created REAL NOT NULL
    )""",
)
# columns added since the table was first made: (table, column, type), added when missing
_ADDED_COLUMNS: Final = (("alerts", "acked_until", "REAL"),)
BUSY_TIMEOUT_MS: Final = 5_000
DeliveryState = Literal["pending", "delivered", "dead", "silenced"]
DELIVERY_STATES: Final = ("pending", "delivered", "dead", "silenced")
ALERT_STATES: Final = ("open", "pending", "delivered", "dead", "silenced", "acked")


@dataclass(frozen=True, slots=True)
class Delivery:
    sink: str
    state: DeliveryState
    attempts: int
    next_at: float
    last_at: float | None
    last_result: str | None
    delivered_at: float | None


@dataclass(frozen=True, slots=True)
class AlertRecord:
    finding: Finding
    raised: float
    silenced_by: int | None
    acked_by: str | None
    acked_at: float | None
    deliveries: tuple[Delivery, ...]
    acked_until: float | None = None  # the ack lapses then; None: it holds for good
    as_of: float = 0.0  # when it was read: an ack whose `until` is past by then has lapsed

    @property
    def ack_lapsed(self) -> bool:
        return self.acked_until is not None and self.acked_until <= self.as_of

    @property
    def state(self) -> str:
        """acked (an ack in force), silenced, then what its deliveries say: dead (one is),
        pending (one is), delivered (all are), open (no sink routes it)."""
        if self.acked_at is not None and not self.ack_lapsed:
            return "acked"
        if self.silenced_by is not None:
            return "silenced"
        states = {d.state for d in self.deliveries}
        for state in ("dead", "pending"):
            if state in states:
                return state
        if states == {"silenced"}:
            return "silenced"
        return "delivered" if states else "open"


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    scope: str
    kind: str
    until: float
    who: str
    why: str
    created: float

    def holds(self, finding: Finding, now: float) -> bool:
        return (
            now < self.until
            and scope_matches(self.scope, finding.scope)
            and kind_matches(self.kind, finding.kind)
        )


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery the courier is sending now: attempt `attempt` of `finding` to `sink`."""

    finding: Finding
    raised: float
    sink: str
    attempt: int
    deadline: float


class Outbox:
    """The FindingSink of a hub. Thread-safe."""

    def __init__(
        self, path: Path, settings: AlertSettings, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.due = threading.Event()  # set when something may be due (the courier waits on it)
        # called after each change a person would see (raised, acked, delivered, silenced):
        # the hub publishes it, so that dashboards read the alerts again then, not on a timer
        self.on_change: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._outcomes: Counter[tuple[str, str]] = Counter()  # (sink, outcome) since start
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            with self._write():
                for statement in _TABLES:
                    self._db.execute(statement)
                self._add_columns()
        except BaseException:
            self._db.close()
            raise

    def _add_columns(self) -> None:
        """A store made before a column existed gets it (NULL in the old rows)."""
        for table, column, kind in _ADDED_COLUMNS:
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            if column not in have:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db)

    # -- raising ------------------------------------------------------------------------------

    def raise_finding(self, finding: Finding) -> None:
        """Record `finding` and queue it for every sink that routes it; a known id adds
        nothing. Held by an active silence: recorded as silenced, queued nowhere."""
        with self._lock, self._write() as db:
            added = self._add(db, finding, self.clock())
        self.due.set()
        if added:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _add(self, db: sqlite3.Connection, finding: Finding, now: float, skip: str = "") -> bool:
        """`raise_finding` in the caller's transaction; `skip`: a sink it must not go to.
        False when the id was known (nothing added)."""
        held = next((s for s in self._silences(db, now) if s.holds(finding, now)), None)
        added = db.execute(
            "INSERT OR IGNORE INTO alerts (id, kind, scope, severity, start, text, evidence,"
            " raised, silenced_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                finding.id,
                finding.kind,
                finding.scope,
                finding.severity.value,
                finding.start,
                finding.text,
                orjson.dumps(dict(finding.evidence)).decode(),
                now,
                held.id if held else None,
            ),
        ).rowcount
        if not added or held is not None:
            return bool(added)
        deadline = now + self.settings.give_up_after
        db.executemany(
            "INSERT INTO alert_deliveries (alert_id, sink, state, next_at, deadline)"
            " VALUES (?, ?, 'pending', ?, ?)",
            [
                (finding.id, sink.name, now, deadline)
                for sink in self.settings.sinks
                if sink.name != skip and sink.routes(finding.severity, finding.kind, finding.scope)
            ],
        )
        return True

    # -- delivering (the courier) -------------------------------------------------------------

    def recover_in_flight(self) -> int:
        """Deliveries that were being sent when the hub stopped: due again now (call once,
        at the courier's start, before any claim)."""
        with self._lock, self._write() as db:
            return db.execute(
                "UPDATE alert_deliveries SET in_flight = 0, next_at = min(next_at, ?)"
                " WHERE in_flight = 1",
                (self.clock(),),
            ).rowcount

    def claim(self, limit: int) -> list[Claim]:
        """Up to `limit` due deliveries, marked in flight with their attempt counted. One held
        by a silence is settled as silenced; one whose sink is gone, as dead."""
        now = self.clock()
        claims: list[Claim] = []
        with self._lock, self._write() as db:
            silences = self._silences(db, now)
            rows = db.execute(
                "SELECT d.alert_id, d.sink, d.attempts, d.deadline, a.kind, a.scope,"
                " a.severity, a.start, a.text, a.evidence, a.raised FROM alert_deliveries d"
                " JOIN alerts a ON a.id = d.alert_id WHERE d.state = 'pending'"
                " AND d.in_flight = 0 AND d.next_at <= ? ORDER BY d.next_at LIMIT ?",
                (now, limit),
            ).fetchall()
            for alert_id, sink, attempts, deadline, *rest in rows:
                finding = _finding(alert_id, *rest[:-1])
                held = next((s for s in silences if s.holds(finding, now)), None)
                if held is not None:
                    self._settle(db, alert_id, sink, "silenced", f"silence #{held.id}", now)
                elif self.settings.sink(sink) is None:
                    self._settle(db, alert_id, sink, "dead", "sink no longer configured", now)
                else:
                    db.execute(
                        "UPDATE alert_deliveries SET in_flight = 1, attempts = attempts + 1,"
                        " last_at = ? WHERE alert_id = ? AND sink = ?",
                        (now, alert_id, sink),
                    )
                    claims.append(Claim(finding, rest[-1], sink, attempts + 1, deadline))
        return claims

    def settle(self, claim: Claim, result: str, *, delivered: bool, retry_at: float | None) -> str:
        """Record an attempt's outcome: delivered; else due again at `retry_at`, or dead-lettered
        when that is None or past the deadline. Returns the delivery's new state."""
        now = self.clock()
        if delivered:
            state: DeliveryState = "delivered"
        elif retry_at is not None and retry_at <= claim.deadline:
            state = "pending"
        else:
            state = "dead"
        with self._lock, self._write() as db:
            self._settle(db, claim.finding.id, claim.sink, state, result, now, retry_at)
            if state == "dead" and claim.finding.kind != DEAD_LETTER:
                # told on the other sinks, in the same transaction: never lost, never twice
                self._add(db, dead_letter(claim, result, now), now, skip=claim.sink)
            self._outcomes[(claim.sink, "failed" if state == "pending" else state)] += 1
        if state == "dead":
            self.due.set()
        self._changed()
        return state

    @staticmethod
    def _settle(
        db: sqlite3.Connection,
        alert_id: str,
        sink: str,
        state: DeliveryState,
        result: str,
        now: float,
        retry_at: float | None = None,
    ) -> None:
        db.execute(
            "UPDATE alert_deliveries SET state = ?, in_flight = 0, last_result = ?,"
            " next_at = coalesce(?, next_at), delivered_at = ? WHERE alert_id = ? AND sink = ?",
            (
                state,
                result[:500],
                retry_at if state == "pending" else None,
                now if state == "delivered" else None,
                alert_id,
                sink,
            ),
        )

    def next_due(self) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT min(next_at) FROM alert_deliveries WHERE state = 'pending'"
                " AND in_flight = 0"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def outcomes(self) -> dict[tuple[str, str], int]:
        """Attempts settled since this hub started, by (sink, outcome): delivered, failed
        (to be retried), dead."""
        with self._lock:
            return dict(self._outcomes)

    # -- reading ------------------------------------------------------------------------------

    def alerts(self, limit: int = 100, state: str | None = None) -> list[AlertRecord]:
        """Newest first; `state` keeps the alerts in that state or with a delivery in it
        (`dead`: every dead letter, acknowledged or not)."""
        with self._lock:
            ids = [
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM alerts ORDER BY raised DESC, id LIMIT ?",
                    (limit if state is None else -1,),
                )
            ]
            records = self._records(ids)
        if state is not None:
            records = [
                r
                for r in records
                if r.state == state or any(d.state == state for d in r.deliveries)
            ][:limit]
        return records

    def alert(self, alert_id: str) -> AlertRecord | None:
        with self._lock:
            found = self._records([alert_id])
        return found[0] if found else None

    def _records(self, ids: list[str]) -> list[AlertRecord]:
        if not ids:
            return []
        deliveries: dict[str, list[Delivery]] = {}
        rows: dict[str, tuple[Any, ...]] = {}
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                "SELECT id, kind, scope, severity, start, text, evidence, raised, silenced_by,"
                f" acked_by, acked_at, acked_until FROM alerts WHERE id IN ({marks})",
                chunk,
            ):
                rows[row[0]] = row
            for alert_id, *d in self._db.execute(
                "SELECT alert_id, sink, state, attempts, next_at, last_at, last_result,"
                f" delivered_at FROM alert_deliveries WHERE alert_id IN ({marks}) ORDER BY sink",
                chunk,
            ):
                deliveries.setdefault(alert_id, []).append(Delivery(*d))
        out = []
        now = self.clock()
        for alert_id in ids:
            if (row := rows.get(alert_id)) is None:
                continue
            aid, kind, scope, severity, start, text, evidence, raised, silenced, by, at, until = row
            out.append(
                AlertRecord(
                    _finding(aid, kind, scope, severity, start, text, evidence),
                    raised,
                    silenced,
                    by,
                    at,
                    tuple(deliveries.get(alert_id, ())),
                    until,
                    now,
                )
            )
        return out

    def counts(self) -> tuple[Counter[str], Counter[str]]:
        """(alerts by state, deliveries by state), for /metrics."""
        with self._lock:
            by_delivery: Counter[str] = Counter(
                dict(self._db.execute("SELECT state, count(*) FROM alert_deliveries GROUP BY 1"))
            )
            ids = [r[0] for r in self._db.execute("SELECT id FROM alerts")]
            by_alert = Counter(r.state for r in self._records(ids))
        return by_alert, by_delivery

    # -- people: acknowledge, silence, retry ----------------------------------------------------

    def ack(self, alert_id: str, who: str, until: float | None = None) -> AlertRecord | None:
        """Acknowledge until `until` (None: for good); None for an unknown id.

        The rule: an ack in force is kept as it is (its who, when and until) unless this one
        lasts longer, which replaces it, so asking twice changes nothing and an ack can be
        extended. At `until` the ack lapses: the alert reads as unacknowledged again (its
        state what its deliveries say), whether or not its finding is raised again (a raise of
        the same id is the same happening: it neither lifts nor renews the ack), and a new ack
        replaces the lapsed one. Raises ValueError for an `until` not in the future."""
        now = self.clock()
        if until is not None and until <= now:
            raise ValueError("until: a time in the future (e.g. +2h, +1d, 2026-12-31T18:00)")
        with self._lock, self._write() as db:
            changed = db.execute(
                "UPDATE alerts SET acked_by = ?, acked_at = ?, acked_until = ? WHERE id = ?"
                " AND (acked_at IS NULL OR acked_until <= ?"  # none in force
                " OR (acked_until IS NOT NULL AND (? IS NULL OR ? > acked_until)))",  # longer
                (who, now, until, alert_id, now, until, until),
            ).rowcount
        if changed:
            self._changed()
        return self.alert(alert_id)

    def retry(self, alert_id: str | None) -> int:
        """Send the dead (and silenced) deliveries of `alert_id` again now, or every dead
        letter when None, with a fresh deadline; the same webhook-id goes out. Returns how
        many."""
        now = self.clock()
        where = "state = 'dead'" if alert_id is None else "state IN ('dead', 'silenced')"
        with self._lock, self._write() as db:
            count = db.execute(
                "UPDATE alert_deliveries SET state = 'pending', next_at = ?, deadline = ?"
                f" WHERE {where}" + ("" if alert_id is None else " AND alert_id = ?"),
                (now, now + self.settings.give_up_after)
                + (() if alert_id is None else (alert_id,)),
            ).rowcount
        if count:
            self.due.set()
            self._changed()
        return int(count)

    def silence(self, scope: str, kind: str, until: float, who: str, why: str) -> Silence:
        now = self.clock()
        with self._lock, self._write() as db:
            cursor = db.execute(
                "INSERT INTO alert_silences (scope, kind, until, who, why, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (scope, kind, until, who, why, now),
            )
        assert cursor.lastrowid is not None
        self._changed()
        return Silence(cursor.lastrowid, scope, kind, until, who, why, now)

    def unsilence(self, silence_id: int) -> bool:
        """End a silence now; False when there is no such silence still active."""
        now = self.clock()
        with self._lock, self._write() as db:
            ended = db.execute(
                "UPDATE alert_silences SET until = ? WHERE id = ? AND until > ?",
                (now, silence_id, now),
            ).rowcount
        if ended:
            self._changed()
        return bool(ended)

    def silences(self, *, active: bool = True) -> list[Silence]:
        with self._lock:
            if active:
                return self._silences(self._db, self.clock())
            return [Silence(*r) for r in self._db.execute(_SILENCES + " ORDER BY id")]

    @staticmethod
    def _silences(db: sqlite3.Connection, now: float) -> list[Silence]:
        return [Silence(*r) for r in db.execute(_SILENCES + " WHERE until > ? ORDER BY id", (now,))]


_SILENCES: Final = "SELECT id, scope, kind, until, who, why, created FROM alert_silences"
DEAD_LETTER: Final = "delivery_dead"


def dead_letter(claim: Claim, result: str, now: float) -> Finding:
    """The alert that tells the other sinks a delivery was dead-lettered (it is not itself
    told of again: no chain of notices)."""
    alert = claim.finding.id
    return Finding(
        id=f"{DEAD_LETTER}:{claim.sink}:{alert}",
        kind=DEAD_LETTER,
        scope=f"sink={claim.sink}",
        severity=Severity.WARNING,
        start=now,
        text=f"alert {alert} ({claim.finding.kind}) could not be delivered to {claim.sink} "
        f"after {claim.attempt} attempts ({result}): `fleet-hub alerts retry {alert}` sends it "
        "again",
        evidence={"alert": alert, "sink": claim.sink, "attempts": str(claim.attempt)},
    )


def _finding(
    alert_id: str, kind: str, scope: str, severity: str, start: float, text: str, evidence: str
) -> Finding:
    return Finding(
        id=alert_id,
        kind=kind,
        scope=scope,
        severity=Severity(severity),
        start=start,
        text=text,
        evidence=orjson.loads(evidence),
    )
