"""The governor's rows in the hub's store (`hub.db`), created at open with IF NOT EXISTS.

- `budget_spend`: each budget's spend per bucket (see `hub.budgets.periods`), exact decimal
  text, updated in the ingest transaction of the calls that moved it.
- `budget_marks`: one row per threshold a budget crossed in a bucket, inserted (insert or
  ignore) in that same transaction: a mark fires once per budget, period and limit, whatever
  restarts or replays happen. `state` pending → done once acted on (after the commit).
- `budget_stops`: each process a budget paused or killed in a bucket, as its node confirmed it
  (or gone before it could be): a stop is made once, and a resume at the next period knows what
  to resume.
- `budget_retries`: each process a stop could not be confirmed for yet (no answer, an error,
  a process the node could not stop): the last failure, how many so far and when to try again.
  A row leaves when the stop is confirmed (into `budget_stops`), the process is gone, or the
  stop no longer stands; a restarted hub reads them and goes on.
- `budget_overrides`: a raised or lifted limit until a time, with who and why.
- `budget_episodes`: a rolling window's open episode (from its first crossing until the window
  is back under its limit), the bucket its marks are filed under.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Final

TABLES: Final = """
CREATE TABLE IF NOT EXISTS budget_spend (
    budget TEXT NOT NULL, bucket TEXT NOT NULL,
    spent TEXT NOT NULL, unknown INTEGER NOT NULL DEFAULT 0, calls INTEGER NOT NULL DEFAULT 0,
    last_ts REAL,
    PRIMARY KEY (budget, bucket)
);
CREATE TABLE IF NOT EXISTS budget_marks (
    budget TEXT NOT NULL, bucket TEXT NOT NULL, mark TEXT NOT NULL,
    at REAL NOT NULL, spent TEXT NOT NULL, lim TEXT NOT NULL, action TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', outcome TEXT,
    stopped_at REAL, spent_after TEXT, resumed_at REAL,
    PRIMARY KEY (budget, bucket, mark)
);
CREATE TABLE IF NOT EXISTS budget_stops (
    budget TEXT NOT NULL, bucket TEXT NOT NULL, machine TEXT NOT NULL, pid INTEGER NOT NULL,
    ctime REAL NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL, at REAL NOT NULL,
    resumed_at REAL,
    PRIMARY KEY (budget, bucket, machine, pid, ctime, action)
);
CREATE TABLE IF NOT EXISTS budget_retries (
    budget TEXT NOT NULL, bucket TEXT NOT NULL, machine TEXT NOT NULL, pid INTEGER NOT NULL,
    ctime REAL NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL,
    failures INTEGER NOT NULL, generation INTEGER NOT NULL, first_at REAL NOT NULL,
    next_at REAL NOT NULL,
    PRIMARY KEY (budget, bucket, machine, pid, ctime, action)
);
CREATE TABLE IF NOT EXISTS budget_overrides (
    id INTEGER PRIMARY KEY, budget TEXT NOT NULL, lim TEXT, until REAL NOT NULL,
    who TEXT NOT NULL, why TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS budget_episodes (
    budget TEXT PRIMARY KEY, bucket TEXT NOT NULL
);
"""


def create_tables(db: sqlite3.Connection) -> None:
    """Create the tables when missing (statement by statement: `executescript` would commit
    the caller's transaction)."""
    for statement in TABLES.split(";"):
        if statement.strip():
            db.execute(statement)
    # a store from before retries noted failed stops as made: they are retried now instead
    db.execute("DELETE FROM budget_stops WHERE outcome IN ('no answer', 'failed')")


@dataclass(frozen=True, slots=True)
class Mark:
    """A threshold crossed: `mark` is "80@50" (80 % of a $50 limit), "forecast@50" or
    "unverified"."""

    budget: str
    bucket: str
    mark: str
    at: float
    spent: Decimal
    limit: Decimal
    action: str
    state: str = "pending"
    outcome: str | None = None
    stopped_at: float | None = None
    spent_after: Decimal | None = None
    resumed_at: float | None = None

    @property
    def percent(self) -> int | None:
        head = self.mark.partition("@")[0]
        return int(head) if head.isdigit() else None


@dataclass(frozen=True, slots=True)
class Override:
    budget: str
    limit: Decimal | None  # None: lifted
    until: float
    who: str
    why: str
    at: float


# --- spend --------------------------------------------------------------------------------


def spend(db: sqlite3.Connection, budget: str, bucket: str) -> tuple[Decimal, int]:
    row = db.execute(
        "SELECT spent, unknown FROM budget_spend WHERE budget = ? AND bucket = ?", (budget, bucket)
    ).fetchone()
    return (Decimal(row[0]), int(row[1])) if row else (Decimal(0), 0)


def spend_between(db: sqlite3.Connection, budget: str, low: int, high: int) -> tuple[Decimal, int]:
    """The sum over numeric buckets low..high (a rolling window's slots)."""
    total, unknown = Decimal(0), 0
    for spent, n in db.execute(
        "SELECT spent, unknown FROM budget_spend WHERE budget = ? "
        "AND CAST(bucket AS INTEGER) BETWEEN ? AND ?",
        (budget, low, high),
    ):
        total += Decimal(spent)
        unknown += n
    return total, unknown


def add_spend(
    db: sqlite3.Connection,
    budget: str,
    bucket: str,
    amount: Decimal,
    unknown: int,
    calls: int,
    last_ts: float,
) -> None:
    db.execute(
        "INSERT INTO budget_spend (budget, bucket, spent, unknown, calls, last_ts) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (budget, bucket) DO UPDATE SET "
        "spent = dec_add(spent, excluded.spent), unknown = unknown + excluded.unknown, "
        "calls = calls + excluded.calls, last_ts = max(coalesce(last_ts, 0), excluded.last_ts)",
        (budget, bucket, str(amount), unknown, calls, last_ts),
    )


def raise_spend(
    db: sqlite3.Connection, budget: str, bucket: str, value: Decimal, ts: float
) -> None:
    """A quota bucket keeps the highest reading."""
    current, _ = spend(db, budget, bucket)
    if (
        value > current
        or not db.execute(
            "SELECT 1 FROM budget_spend WHERE budget = ? AND bucket = ?", (budget, bucket)
        ).fetchone()
    ):
        db.execute(
            "INSERT INTO budget_spend (budget, bucket, spent, calls, last_ts) VALUES "
            "(?, ?, ?, 1, ?) ON CONFLICT (budget, bucket) DO UPDATE SET spent = excluded.spent, "
            "calls = calls + 1, last_ts = excluded.last_ts",
            (budget, bucket, str(value), ts),
        )


def forget_slots_before(db: sqlite3.Connection, budget: str, low: int) -> None:
    """A rolling window's slots that have left it (they would pile up forever)."""
    db.execute(
        "DELETE FROM budget_spend WHERE budget = ? AND CAST(bucket AS INTEGER) < ?",
        (budget, low),
    )


def forget_spend(db: sqlite3.Connection, budget: str) -> None:
    db.execute("DELETE FROM budget_spend WHERE budget = ?", (budget,))


def buckets(db: sqlite3.Connection, budget: str) -> Iterator[tuple[str, Decimal, int, float]]:
    for bucket, spent, unknown, last_ts in db.execute(
        "SELECT bucket, spent, unknown, coalesce(last_ts, 0) FROM budget_spend WHERE budget = ?",
        (budget,),
    ):
        yield bucket, Decimal(spent), unknown, last_ts


# --- marks --------------------------------------------------------------------------------


def insert_mark(db: sqlite3.Connection, mark: Mark) -> bool:
    """True when this mark is new (it fires); False when it fired before."""
    cursor = db.execute(
        "INSERT OR IGNORE INTO budget_marks (budget, bucket, mark, at, spent, lim, action, "
        "spent_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            mark.budget,
            mark.bucket,
            mark.mark,
            mark.at,
            str(mark.spent),
            str(mark.limit),
            mark.action,
            str(mark.spent),
        ),
    )
    return cursor.rowcount == 1


PASSED: Final = "passed with"  # the outcome of a lower mark crossed in the same batch

_MARK_COLUMNS: Final = (
    "budget, bucket, mark, at, spent, lim, action, state, outcome, stopped_at, spent_after, "
    "resumed_at"
)


def _mark(row: tuple[object, ...]) -> Mark:
    (budget, bucket, mark, at, spent, lim, action, state, outcome, stopped, after, resumed) = row
    return Mark(
        str(budget),
        str(bucket),
        str(mark),
        float(at),  # type: ignore[arg-type]
        Decimal(str(spent)),
        Decimal(str(lim)),
        str(action),
        str(state),
        None if outcome is None else str(outcome),
        None if stopped is None else float(stopped),  # type: ignore[arg-type]
        None if after is None else Decimal(str(after)),
        None if resumed is None else float(resumed),  # type: ignore[arg-type]
    )


def marks(
    db: sqlite3.Connection,
    budget: str | None = None,
    *,
    state: str | None = None,
    bucket: str | None = None,
) -> list[Mark]:
    where, params = [], []
    for column, value in (("budget", budget), ("state", state), ("bucket", bucket)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    rows = db.execute(
        f"SELECT {_MARK_COLUMNS} FROM budget_marks{clause} ORDER BY at, rowid", params
    )
    return [_mark(r) for r in rows]


def finish_mark(db: sqlite3.Connection, mark: Mark, outcome: str, stopped_at: float | None) -> None:
    db.execute(
        "UPDATE budget_marks SET state = 'done', outcome = ?, stopped_at = ? "
        "WHERE budget = ? AND bucket = ? AND mark = ?",
        (outcome, stopped_at, mark.budget, mark.bucket, mark.mark),
    )


def add_overshoot(
    db: sqlite3.Connection, budget: str, bucket: str, calls: list[tuple[float, Decimal]]
) -> None:
    """Calls logged up to the stop (in flight when it was sent) add to a hard mark's
    `spent_after`: the spend at quiescence, whose excess over the limit is the overshoot."""
    rows = db.execute(
        "SELECT mark, stopped_at FROM budget_marks WHERE budget = ? AND bucket = ? "
        "AND action IN ('pause', 'kill')",
        (budget, bucket),
    ).fetchall()
    for mark, stopped_at in rows:
        extra = sum(
            (amount for ts, amount in calls if stopped_at is None or ts <= stopped_at), Decimal(0)
        )
        if extra:
            db.execute(
                "UPDATE budget_marks SET spent_after = dec_add(spent_after, ?) "
                "WHERE budget = ? AND bucket = ? AND mark = ?",
                (str(extra), budget, bucket, mark),
            )


def note_resumed(db: sqlite3.Connection, budget: str, bucket: str, at: float) -> None:
    db.execute(
        "UPDATE budget_marks SET resumed_at = ? WHERE budget = ? AND bucket = ? "
        "AND resumed_at IS NULL",
        (at, budget, bucket),
    )


# --- stops --------------------------------------------------------------------------------

StopKey = tuple[str, int, float]  # machine, pid, process start time


def stopped(db: sqlite3.Connection, budget: str, bucket: str, action: str) -> set[StopKey]:
    return {
        (machine, pid, ctime)
        for machine, pid, ctime in db.execute(
            "SELECT machine, pid, ctime FROM budget_stops WHERE budget = ? AND bucket = ? "
            "AND action = ?",
            (budget, bucket, action),
        )
    }


def note_stop(
    db: sqlite3.Connection,
    budget: str,
    bucket: str,
    key: StopKey,
    action: str,
    outcome: str,
    at: float,
) -> None:
    db.execute(
        "INSERT OR IGNORE INTO budget_stops (budget, bucket, machine, pid, ctime, action, "
        "outcome, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (budget, bucket, *key, action, outcome, at),
    )


def confirm_stop(
    db: sqlite3.Connection,
    budget: str,
    bucket: str,
    key: StopKey,
    action: str,
    outcome: str,
    at: float,
) -> None:
    """The stop of `key` is settled (done, or the process is gone): noted, retries over."""
    note_stop(db, budget, bucket, key, action, outcome, at)
    db.execute(
        "DELETE FROM budget_retries WHERE budget = ? AND bucket = ? AND machine = ? AND pid = ? "
        "AND ctime = ? AND action = ?",
        (budget, bucket, *key, action),
    )


# --- stops to retry ---------------------------------------------------------------------------

RETRY_FIRST_S: Final = 5.0  # the first retry's wait; each failure doubles it ...
RETRY_MAX_S: Final = 60.0  # ... up to this


@dataclass(frozen=True, slots=True)
class Retry:
    """A stop not confirmed yet: its last failure (`outcome`, the node's word, and `reason`,
    with its detail), failures so far, and when to try again. `generation` numbers the command
    id: the node answers a repeated id from memory, so after an answered failure the next try
    needs a new one; after no answer the same one (the node may have acted)."""

    key: StopKey
    outcome: str
    reason: str
    failures: int
    generation: int
    first_at: float
    next_at: float


def retry_wait(failures: int) -> float:
    doubled: float = RETRY_FIRST_S * 2.0 ** max(0, failures - 1)
    return min(RETRY_MAX_S, doubled)


def retries(db: sqlite3.Connection, budget: str, bucket: str, action: str) -> dict[StopKey, Retry]:
    out: dict[StopKey, Retry] = {}
    for machine, pid, ctime, outcome, reason, failures, generation, first, next_at in db.execute(
        "SELECT machine, pid, ctime, outcome, reason, failures, generation, first_at, next_at "
        "FROM budget_retries WHERE budget = ? AND bucket = ? AND action = ?",
        (budget, bucket, action),
    ):
        key = (str(machine), int(pid), float(ctime))
        out[key] = Retry(
            key, str(outcome), str(reason), int(failures), int(generation), float(first),
            float(next_at),
        )  # fmt: skip
    return out


def note_failure(
    db: sqlite3.Connection,
    budget: str,
    bucket: str,
    action: str,
    before: Retry | None,
    key: StopKey,
    outcome: str,
    reason: str,
    answered: bool,
    at: float,
) -> Retry:
    """Record a failed stop of `key` (`before`: its retry row so far) and when to retry."""
    failures = 1 if before is None else before.failures + 1
    generation = 0 if before is None else before.generation
    retry = Retry(
        key,
        outcome,
        reason,
        failures,
        generation + int(answered),
        at if before is None else before.first_at,
        at + retry_wait(failures),
    )
    db.execute(
        "INSERT INTO budget_retries (budget, bucket, machine, pid, ctime, action, outcome, "
        "reason, failures, generation, first_at, next_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        "?, ?) ON CONFLICT (budget, bucket, machine, pid, ctime, action) DO UPDATE SET "
        "outcome = excluded.outcome, reason = excluded.reason, failures = excluded.failures, "
        "generation = excluded.generation, next_at = excluded.next_at",
        (budget, bucket, *key, action, outcome, reason, retry.failures, retry.generation,
         retry.first_at, retry.next_at),
    )  # fmt: skip
    return retry


def retry_buckets(db: sqlite3.Connection, budget: str) -> set[str]:
    """The buckets `budget` has stops to retry in."""
    return {
        str(bucket)
        for (bucket,) in db.execute(
            "SELECT DISTINCT bucket FROM budget_retries WHERE budget = ?", (budget,)
        )
    }


def forget_retries(db: sqlite3.Connection, budget: str, buckets: set[str] | None = None) -> None:
    """Drop `budget`'s retries in `buckets` (default all): stops that no longer stand."""
    if buckets is None:
        db.execute("DELETE FROM budget_retries WHERE budget = ?", (budget,))
        return
    for bucket in buckets:
        db.execute("DELETE FROM budget_retries WHERE budget = ? AND bucket = ?", (budget, bucket))


def stops_since(
    db: sqlite3.Connection, budget: str, bucket: str, action: str, since: float
) -> list[tuple[str, float]]:
    """(outcome, at) of each stop of `action` noted in `bucket` at or after `since`."""
    return [
        (str(outcome), float(at))
        for outcome, at in db.execute(
            "SELECT outcome, at FROM budget_stops WHERE budget = ? AND bucket = ? AND action = ?"
            " AND at >= ?",
            (budget, bucket, action, since),
        )
    ]


def paused_unresumed(db: sqlite3.Connection, budget: str, bucket: str) -> list[StopKey]:
    return [
        (machine, pid, ctime)
        for machine, pid, ctime in db.execute(
            "SELECT machine, pid, ctime FROM budget_stops WHERE budget = ? AND bucket = ? "
            "AND action = 'pause' AND resumed_at IS NULL AND outcome = 'paused'",
            (budget, bucket),
        )
    ]


def note_stop_resumed(
    db: sqlite3.Connection, budget: str, bucket: str, key: StopKey, at: float
) -> None:
    db.execute(
        "UPDATE budget_stops SET resumed_at = ? WHERE budget = ? AND bucket = ? AND machine = ? "
        "AND pid = ? AND ctime = ? AND action = 'pause'",
        (at, budget, bucket, *key),
    )


# --- overrides ----------------------------------------------------------------------------


def add_override(db: sqlite3.Connection, override: Override) -> None:
    db.execute(
        "INSERT INTO budget_overrides (budget, lim, until, who, why, at) VALUES (?, ?, ?, ?, ?, ?)",
        (
            override.budget,
            None if override.limit is None else str(override.limit),
            override.until,
            override.who,
            override.why,
            override.at,
        ),
    )


def active_overrides(db: sqlite3.Connection, now: float) -> dict[str, Override]:
    """The latest override of each budget that has not expired."""
    out: dict[str, Override] = {}
    for budget, lim, until, who, why, at in db.execute(
        "SELECT budget, lim, until, who, why, at FROM budget_overrides WHERE until > ? ORDER BY id",
        (now,),
    ):
        out[budget] = Override(budget, None if lim is None else Decimal(lim), until, who, why, at)
    return out


# --- rolling episodes -----------------------------------------------------------------------


def episode(db: sqlite3.Connection, budget: str) -> str | None:
    row = db.execute("SELECT bucket FROM budget_episodes WHERE budget = ?", (budget,)).fetchone()
    return None if row is None else str(row[0])


def open_episode(db: sqlite3.Connection, budget: str, bucket: str) -> None:
    db.execute(
        "INSERT OR IGNORE INTO budget_episodes (budget, bucket) VALUES (?, ?)", (budget, bucket)
    )


def close_episode(db: sqlite3.Connection, budget: str) -> None:
    db.execute("DELETE FROM budget_episodes WHERE budget = ?", (budget,))
