"""The hub's SQLite store: every event the nodes sent, the node registry, profiles, the audit trail.

`ingest` commits one node batch in one transaction, idempotently, by event id alone: usage
events are upserted by `event_id` keeping the highest revision, limit and profile events are
insert-or-ignore by `event_id`, so a re-sent batch, the same events in another batch, or a log
the node re-read, add nothing twice. Sequence numbers are not trusted for this: one signed
frame with a huge sequence would otherwise make the hub skip that stream's later genuine
batches, and a node may legitimately renumber (a fresh outbox).

An event belongs to the node that first stored it: another node's frame carrying its id is
rejected (reported in `IngestResult.foreign`), never applied, whatever its revision.

Each batch also writes the roll-ups of what it changed (`hub._rollup`), in its transaction:
reports and the hub's figures read those, so they cover days whose raw events `prune` removed
(after `retain_days`); `reprice` brings kept calls to new price tables. Usage payloads are
compressed with a dictionary trained on the store's own events (`hub._payloads`).

Crash safety: the batch transaction and WAL do it. A kill -9 at any moment leaves each batch
wholly in or wholly out, and reopening gives the committed state (see `hub._schema.connect`).

A `Store` may be used from several threads as long as its owner serialises the calls (the hub
service holds one lock for store and ledger); other processes open their own.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date, tzinfo
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple

import msgspec

from hub import _outcome_rollup as outcome_rollup
from hub._credit_store import CallMove, CreditStore
from hub._payloads import Payloads
from hub._rollup import (
    MINUTE_KEEP_S,
    QUARTER_S,
    READABLE,
    Cell,
    MinuteCell,
    RollupDeltas,
    RollupWrites,
    StorePricer,
    amount_text,
    read_cells,
    read_minutes,
    stored_price,
)
from hub._schema import CACHE_KIB, Synchronous, connect
from hub._transaction import immediate
from hub.credit import CreditMonth, CreditTerms
from hub.credit_settings import SubscriptionSettings
from hub.model import (
    AuditRecord,
    Change,
    IngestResult,
    NodeRecord,
    Price,
    ProfileRecord,
    Redraw,
)
from pricing import PriceBook
from pricing.sdk_credit import Moved
from shared.codec import pack, unpack
from shared.config import Billing
from shared.events import MAX_REVISION, Agent, Event, LimitEvent, ProfileEvent, UsageEvent
from shared.hello import NodeHello

DB_FILE: Final = "hub.db"
_CHUNK: Final = 500  # ids per `IN (...)` lookup: well under SQLite's bound-parameter limit

_UPSERT_USAGE: Final = """
INSERT INTO usage (event_id, revision, counted, ts, machine, session_id, amount, estimated,
                   payload)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO UPDATE SET
    revision = excluded.revision, counted = excluded.counted, ts = excluded.ts,
    session_id = excluded.session_id, amount = excluded.amount,
    estimated = excluded.estimated, payload = excluded.payload
WHERE excluded.revision > usage.revision AND excluded.machine = usage.machine
"""
# Called inside a batch's transaction with what it changed (new and superseded calls, their
# prices, new limit readings), the time, and what the Agent SDK credit moved between classes
# (`IngestResult.redraws`; True: a profile was drawn again whole, recount from the roll-ups):
# its writes commit or roll back with the batch.
IngestHook = Callable[
    [
        sqlite3.Connection,
        Sequence[Change],
        Sequence[tuple[Price | None, Price]],
        Sequence[LimitEvent],
        float,
        Sequence[Redraw],
        bool,
    ],
    None,
]
# Told inside each re-pricing transaction that changed a stored price (the roll-ups hold the new
# prices) and the time; what it returns, if anything, is run once that transaction committed.
RepriceHook = Callable[[sqlite3.Connection, float], Callable[[], None] | None]
REPRICE_STEP: Final = 5_000  # raw rows re-priced per transaction (see `reprice`)
PRUNE_STEP: Final = 5_000  # raw rows deleted per transaction: the receiver waits no longer
VACUUM_PAGES: Final = 2_000  # free pages handed back to the file system per step (8 MiB)


class _Stored(NamedTuple):
    """What the store holds of a usage event: enough to judge a new revision of it, and to
    withdraw from the roll-ups what it added."""

    revision: int
    machine: str  # the node that first stored it: its owner
    payload: bytes
    price: Price


class Store:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: Synchronous = "NORMAL",
        book: PriceBook | None = None,
        cache_kib: int = CACHE_KIB,
    ) -> None:
        """`book` prices calls into the roll-ups as they are stored (default: the shipped
        tables); `cache_kib`: SQLite's page cache (the default suits the writer)."""
        self.path = Path(path)
        self._price = StorePricer(book)
        self._db = connect(self.path, synchronous, self._price, cache_kib)
        self._payloads = Payloads(self._db)
        # the outcome roll-up is kept with every batch, in its transaction
        self._ingest_hooks: list[IngestHook] = [_file_outcomes]
        self._reprice_hooks: list[RepriceHook] = []
        row = self._db.execute("SELECT value FROM meta WHERE key = 'pruned_before'").fetchone()
        # Raw events before this time were pruned: later copies of them are not stored.
        self._pruned_before = float(row[0]) if row else -math.inf
        self.rollup_writes = RollupWrites()
        # each Claude subscription's Agent SDK credit, call by call (`hub._credit_store`)
        self._credit = CreditStore()

    @classmethod
    def in_dir(
        cls, data_dir: Path, *, synchronous: Synchronous = "NORMAL", book: PriceBook | None = None
    ) -> Store:
        return cls(Path(data_dir) / DB_FILE, synchronous=synchronous, book=book)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def snapshot(self, cache_kib: int = CACHE_KIB) -> Iterator[Store]:
        """Another connection to this store that reads one state throughout: the one committed
        when it was entered, whatever is committed here meanwhile (WAL keeps it for readers)."""
        reader = Store(self.path, cache_kib=cache_kib)
        try:
            reader._db.execute("BEGIN")
            # a WAL read transaction takes its snapshot at its first read, not at BEGIN
            reader._db.execute("SELECT count(*) FROM meta").fetchall()
            yield reader
        finally:
            reader.close()  # ends the read transaction

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db)

    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on this store's connection, for rows kept by another module
        (the budget governor's): committed on exit, rolled back on an error."""
        with self._transaction():
            yield self._db

    @property
    def pruned_before(self) -> float:
        """Raw events before this time were pruned (-inf: none were); their roll-ups stay."""
        return self._pruned_before

    def reading(self) -> sqlite3.Connection:
        """This store's connection, for another module's reads (the owner serialises calls)."""
        return self._db

    def add_ingest_hook(self, hook: IngestHook) -> None:
        """Have `hook` run inside every batch's transaction (see `IngestHook`)."""
        self._ingest_hooks.append(hook)

    def add_reprice_hook(self, hook: RepriceHook) -> None:
        """Have `hook` run inside every re-pricing step that changed a price (`RepriceHook`)."""
        self._reprice_hooks.append(hook)

    # ---- ingest -------------------------------------------------------------------------

    def ingest(
        self,
        node: str,
        stream: str,
        seq0: int,
        seq1: int,
        events: Sequence[Event],
        hello: NodeHello | None,
        now: float,
        *,
        packed: Sequence[bytes] | None = None,
    ) -> IngestResult:
        """Commit one batch (seq0..seq1, inclusive) from the authenticated `node`, atomically.

        An empty range (seq0 = seq1 + 1, no events) is a heartbeat. Liveness (last_seen) and
        the hello are recorded for every batch (the receiver drops replayed frames before
        they get here). Events are filed under `node` whatever machine they name; an event id
        another node stored first is rejected.

        `packed`, when given, holds each event's `codec.pack` bytes as received (same order):
        a usage event filed as it came is stored as those bytes rather than packed again.
        """
        if seq0 > seq1 + 1 or (seq0 == seq1 + 1 and events):
            raise ValueError(f"batch from {node}/{stream}: bad range {seq0}..{seq1}")
        if packed is not None and len(packed) != len(events):
            raise ValueError(f"{len(events)} events but {len(packed)} packed forms")
        with self._transaction():
            self._touch_node(node, hello, now)
            billing_changed = self._announce(node, hello, now) if hello is not None else False
            if seq0 == seq1 + 1:
                # A heartbeat's hello may change a profile's plan or billing: its credit is
                # drawn again here, as a batch with calls would have it.
                redraws, credit_redrawn = self._draw_credit(node, hello, [], [])
                if redraws or credit_redrawn:
                    for hook in self._ingest_hooks:
                        hook(self._db, [], [], [], now, redraws, credit_redrawn)
                return IngestResult(
                    billing_changed=billing_changed, redraws=redraws, credit_redrawn=credit_redrawn
                )
            last = self.stream_seq(node, stream)
            accounts = self._accounts(node)
            usage: list[tuple[UsageEvent, bytes | None]] = []
            others: list[Event] = []
            rejected: list[tuple[str, str]] = []
            pruned = 0
            for i, event in enumerate(events):
                # One event that cannot be stored is left out and reported, so that it never
                # blocks its node's stream.
                if (problem := _unstorable(event)) is not None:
                    rejected.append((event.event_id, problem))
                elif event.ts < self._pruned_before:
                    # Its day's raw rows are gone, so it cannot be told from one already
                    # counted (a node re-reading old logs): the roll-ups stay as they are.
                    pruned += 1
                elif isinstance(event, UsageEvent):
                    blob = None if packed is None else packed[i]
                    usage.append(self._attribute(event, blob, node, accounts))
                else:
                    others.append(event)
            changes, prices, ignored, foreign = self._upsert_usage(usage, node, now)
            redraws, credit_redrawn = self._draw_credit(node, hello, changes, prices)
            limits, ignored_limits = self._insert_limits(others, node, accounts, now)
            profile_events, ignored_profiles = self._insert_profile_events(others, node, now)
            for hook in self._ingest_hooks:
                hook(self._db, changes, prices, limits, now, redraws, credit_redrawn)
            self._db.execute(
                "INSERT INTO streams (node, stream, seq, committed) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (node, stream) DO UPDATE SET seq = excluded.seq, "
                "committed = excluded.committed",
                (node, stream, seq1, now),
            )
        return IngestResult(
            changes=changes,
            prices=prices,
            limits=limits,
            profile_events=profile_events,
            ignored=ignored + ignored_limits + ignored_profiles,
            too_old=pruned,
            rejected=rejected,
            foreign=foreign,
            gap=last is not None and seq0 > last + 1,
            billing_changed=billing_changed,
            redraws=redraws,
            credit_redrawn=credit_redrawn,
        )

    def _draw_credit(
        self,
        node: str,
        hello: NodeHello | None,
        changes: Sequence[Change],
        prices: Sequence[tuple[Price | None, Price]],
    ) -> tuple[list[Redraw], bool]:
        """The batch's calls weighed against their profiles' Agent SDK credit (in its
        transaction): profiles whose terms changed (a hello's plan, say) are drawn again whole."""
        profiles = {(node, p.name) for p in hello.profiles} if hello is not None else set()
        profiles |= {
            (new.machine, new.profile)
            for _, new in changes
            if new.profile is not None and new.agent is Agent.CLAUDE_CODE
        }
        if not profiles:
            return [], False
        redrawn = self._credit.settle(
            self._db, sorted(profiles), self._machine_calls, self._pruned_before
        )
        redraws, stale = self._credit.on_changes(self._db, changes, prices, self._call, redrawn)
        self.rollup_writes.note_cells(self._credit.touched)
        self._credit.touched.clear()
        return redraws, bool(redrawn) or stale

    def _call(self, event_id: str) -> tuple[UsageEvent, Price] | None:
        row = self._db.execute(
            "SELECT payload, amount, estimated FROM usage WHERE event_id = ? AND counted = 1",
            (event_id,),
        ).fetchone()
        if row is None:
            return None
        return self._payloads.decode(row[0]), stored_price(row[1], row[2])

    def _machine_calls(
        self, machine: str, profile: str, since: float
    ) -> Iterator[tuple[UsageEvent, Price]]:
        """The counted calls of `machine` since `since` in the sessions where `profile` made
        calls (the roll-ups name them; its calls are still to be told apart by their payload):
        the others' payloads are not decoded (a first draw on a large store took seconds per
        profile)."""
        rows = self._db.execute(
            "SELECT payload, amount, estimated FROM usage WHERE counted = 1 AND machine = ? "
            "AND ts >= ? AND session_id IN (SELECT session_id FROM rollup WHERE machine = ? "
            "AND profile = ? AND quarter >= ?) ORDER BY ts, event_id",
            (machine, since, machine, profile, int(since // QUARTER_S)),
        ).fetchall()
        for payload, amount, estimated in rows:
            yield self._payloads.decode(payload), stored_price(amount, estimated)

    # ---- the Agent SDK credit -------------------------------------------------------------

    def use_subscriptions(self, settings: Sequence[SubscriptionSettings]) -> bool:
        """Draw the credit under these `[[subscriptions]]` settings: every profile whose terms
        changed (and, on a store that kept none yet, every one) is drawn again whole. True when
        one was: the figures must be reloaded from the roll-ups."""
        with self._transaction():
            self._credit.settings = tuple(settings)
            redrawn = self._credit.settle(
                self._db,
                self._credit.all_profiles(self._db),
                self._machine_calls,
                self._pruned_before,
            )
        self.rollup_writes.note_cells(self._credit.touched)
        self._credit.touched.clear()
        return bool(redrawn)

    def credit_moves(self) -> dict[str, Moved]:
        """Event id -> what the Agent SDK credit moved out of subscription_included of it (the
        calls it moved anything of)."""
        return self._credit.moves(self._db)

    def credit_minute_moves(self, since: float) -> list[tuple[int, str, str, bool, Moved]]:
        """What the Agent SDK credit moved of each call since `since`, by minute (the run rate
        at start-up: `Ledger.load`)."""
        return self._credit.minute_moves(self._db, since)

    def credit_call_moves(
        self, db: sqlite3.Connection, since: float, until: float
    ) -> list[CallMove]:
        """What the Agent SDK credit moved of each call with since <= ts < until, read on `db`
        (a reader's snapshot): the outcome views class calls by it."""
        return self._credit.call_moves(db, since, until)

    def credit_terms(self, machine: str, profile: str) -> CreditTerms | None:
        """A profile's Agent SDK credit terms (None: it has no credit)."""
        return self._credit.terms(self._db, machine, profile)

    def credit_month(
        self, machine: str, profile: str, month: str, terms: CreditTerms
    ) -> CreditMonth:
        """A profile's month of the credit, as drawn."""
        return self._credit.month(self._db, machine, profile, month, terms)

    def credit_months_between(
        self, machine: str, profile: str, first: date, last: date
    ) -> list[str]:
        """The months of a profile's credit rows with calls on UTC days `first` to `last`."""
        return self._credit.months_between(self._db, machine, profile, first, last)

    def _touch_node(self, node: str, hello: NodeHello | None, now: float) -> None:
        self._db.execute(
            "INSERT INTO nodes (node, first_seen, last_seen) VALUES (?, ?, ?) "
            "ON CONFLICT (node) DO UPDATE SET last_seen = max(coalesce(last_seen, ?), ?)",
            (node, now, now, now, now),
        )
        if hello is not None:
            self._db.execute(
                "UPDATE nodes SET version = ?, boot_time = ?, os = ?, cpu_count = ? WHERE node = ?",
                (hello.version, hello.boot_time, hello.os, hello.cpu_count, node),
            )

    def _announce(self, node: str, hello: NodeHello, now: float) -> bool:
        """Record the node's profiles; True when one of them now bills differently (a profile
        not announced before counted as API)."""
        known = {
            name: Billing(billing)
            for name, billing in self._db.execute(
                "SELECT name, billing FROM profiles WHERE node = ?", (node,)
            )
        }
        changed = False
        for p in hello.profiles:
            changed |= known.get(p.name, Billing.API) != p.billing
            self._db.execute(
                "INSERT INTO profiles (node, name, agent, billing, account, plan, first_seen, "
                "last_announced) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (node, name) DO UPDATE SET agent = excluded.agent, "
                "billing = excluded.billing, account = excluded.account, plan = excluded.plan, "
                "last_announced = excluded.last_announced",
                (node, p.name, p.agent.value, p.billing.value, p.account, p.plan, now, now),
            )
        return changed

    def _accounts(self, node: str) -> dict[str, str]:
        return {
            name: account
            for name, account in self._db.execute(
                "SELECT name, account FROM profiles WHERE node = ? AND account IS NOT NULL",
                (node,),
            )
        }

    @staticmethod
    def _attribute(
        event: UsageEvent, blob: bytes | None, node: str, accounts: dict[str, str]
    ) -> tuple[UsageEvent, bytes | None]:
        """The authenticated node is the machine; a missing account comes from the profile.
        Returns the event to file and its packed form when that is still `blob` (else None)."""
        account = event.account
        if account is None and event.profile is not None:
            account = accounts.get(event.profile)
        if event.machine == node and account == event.account:
            return event, blob  # the common case: skip the copy and the re-pack
        return msgspec.structs.replace(event, machine=node, account=account), None

    def _upsert_usage(
        self, usage: list[tuple[UsageEvent, bytes | None]], node: str, now: float
    ) -> tuple[list[Change], list[tuple[Price | None, Price]], int, list[tuple[str, str]]]:
        """Store the new revisions; returns (changes, their prices (old, new), ignored,
        foreign: (id, owner) of events another node stored first, left untouched)."""
        latest: dict[str, tuple[UsageEvent, bytes | None]] = {}
        for item in usage:  # a batch may carry several revisions of one call: keep the highest
            current = latest.get(item[0].event_id)
            if current is None or item[0].revision > current[0].revision:
                latest[item[0].event_id] = item
        stored = self._stored_revisions(list(latest))
        changes: list[Change] = []
        prices: list[tuple[Price | None, Price]] = []
        foreign: list[tuple[str, str]] = []
        rows: list[tuple[Any, ...]] = []
        deltas = RollupDeltas(minutes_since=now - MINUTE_KEEP_S)
        for event_id, (event, blob) in latest.items():
            old = stored.get(event_id)
            if old is not None and old.machine != node:
                foreign.append((event_id, old.machine))
                continue
            if old is not None and old.revision >= event.revision:
                continue
            replaced = None
            if old is not None:
                replaced = self._payloads.decode(old.payload)
                deltas.add(replaced, old.price, -1)  # what it added, at the price it was stored
            changes.append((replaced, event))
            amount, estimated = price = self._price(event)
            prices.append((None if old is None else old.price, price))
            deltas.add(event, price, 1)
            rows.append(
                (
                    event_id,
                    event.revision,
                    int(event.counts),
                    event.ts,
                    event.machine,
                    event.session_id,
                    amount_text(amount),
                    int(estimated),
                    self._payloads.encode(pack(event) if blob is None else blob),
                )
            )
        self._db.executemany(_UPSERT_USAGE, rows)
        deltas.write(self._db)
        self.rollup_writes.note(deltas)
        self._payloads.train()
        return changes, prices, len(usage) - len(changes) - len(foreign), foreign

    def _stored_revisions(self, ids: list[str]) -> dict[str, _Stored]:
        found: dict[str, _Stored] = {}
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for event_id, revision, machine, payload, amount, estimated in self._db.execute(
                "SELECT event_id, revision, machine, payload, amount, estimated FROM usage "
                f"WHERE event_id IN ({marks})",
                chunk,
            ):
                found[event_id] = _Stored(
                    revision, machine, payload, stored_price(amount, estimated)
                )
        return found

    def _insert_limits(
        self, events: Sequence[Event], node: str, accounts: dict[str, str], now: float
    ) -> tuple[list[LimitEvent], int]:
        added: list[LimitEvent] = []
        ignored = 0
        for event in events:
            if not isinstance(event, LimitEvent):
                continue
            account = event.account
            if account is None and event.profile is not None:
                account = accounts.get(event.profile)
            event = msgspec.structs.replace(event, machine=node, account=account)
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO limits (event_id, ts, machine, profile, account, agent, "
                "kind, received, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.ts,
                    node,
                    event.profile,
                    account,
                    event.agent.value,
                    event.kind.value,
                    now,
                    pack(event),
                ),
            )
            if cursor.rowcount:
                added.append(event)
            else:
                ignored += 1
        return added, ignored

    def _insert_profile_events(
        self, events: Sequence[Event], node: str, now: float
    ) -> tuple[list[ProfileEvent], int]:
        added: list[ProfileEvent] = []
        ignored = 0
        for event in events:
            if not isinstance(event, ProfileEvent):
                continue
            event = msgspec.structs.replace(event, machine=node)
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO profile_events (event_id, ts, machine, profile, agent, "
                "state, received, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.event_id,
                    event.ts,
                    node,
                    event.profile,
                    event.agent.value,
                    event.state.value,
                    now,
                    pack(event),
                ),
            )
            if cursor.rowcount:
                added.append(event)
            else:
                ignored += 1
        return added, ignored

    # ---- reading ------------------------------------------------------------------------

    def stream_seq(self, node: str, stream: str) -> int | None:
        """The last seq of the latest batch committed for (node, stream), or None before the
        first (for diagnostics: storing goes by event id, never by this)."""
        row = self._db.execute(
            "SELECT seq FROM streams WHERE node = ? AND stream = ?", (node, stream)
        ).fetchone()
        return int(row[0]) if row else None

    def usage_events(
        self, since: float | None = None, until: float | None = None, *, counted_only: bool = False
    ) -> Iterator[UsageEvent]:
        """Kept usage events with since <= ts < until, in time order: counted and retracted
        ones (unless `counted_only`), machine and account as filed at ingest."""
        where, params = _time_range(since, until)
        if counted_only:
            where.append("counted = 1")
        for (payload,) in self._select("usage", where, params):
            yield self._payloads.decode(payload)

    def profile_calls(
        self, machine: str, profile: str, since: float, until: float
    ) -> Iterator[tuple[UsageEvent, Decimal | None]]:
        """A profile's counted calls with since <= ts < until and the API-equivalent price
        each was stored at (None: unknown), in (time, event id) order."""
        rows = self._db.execute(
            "SELECT amount, payload FROM usage WHERE counted = 1 AND machine = ? AND ts >= ? "
            "AND ts < ? ORDER BY ts, event_id",
            (machine, since, until),
        )
        for amount, payload in rows:
            event = self._payloads.decode(payload)
            if event.profile == profile:
                yield event, None if amount is None else Decimal(amount)

    def start_of_latest_calls(self, since: float, count: int) -> float:
        """The time from which at most about `count` counted calls since `since` remain (ties
        at that instant all count): a reader can then stream them instead of keeping them."""
        row = self._db.execute(
            "SELECT ts FROM usage WHERE counted = 1 AND ts >= ? ORDER BY ts DESC LIMIT 1 OFFSET ?",
            (since, max(count - 1, 0)),
        ).fetchone()
        return since if row is None else max(since, float(row[0]))

    def session_usage(self, session_id: str) -> list[UsageEvent]:
        """A session's counted calls (its own id, and subagent calls filed under it), by time."""
        rows = self._db.execute(
            "SELECT payload FROM usage WHERE session_id = ? AND counted = 1 ORDER BY ts, event_id",
            (session_id,),
        )
        return [self._payloads.decode(payload) for (payload,) in rows]

    def session_spend(self, since: float) -> Iterator[tuple[float, str, Decimal | None]]:
        """(ts, session id, API-equivalent amount as stored; None: unknown) of each counted
        call since `since`, undecoded: the sessions' run-rates at start-up."""
        rows = self._db.execute(
            "SELECT ts, session_id, amount FROM usage WHERE ts >= ? AND counted = 1", (since,)
        )
        for ts, session_id, amount in rows:
            yield ts, session_id, None if amount is None else Decimal(amount)

    def priced_usage(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[tuple[UsageEvent, Decimal | None, bool]]:
        """Counted calls with since <= ts < until in time order, each with its API-equivalent
        amount as priced when stored (None: unknown) and whether that price is estimated."""
        where, params = _time_range(since, until)
        where.append("counted = 1")
        sql = f"SELECT payload, amount, estimated FROM usage WHERE {' AND '.join(where)}"
        for payload, amount, estimated in self._db.execute(sql + " ORDER BY ts, event_id", params):
            event = self._payloads.decode(payload)
            yield event, None if amount is None else Decimal(amount), bool(estimated)

    def limit_events(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[LimitEvent]:
        where, params = _time_range(since, until)
        for (payload,) in self._select("limits", where, params):
            event = unpack(payload)
            assert isinstance(event, LimitEvent)
            yield event

    def profile_events(
        self, since: float | None = None, until: float | None = None
    ) -> Iterator[ProfileEvent]:
        where, params = _time_range(since, until)
        for (payload,) in self._select("profile_events", where, params):
            event = unpack(payload)
            assert isinstance(event, ProfileEvent)
            yield event

    def _select(self, table: str, where: list[str], params: list[float]) -> Iterator[tuple[bytes]]:
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        # ORDER BY event_id after ts: a stable order for equal times, so reads are repeatable.
        sql = f"SELECT payload FROM {table}{clause} ORDER BY ts, event_id"
        yield from self._db.execute(sql, params)

    def rollup(
        self,
        tz: tzinfo,
        keys: Sequence[str] = tuple(READABLE),
        since: float | None = None,
        until: float | None = None,
    ) -> Iterator[Cell]:
        """The roll-ups from `since` to `until`, summed by local day in `tz` and `keys` (see
        `hub._rollup.read_cells`): every day, pruned or not."""
        return read_cells(self._db, tz, keys, since, until)

    def rollup_minutes(self, since: float) -> Iterator[MinuteCell]:
        """Per-minute sums since `since` (kept for the last `MINUTE_KEEP_S`)."""
        return read_minutes(self._db, since)

    # ---- re-pricing -----------------------------------------------------------------------

    def use_prices(self, book: PriceBook) -> None:
        """Store new calls at `book`'s prices; `reprice` brings the kept ones to it."""
        self._price.use(book)

    def reprice(self, *, step: int = REPRICE_STEP) -> tuple[int, bool]:
        """Bring the kept raw rows to this store's price tables when they differ from those
        the rows were priced under (a corrected table, say): `step` rows per call, in one
        transaction with the roll-ups' deltas. Returns (rows whose price changed, whether
        every row is now priced under these tables). Pruned days keep their old prices."""
        prices = self._price.fingerprint()
        after: list[Callable[[], None] | None] = []
        with self._transaction():
            meta = dict(self._db.execute("SELECT key, value FROM meta"))
            if meta.get("prices") == prices:
                return 0, True
            start = int(meta.get("reprice_from", 0))
            rows = self._db.execute(
                "SELECT rowid, amount, estimated, payload FROM usage WHERE rowid > ? "
                "ORDER BY rowid LIMIT ?",
                (start, step),
            ).fetchall()
            deltas = RollupDeltas(minutes_since=time.time() - MINUTE_KEEP_S)
            changed = []
            repriced = []
            for rowid, amount, estimated, payload in rows:
                event, old = self._payloads.decode(payload), stored_price(amount, estimated)
                new = self._price(event)
                if new != old:
                    deltas.add(event, old, -1)
                    deltas.add(event, new, 1)
                    changed.append((amount_text(new[0]), int(new[1]), rowid))
                    repriced.append((event, old, new))
            self._db.executemany(
                "UPDATE usage SET amount = ?, estimated = ? WHERE rowid = ?", changed
            )
            outcome_rollup.on_reprice(self._db, repriced)
            self._credit.on_reprice(self._db, repriced, self._call)
            deltas.write(self._db)
            self.rollup_writes.note(deltas)
            self.rollup_writes.note_cells(self._credit.touched)
            self._credit.touched.clear()
            done = len(rows) < step
            self._set_meta(("prices", prices) if done else ("reprice_from", rows[-1][0]))
            if done:
                self._db.execute("DELETE FROM meta WHERE key = 'reprice_from'")
            if repriced:  # in this transaction: what follows the new prices commits with them
                now = time.time()
                after = [hook(self._db, now) for hook in self._reprice_hooks]
        for then in after:
            if then is not None:
                then()
        return len(changed), done

    def _set_meta(self, item: tuple[str, object]) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            item,
        )

    # ---- retention ----------------------------------------------------------------------

    def prune(self, before: float, now: float, *, step: int = PRUNE_STEP) -> int:
        """Delete at most `step` raw events (usage, limits, profile events) older than
        `before`, and minute sums older than `MINUTE_KEEP_S` before `now`; then hand back up to
        `VACUUM_PAGES` free pages. The roll-ups stay. Returns the rows deleted: call again
        while it returns `step` (each call is one short transaction). From then on, events
        older than `before` are not stored (see `ingest`)."""
        deleted = 0
        with self._transaction():
            if before > self._pruned_before:
                self._set_meta(("pruned_before", before))
                outcome_rollup.on_prune(self._db, before)
            for table in ("usage", "limits", "profile_events"):
                left = step - deleted
                if left <= 0:
                    break
                deleted += self._db.execute(
                    f"DELETE FROM {table} WHERE rowid IN "
                    f"(SELECT rowid FROM {table} WHERE ts < ? ORDER BY ts LIMIT ?)",
                    (before, left),
                ).rowcount
            self._db.execute(
                "DELETE FROM rollup_minute WHERE minute < ?",
                (int((now - MINUTE_KEEP_S) // 60),),
            )
        self._pruned_before = max(self._pruned_before, before)
        # executescript steps the pragma to its end (it frees a page a step; `execute` steps
        # it once), and commits nothing of ours: the store is in autocommit between batches
        self._db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
        return deleted

    def nodes(self) -> list[NodeRecord]:
        rows = self._db.execute(
            "SELECT node, first_seen, last_seen, version, boot_time, os, cpu_count "
            "FROM nodes ORDER BY node"
        )
        return [NodeRecord(*row) for row in rows]

    def profiles(self) -> list[ProfileRecord]:
        rows = self._db.execute(
            "SELECT node, name, agent, billing, account, plan, first_seen, last_announced "
            "FROM profiles ORDER BY node, name"
        )
        return [
            ProfileRecord(node, name, Agent(agent), Billing(billing), account, plan, first, last)
            for node, name, agent, billing, account, plan, first, last in rows
        ]

    def billing(self) -> dict[tuple[str, str], Billing]:
        """(node, profile) → billing, for the ledger's `billing_of`."""
        return {(p.node, p.name): p.billing for p in self.profiles()}

    # ---- audit --------------------------------------------------------------------------

    def audit(self, who: str, action: str, target: str, result: str, ts: float) -> int:
        """Record an operator or governor action (pause, resume, kill, ...); returns its id."""
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO audit (ts, who, action, target, result) VALUES (?, ?, ?, ?, ?)",
                (ts, who, action, target, result),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        """The latest `limit` audit records, newest first."""
        rows = self._db.execute(
            "SELECT id, ts, who, action, target, result FROM audit ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [AuditRecord(*row) for row in rows]


def _file_outcomes(
    db: sqlite3.Connection,
    changes: Sequence[Change],
    prices: Sequence[tuple[Price | None, Price]],
    limits: Sequence[LimitEvent],
    now: float,
    redraws: Sequence[Redraw],
    redrawn: bool,
) -> None:
    outcome_rollup.on_ingest(db, changes, prices)


# Times past this (the year 3000) are damage: the feed and the ledger cannot turn them into
# dates (OverflowError past the year 9999), and one stopped a whole batch's accounting.
LAST_TIME: Final = 32_503_680_000.0


def _unstorable(event: Event) -> str | None:
    """Why `event` cannot be stored, or None."""
    if not math.isfinite(event.ts):
        return f"time {event.ts!r} is not a finite number"
    until = event.resets_at if isinstance(event, LimitEvent) else None
    if isinstance(event, ProfileEvent):
        until = event.until
    for when in (event.ts, until):
        if when is not None and not 0 <= when <= LAST_TIME:
            return f"time {when!r} is out of range (the epoch to the year 3000)"
    if isinstance(event, UsageEvent) and not 0 <= event.revision <= MAX_REVISION:
        return f"revision {event.revision!r} is out of range (0..{MAX_REVISION})"
    return None


def _time_range(since: float | None, until: float | None) -> tuple[list[str], list[float]]:
    where: list[str] = []
    params: list[float] = []
    if since is not None:
        where.append("ts >= ?")
        params.append(since)
    if until is not None:
        where.append("ts < ?")
        params.append(until)
    return where, params
