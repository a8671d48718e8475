"""Each session's spend kept by time and commit span, so that an outcome report (`--by commit|
branch|pr|repo`) reads sums, not every call of its month (`hub._outcome_read` reads them).

A call's commit is the first of its session's commits authored at or after it
(`pricing.outcomes`): every call between two of a session's commit times goes to one commit.
So calls are summed per session, quarter-hour (a day in any zone is whole quarters, as for the
main roll-ups) and *span*: a session's commit times cut its quarters where they fall
(`outcome_cuts`), and a call is filed under the latest cut before it in its quarter (-1: none,
the quarter's start). When an outcome names a new commit time, the calls after it in its
quarter move to the new span (read raw: a quarter's calls, once per commit).

Retries (a call asking again for a tool call its thread's previous call asked for) depend on
the calls' order: each thread's last two calls are kept (`outcome_threads`) and the calls
found to be retries listed (`outcome_retries`); so are a session's earliest calls (readers take
sessions in the order of their first calls, as reading every call does). A session whose calls
came out of order within a thread, or which lost its earliest calls, is marked dirty: readers
read its calls raw, as they do a session with calls before a report's first day or before the
retention edge. A call's revision (a streamed reply written again, a little later) as its
thread's last call keeps its session in order.

Every write here is made in the transaction of what caused it (a batch, an outcome, a
re-pricing step, a prune step), so the sums always equal a recount of the kept calls.
"""

from __future__ import annotations

import math
import sqlite3
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from operator import attrgetter
from typing import Final

import orjson

from hub._payloads import Payloads
from hub._totals import MONEY, ZERO
from pricing.outcomes import TOOL_CALL_AGENTS, commit_times, tool_set
from shared.events import Role, UsageEvent
from shared.outcomes import OutcomeDecodeError, SessionOutcome, outcome_from_map, root_session

QUARTER_S: Final = 900
NO_CUT: Final = -1.0  # a span that starts at its quarter's start
RETRY_NO, RETRY_YES, RETRY_UNSEEN = 0, 1, 2  # unseen: the agent's log names no tool calls

TOKEN_COLUMNS: Final = (
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
    "web_search_requests",
)
KEY_COLUMNS: Final = (
    "quarter",
    "machine",
    "session",
    "cut",
    "profile",
    "priced",
    "estimated",
    "subagent",
    "retry",
)
_TOKENS: Final = attrgetter(*TOKEN_COLUMNS)

TABLES: Final = f"""
CREATE TABLE outcome_rollup (     -- calls per session, quarter-hour and commit span
    quarter   INTEGER NOT NULL,   -- epoch seconds // 900
    machine   TEXT NOT NULL,      -- the node that sent the calls
    session   TEXT NOT NULL,      -- the root session (a subagent's parent)
    cut       REAL NOT NULL,      -- the latest commit time before the calls in the quarter, or -1
    profile   TEXT NOT NULL,      -- '' where the call names none
    priced    INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    subagent  INTEGER NOT NULL,
    retry     INTEGER NOT NULL,   -- 0 no, 1 a retry, 2 the agent's log names no tool calls
    calls     INTEGER NOT NULL,
    {", ".join(f"{c} INTEGER NOT NULL" for c in TOKEN_COLUMNS)},
    amount    TEXT NOT NULL,      -- API-equivalent USD as the calls were priced, exact
    PRIMARY KEY ({", ".join(KEY_COLUMNS)})
) WITHOUT ROWID;

CREATE TABLE outcome_cuts (       -- every commit time an outcome named for a session
    machine TEXT NOT NULL,
    session TEXT NOT NULL,
    at      REAL NOT NULL,
    PRIMARY KEY (machine, session, at)
) WITHOUT ROWID;

CREATE TABLE outcome_sessions (   -- per session: its first calls and whether its order held
    machine  TEXT NOT NULL,
    session  TEXT NOT NULL,
    first_ts REAL NOT NULL,       -- the earliest time a call of it had (never raised)
    last_ts  REAL NOT NULL,       -- the latest time a call of it had (never lowered)
    earliest TEXT NOT NULL,       -- its earliest counted calls' [ts, event id], in order
    whole    INTEGER NOT NULL,    -- 1: `earliest` holds every counted call of it
    dirty    INTEGER NOT NULL,    -- 1: its order is unknown here, read its calls raw
    PRIMARY KEY (machine, session)
) WITHOUT ROWID;

CREATE TABLE outcome_threads (    -- a thread's (main or a subagent's) last two tool-logging calls
    machine    TEXT NOT NULL,
    session    TEXT NOT NULL,
    thread     TEXT NOT NULL,     -- '-' the main thread, '+' and the subagent id
    last_ts    REAL NOT NULL,
    last_id    TEXT NOT NULL,
    last_tools TEXT NOT NULL,
    prev_ts    REAL,
    prev_id    TEXT,
    prev_tools TEXT,
    PRIMARY KEY (machine, session, thread)
) WITHOUT ROWID;

CREATE TABLE outcome_retries (    -- the calls that ask again for their thread's last tool call
    ts       REAL NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (ts, event_id)
) WITHOUT ROWID
"""

_UPSERT: Final = f"""
INSERT INTO outcome_rollup ({", ".join(KEY_COLUMNS)}, calls, {", ".join(TOKEN_COLUMNS)}, amount)
VALUES ({", ".join("?" * (len(KEY_COLUMNS) + len(TOKEN_COLUMNS) + 2))})
ON CONFLICT ({", ".join(KEY_COLUMNS)}) DO UPDATE SET
    calls = calls + excluded.calls,
    {", ".join(f"{c} = {c} + excluded.{c}" for c in TOKEN_COLUMNS)},
    amount = dec_add(amount, excluded.amount)
"""
_DROP_EMPTY: Final = (
    f"DELETE FROM outcome_rollup WHERE {' AND '.join(f'{c} = ?' for c in KEY_COLUMNS)} "
    "AND calls = 0"
)
REBUILD_BATCH: Final = 20_000  # calls filed per step of a rebuild
EARLIEST: Final = 4  # a session's earliest calls kept: its first call's revisions keep it known
MAX_CUTS: Final = 2_000  # per session (4 outcomes' worth of commits): past it, read it raw

RowKey = tuple[int, str, str, float, str, int, int, int, int]
Price = tuple[Decimal | None, bool]
CallKey = tuple[float, str]  # (ts, event id): the order of a session's calls


def create_tables(db: sqlite3.Connection) -> None:
    for statement in TABLES.split(";"):  # (no ';' in the comments)
        db.execute(statement)


def _thread(event: UsageEvent) -> str:
    return "-" if event.subagent_id is None else "+" + event.subagent_id


def _key(event: UsageEvent) -> CallKey:
    return (event.ts, event.event_id)


def quarter_of(ts: float) -> int:
    return int(ts // QUARTER_S)


def span_of(cuts: Sequence[float], ts: float) -> float:
    """The span a call at `ts` is filed under: the latest of the sorted `cuts` before it in
    its quarter, else NO_CUT."""
    at = bisect_left(cuts, ts)
    if at and cuts[at - 1] >= quarter_of(ts) * QUARTER_S:
        return cuts[at - 1]
    return NO_CUT


def commit_index(times: Sequence[float], quarter: int, cut: float) -> int:
    """Which of a session's commits (sorted author times `times`; len: none) every call of the
    span (quarter, cut) belongs to, by `pricing.outcomes`' rule (the first authored at or after
    the call), given that `times` are among the session's cuts: no commit time lies between
    the span's start and any of its calls."""
    if cut == NO_CUT:
        return bisect_left(times, quarter * QUARTER_S)
    return bisect_right(times, cut)


@dataclass(slots=True)
class _Thread:
    last: CallKey
    last_tools: str
    prev: CallKey | None
    prev_tools: str | None


@dataclass(slots=True)
class _Session:
    """What one write knows of a session: its cuts, first call, threads."""

    machine: str
    session: str
    cuts: list[float]
    first_ts: float
    last_ts: float
    earliest: list[CallKey]
    whole: bool
    dirty: bool
    threads: dict[str, _Thread | None] = field(default_factory=dict)
    changed: bool = False


class _Deltas:
    def __init__(self) -> None:
        self.rows: dict[RowKey, list[int | Decimal]] = {}
        self.withdrew = False

    def add(self, key: RowKey, event: UsageEvent, amount: Decimal | None, sign: int) -> None:
        sums = self.rows.get(key)
        if sums is None:
            sums = self.rows[key] = [0] * (1 + len(TOKEN_COLUMNS)) + [ZERO]
        sums[0] += sign
        for i, n in enumerate(_TOKENS(event.tokens), 1):
            sums[i] += sign * n
        if amount is not None:
            sums[-1] += sign * amount
        self.withdrew |= sign < 0

    def write(self, db: sqlite3.Connection) -> None:
        with localcontext(MONEY):
            db.executemany(
                _UPSERT, [(*key, *sums[:-1], str(sums[-1])) for key, sums in self.rows.items()]
            )
        if self.withdrew:
            db.executemany(_DROP_EMPTY, list(self.rows))


class OutcomeSums:
    """One write's view of the outcome roll-up (inside the caller's transaction): file and
    withdraw calls, then `flush`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._sessions: dict[tuple[str, str], _Session] = {}
        self._deltas = _Deltas()
        self._retries_added: list[CallKey] = []
        self._retries_dropped: list[CallKey] = []

    # ---- what is known of a session -------------------------------------------------------

    def session(self, machine: str, session: str) -> _Session:
        got = self._sessions.get((machine, session))
        if got is not None:
            return got
        cuts = [
            at
            for (at,) in self._db.execute(
                "SELECT at FROM outcome_cuts WHERE machine = ? AND session = ? ORDER BY at",
                (machine, session),
            )
        ]
        row = self._db.execute(
            "SELECT first_ts, last_ts, earliest, whole, dirty FROM outcome_sessions "
            "WHERE machine = ? AND session = ?",
            (machine, session),
        ).fetchone()
        if row is None:
            got = _Session(machine, session, cuts, math.inf, -math.inf, [], True, False)
        else:
            first_ts, last_ts, earliest, whole, dirty = row
            calls = [(ts, event_id) for ts, event_id in orjson.loads(earliest)]
            got = _Session(
                machine, session, cuts, first_ts, last_ts, calls, bool(whole), bool(dirty)
            )
        self._sessions[(machine, session)] = got
        return got

    def _thread_of(self, s: _Session, thread: str) -> _Thread | None:
        if thread not in s.threads:
            row = self._db.execute(
                "SELECT last_ts, last_id, last_tools, prev_ts, prev_id, prev_tools "
                "FROM outcome_threads WHERE machine = ? AND session = ? AND thread = ?",
                (s.machine, s.session, thread),
            ).fetchone()
            s.threads[thread] = (
                None
                if row is None
                else _Thread(
                    (row[0], row[1]), row[2], None if row[3] is None else (row[3], row[4]), row[5]
                )
            )
        return s.threads[thread]

    def _is_retry(self, event: UsageEvent) -> bool:
        key = _key(event)
        if key in self._retries_added:
            return True
        if key in self._retries_dropped:
            return False
        row = self._db.execute(
            "SELECT 1 FROM outcome_retries WHERE ts = ? AND event_id = ?", key
        ).fetchone()
        return row is not None

    def stored_flag(self, event: UsageEvent) -> int:
        """A filed call's retry column, as it was filed."""
        if event.agent not in TOOL_CALL_AGENTS:
            return RETRY_UNSEEN
        return RETRY_YES if self._is_retry(event) else RETRY_NO

    @staticmethod
    def row_key(s: _Session, event: UsageEvent, price: Price, flag: int, cut: float) -> RowKey:
        amount, estimated = price
        return (
            quarter_of(event.ts),
            s.machine,
            s.session,
            cut,
            event.profile or "",
            int(amount is not None),
            int(estimated),
            int(event.role is Role.SUBAGENT),
            flag,
        )

    # ---- filing ---------------------------------------------------------------------------

    def withdraw(self, event: UsageEvent, price: Price) -> None:
        """Take a counted call out (its old revision, its old price)."""
        s = self.session(event.machine, root_session(event))
        flag = self.stored_flag(event)
        key = self.row_key(s, event, price, flag, span_of(s.cuts, event.ts))
        self._deltas.add(key, event, price[0], -1)
        if flag == RETRY_YES:
            self._drop_retry(_key(event))
        if _key(event) in s.earliest:
            s.earliest.remove(_key(event))
            if not s.earliest and not s.whole:
                self._mark_dirty(s)  # which of its calls is first is not known here now
        s.changed = True

    def _drop_retry(self, key: CallKey) -> None:
        if key in self._retries_added:
            self._retries_added.remove(key)
        else:
            self._retries_dropped.append(key)

    def put(self, event: UsageEvent, price: Price, flag: int) -> None:
        s = self.session(event.machine, root_session(event))
        row = self.row_key(s, event, price, flag, span_of(s.cuts, event.ts))
        self._deltas.add(row, event, price[0], 1)
        key = _key(event)
        if flag == RETRY_YES:
            self._retries_added.append(key)
            if key in self._retries_dropped:
                self._retries_dropped.remove(key)
        if s.whole or (s.earliest and key < s.earliest[-1]):
            insort(s.earliest, key)
            if len(s.earliest) > EARLIEST:
                s.earliest.pop()
                s.whole = False
        s.first_ts = min(s.first_ts, event.ts)
        s.last_ts = max(s.last_ts, event.ts)
        s.changed = True

    def _mark_dirty(self, s: _Session) -> None:
        s.dirty = s.changed = True

    def change(
        self, old: UsageEvent | None, old_price: Price | None, new: UsageEvent, new_price: Price
    ) -> None:
        """File a stored change: `new` replaces `old` (None: a new call). Calls of one
        session must come in (ts, event id) order of `new` for their retries to be known."""
        revising = old is not None and old.counts
        if old is not None and revising:
            assert old_price is not None
            self.withdraw(old, old_price)
            if root_session(old) != root_session(new):  # moved to another session
                self._mark_dirty(self.session(old.machine, root_session(old)))
        if not new.counts:
            if revising and old is not None and old.agent in TOOL_CALL_AGENTS:
                self._mark_dirty(self.session(old.machine, root_session(old)))
            return
        s = self.session(new.machine, root_session(new))
        flag = self._flag(s, old if revising else None, new)
        self.put(new, new_price, flag)

    def _flag(self, s: _Session, old: UsageEvent | None, new: UsageEvent) -> int:
        """`new`'s retry column, keeping its thread's last two calls; marks the session dirty
        when the order it was worked out in broke."""
        if new.agent not in TOOL_CALL_AGENTS:
            if old is not None and old.agent in TOOL_CALL_AGENTS:
                self._mark_dirty(s)
            return RETRY_UNSEEN
        thread = self._thread_of(s, _thread(new))
        key = _key(new)
        tools = new.tool_calls or ""
        if old is not None:  # a new revision: in order only as its thread's last call
            if (
                old.agent in TOOL_CALL_AGENTS
                and _thread(old) == _thread(new)
                and thread is not None
                and thread.last[1] == new.event_id
                and (thread.prev is None or key > thread.prev)
            ):
                thread.last, thread.last_tools = key, tools
                s.changed = True
                return _retry(new, thread.prev_tools or "")
            self._mark_dirty(s)
            return RETRY_NO
        if thread is None:
            s.threads[_thread(new)] = _Thread(key, tools, None, None)
            s.changed = True
            return RETRY_NO
        if key > thread.last:
            flag = _retry(new, thread.last_tools)
            thread.prev, thread.prev_tools = thread.last, thread.last_tools
            thread.last, thread.last_tools = key, tools
            s.changed = True
            return flag
        self._mark_dirty(s)
        return RETRY_NO

    def reprice(self, event: UsageEvent, old: Price, new: Price) -> None:
        """A kept call's price changed: move its sums, nothing else."""
        s = self.session(event.machine, root_session(event))
        flag = self.stored_flag(event)
        cut = span_of(s.cuts, event.ts)
        self._deltas.add(self.row_key(s, event, old, flag, cut), event, old[0], -1)
        self._deltas.add(self.row_key(s, event, new, flag, cut), event, new[0], 1)

    def add_cuts(
        self, machine: str, session: str, times: Iterable[float], payloads: Payloads
    ) -> None:
        """An outcome named commit times: each new one cuts its quarter, and the session's
        calls after it there move to its span."""
        s = self.session(machine, session)
        new = sorted(set(times) - set(s.cuts))
        if not new:
            return
        if len(s.cuts) + len(new) > MAX_CUTS:  # a node that keeps naming new times
            self._mark_dirty(s)
            return
        self._db.executemany(
            "INSERT OR IGNORE INTO outcome_cuts (machine, session, at) VALUES (?, ?, ?)",
            [(machine, session, at) for at in new],
        )
        before = list(s.cuts)
        s.cuts = sorted(s.cuts + new)
        for quarter in sorted({quarter_of(at) for at in new}):
            for event, price in self._calls_in(machine, quarter, payloads):
                if root_session(event) != session:
                    continue
                old_cut, new_cut = span_of(before, event.ts), span_of(s.cuts, event.ts)
                if old_cut != new_cut:
                    flag = self.stored_flag(event)
                    self._deltas.add(
                        self.row_key(s, event, price, flag, old_cut), event, price[0], -1
                    )
                    self._deltas.add(
                        self.row_key(s, event, price, flag, new_cut), event, price[0], 1
                    )

    def _calls_in(
        self, machine: str, quarter: int, payloads: Payloads
    ) -> Iterable[tuple[UsageEvent, Price]]:
        rows = self._db.execute(
            "SELECT payload, amount, estimated FROM usage WHERE ts >= ? AND ts < ? "
            "AND counted = 1 AND machine = ?",
            (quarter * QUARTER_S, (quarter + 1) * QUARTER_S, machine),
        ).fetchall()
        for payload, amount, estimated in rows:
            yield (
                payloads.decode(payload),
                (
                    None if amount is None else Decimal(amount),
                    bool(estimated),
                ),
            )

    # ---- writing --------------------------------------------------------------------------

    def flush(self) -> None:
        self._deltas.write(self._db)
        self._deltas = _Deltas()
        db = self._db
        db.executemany(
            "DELETE FROM outcome_retries WHERE ts = ? AND event_id = ?", self._retries_dropped
        )
        db.executemany(
            "INSERT OR IGNORE INTO outcome_retries (ts, event_id) VALUES (?, ?)",
            self._retries_added,
        )
        self._retries_added, self._retries_dropped = [], []
        for s in self._sessions.values():
            if not s.changed or s.first_ts == math.inf:  # (cuts only: no call yet)
                continue
            db.execute(
                "INSERT INTO outcome_sessions (machine, session, first_ts, last_ts, earliest, "
                "whole, dirty) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (machine, session) "
                "DO UPDATE SET first_ts = excluded.first_ts, last_ts = excluded.last_ts, "
                "earliest = excluded.earliest, whole = excluded.whole, dirty = excluded.dirty",
                (
                    s.machine,
                    s.session,
                    s.first_ts,
                    s.last_ts,
                    orjson.dumps(s.earliest).decode(),
                    int(s.whole),
                    int(s.dirty),
                ),
            )
            for name, t in s.threads.items():
                if t is None:
                    continue
                prev = (None, None) if t.prev is None else t.prev
                db.execute(
                    "INSERT INTO outcome_threads (machine, session, thread, last_ts, last_id, "
                    "last_tools, prev_ts, prev_id, prev_tools) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (machine, session, thread) DO UPDATE SET "
                    "last_ts = excluded.last_ts, last_id = excluded.last_id, "
                    "last_tools = excluded.last_tools, prev_ts = excluded.prev_ts, "
                    "prev_id = excluded.prev_id, prev_tools = excluded.prev_tools",
                    (s.machine, s.session, name, *t.last, t.last_tools, *prev, t.prev_tools),
                )
            s.changed = False


def _retry(event: UsageEvent, before: str) -> int:
    return RETRY_YES if tool_set(event.tool_calls) & tool_set(before) else RETRY_NO


# ---- the store's hooks ------------------------------------------------------------------------


def on_ingest(
    db: sqlite3.Connection,
    changes: Sequence[tuple[UsageEvent | None, UsageEvent]],
    prices: Sequence[tuple[Price | None, Price]],
) -> None:
    """File a batch's stored changes (inside its transaction)."""
    if not changes:
        return
    sums = OutcomeSums(db)
    order = sorted(range(len(changes)), key=lambda i: _key(changes[i][1]))
    for i in order:
        (old, new), (old_price, new_price) = changes[i], prices[i]
        sums.change(old, old_price, new, new_price)
    sums.flush()


def on_reprice(db: sqlite3.Connection, changed: Sequence[tuple[UsageEvent, Price, Price]]) -> None:
    sums = OutcomeSums(db)
    for event, old, new in changed:
        if event.counts:
            sums.reprice(event, old, new)
    sums.flush()


def on_outcomes(
    db: sqlite3.Connection,
    node: str,
    outcomes: Sequence[SessionOutcome],
    payloads: Callable[[], Payloads],
) -> None:
    """Cut the sessions at the commit times `node`'s outcomes name (with their record)."""
    sums = OutcomeSums(db)
    made: Payloads | None = None
    for outcome in outcomes:
        times = commit_times(outcome.commits)
        s = sums.session(node, outcome.session_id)
        if set(times) <= set(s.cuts):
            continue
        made = made or payloads()
        sums.add_cuts(node, outcome.session_id, times, made)
    sums.flush()


def on_prune(db: sqlite3.Connection, before: float) -> None:
    """Raw calls before `before` are being pruned: their sessions are read raw from now on
    (their first call is before the edge), so their sums and cuts there are dropped. The
    sessions' and threads' rows stay: a session resumed later is still known to have lost its
    first calls."""
    edge = quarter_of(before)
    db.execute("DELETE FROM outcome_rollup WHERE quarter < ?", (edge,))
    db.execute("DELETE FROM outcome_cuts WHERE at < ?", (edge * QUARTER_S,))
    db.execute("DELETE FROM outcome_retries WHERE ts < ?", (before,))


def rebuild(db: sqlite3.Connection) -> None:
    """Fill the (empty) tables from the kept calls and outcomes: a store made before them."""
    payloads = Payloads(db)
    has_outcomes = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'session_outcomes'"
    ).fetchone()
    if has_outcomes:
        cuts = []
        for node, session, blob in db.execute(
            "SELECT node, session_id, outcome FROM session_outcomes"
        ):
            try:
                outcome = outcome_from_map(orjson.loads(blob))
            except (OutcomeDecodeError, orjson.JSONDecodeError):
                continue  # readers skip it too
            cuts += [(node, session, at) for at in commit_times(outcome.commits)]
        db.executemany("INSERT OR IGNORE INTO outcome_cuts VALUES (?, ?, ?)", cuts)
    rows = db.execute(
        "SELECT payload, amount, estimated FROM usage WHERE counted = 1 ORDER BY ts, event_id"
    )
    while batch := rows.fetchmany(REBUILD_BATCH):
        sums = OutcomeSums(db)
        for payload, amount, estimated in batch:
            event = payloads.decode(payload)
            price = (None if amount is None else Decimal(amount), bool(estimated))
            sums.change(None, None, event, price)
        sums.flush()
