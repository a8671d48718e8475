"""The hub's one façade: what the TUI, the CLI (and later REST and MCP) all call.

It owns the store and the ledger behind one lock: the receiver thread writes through
`handle_batch`, readers take consistent snapshots, and commands go out through the
`Commander` and are written to the audit log with their outcome. Subscribers are told about
every change (new usage, limit hits, profile events, node state changes, command outcomes) on
the thread that made it; a UI marshals them onto its own loop.

At start the figures load from the store's roll-ups on a thread of their own while the
receiver already acks (see `_load`). After that, the ledger is applied on the receiver thread,
before the ack, not on a thread of its own:
measured on the fleet bench (bench/fleet.py, part 3), a ledger thread made ingest slower
(14-16k against 17k events/s), as both threads run Python under the one GIL and the handoffs
at every SQLite call cost more than the overlap with SQLite's own time brought.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from typing import Any, Final, Literal

from hub._counted_log import CountedLog
from hub._feed import FeedItem as FeedItem  # the screens take it from here
from hub._feed import FeedWords
from hub._node_news import PAUSE_MEMORY, PauseBook, hello_news, pause_target
from hub._rollup import MINUTE_KEEP_S
from hub._runrate import MinutePoint
from hub._sessions import RECENT_S, SessionNames, session_key
from hub._subscribers import Subscribers
from hub._totals import ZERO, Basis, Totals
from hub.commander import Commander
from hub.config import DEFAULT_RETAIN_DAYS
from hub.credit_meters import CreditMeters
from hub.credit_settings import SubscriptionSettings
from hub.ledger import FLEET, Dimension, Ledger, Period, Scope, SessionFigures, profile_key
from hub.model import AuditRecord, IngestResult, NodeRecord, NodeState, ProfileRecord
from hub.outcomes import OutcomeKeeper
from hub.profile_board import ProfileBoard, ProfileStanding, WindowReading
from hub.report import ReportCache, build_hub_report
from hub.session_series import SessionSeries, roll_up_line, rolled_up_cells, spend_series
from hub.source import Connection
from hub.store import PRUNE_STEP, Store
from pricing import PriceBook
from pricing.outcomes import check_outcome_keys
from shared.codec import DecodeError, unpack
from shared.config import Billing
from shared.events import Event, LimitEvent, ProfileEvent
from shared.hello import NodeHello, ProcessInfo, hello_from_map
from shared.outcomes import SessionOutcome
from shared.session_notes import MAX_NOTES, SessionNote, note_to_map
from shared.session_rates import RUN_RATE_WINDOW
from shared.verdicts import Verdict, bounded
from shared.wire import Frame, parse_batch_body

log = logging.getLogger(__name__)

FEED_SIZE: Final = 500
PRUNE_BUDGET_S: Final = 0.2  # time `prune` may take per call (in steps of PRUNE_STEP rows)
PRUNE_REST_S: Final = 60.0  # after pruning all it could: a minute's events are all it can gain
PROFILE_MEMORY_S: Final = 8 * 86400.0  # limit and profile events read back at start (a week+)
REPORT_CACHE_KIB: Final = 8 * 1024  # a report's own connection: it reads each roll-up page once
Action = Literal["pause", "resume", "kill", "interrupt"]
# How long an operator waits for a node's answer: pause and resume take milliseconds on the
# node, so silence for a second means the node is not answering; a kill waits out the agent's
# SIGTERM grace (2 s) and the SIGKILL (up to 2 s) before it answers; an interrupt waits up to
# 3 s for Codex's rollout to record the aborted turn, then ends the shells it left running.
ANSWER_WITHIN: Final[dict[str, float]] = {
    "pause": 1.0,
    "resume": 1.0,
    "kill": 6.0,
    "interrupt": 6.0,
}
EMBEDDED: Final = Connection("embedded hub")


@dataclass(frozen=True, slots=True)
class NodeView:
    record: NodeRecord
    state: NodeState
    hello: NodeHello | None


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What became of a command: `outcome` is the node's word, or "no answer"."""

    ok: bool
    outcome: str
    detail: str
    node: str
    pid: int
    pids: tuple[int, ...] = ()


@dataclass(slots=True)
class Update:
    """What a subscriber is told: the pieces that changed, for incremental updates."""

    usage: int = 0  # usage events added or superseded
    machines: set[str] = field(default_factory=set)
    profiles: set[str] = field(default_factory=set)  # "machine/profile" keys
    sessions: set[str] = field(default_factory=set)  # session rows (root session ids)
    feed: list[FeedItem] = field(default_factory=list)
    nodes_changed: bool = False
    alerts: bool = False  # the alert outbox changed (raised, acknowledged, delivered, ...)


Subscriber = Callable[[Update], None]
VerdictProvider = Callable[[str], list[Verdict]]  # node name -> the verdicts concerning it
# Told each committed batch's `IngestResult` (the detectors): the calls themselves, which an
# `Update` only names.
BatchListener = Callable[[IngestResult], None]


class FleetService:
    def __init__(
        self,
        store: Store,
        book: PriceBook,
        *,
        stale_after: float = 15.0,
        tz: tzinfo | None = None,
        commander: Commander | None = None,
        clock: Callable[[], float] = time.time,
        retain_days: int = DEFAULT_RETAIN_DAYS,
        verdicts: VerdictProvider | None = None,
        subscriptions: Sequence[SubscriptionSettings] = (),
    ) -> None:
        self._store = store
        # the calls of each Claude subscription drawn against its Agent SDK credit under the
        # config's terms (at the first start after an upgrade, or a change of terms, this
        # draws the kept calls again: before the figures load, which read the result)
        store.use_subscriptions(subscriptions)
        # The budget verdicts for a node's machine, profiles and sessions, sent in its acks
        # (None: no budgets; the governor plugs in here).
        self.verdicts = verdicts
        # The detectors' findings on the node's sessions, sent in its acks (explain_spend).
        self.notes: Callable[[str], list[SessionNote]] | None = None
        self._report_cache = ReportCache(store.rollup_writes)  # past days' sums, kept
        self.retain_days = retain_days
        self._prune_rest_until = 0.0  # monotonic time before which `prune` has nothing to do
        self._repriced = False  # every kept call is priced under this hub's tables
        self._reprice_changes = 0  # calls whose price `reprice` changed so far
        self._book = book
        self.stale_after = stale_after
        self.commander = commander
        self.clock = clock
        self._lock = threading.RLock()
        self._billing = store.billing()
        self._tz = tz or UTC
        self.ledger = self._new_ledger()  # empty until `_load` has filled one
        self.board = ProfileBoard()
        self._restore_board()
        self._hellos: dict[str, NodeHello] = {}
        self.pauses = PauseBook(store.audit_log(PAUSE_MEMORY))  # who paused what, and when
        self._states: dict[str, NodeState] = {
            n.node: n.state(clock(), stale_after) for n in store.nodes()
        }
        self._sessions: set[str] = set()  # session rows known (the loaded ones join)
        self._names = SessionNames()
        self.feed: deque[FeedItem] = deque(maxlen=FEED_SIZE)  # in the order things happened
        self._words = FeedWords(self.ledger.tz)
        self._subscribers = Subscribers[Update]()
        self._batch_listeners = Subscribers[IngestResult]()
        self.bad_events = 0
        # Counted per node, logged at most once a minute each: one frame may carry 60,000.
        self._undecodable = CountedLog(log, "undecodable events")
        self._bad_hellos = CountedLog(log, "malformed hellos")
        self._refused = CountedLog(log, "events the store refused")
        self._foreign = CountedLog(log, "events another node stored first")
        self._told_too_old: set[str] = set()  # nodes whose events older than the edge were told
        self.batches = 0
        self.events_in = 0
        self.api_url: str | None = None  # where this hub's API serves, once it does
        # The ledger loads from the roll-ups on a thread of its own, so that the receiver can
        # ack at once: batches committed meanwhile wait in `_pending` (their changes are not in
        # the snapshot the load reads), and every reader of the figures waits for `_loaded`.
        self._loaded = threading.Event()
        self._settled = threading.Event()  # no load running (a reload keeps the old figures)
        self._pending: list[IngestResult] | None = None
        self._closed = False  # the store is closing: a load that ends now leaves it be
        # what the nodes say their sessions produced (commits, pull requests)
        self.outcomes = OutcomeKeeper(store, self._lock, self._tz)
        # each Claude subscription's Agent SDK credit this month (`subscriptions`: the config's)
        self.credit_meters = CreditMeters(store.snapshot, self.profiles, subscriptions, clock=clock)
        self._start_load()

    def _start_load(self) -> None:
        """Load the figures afresh on a thread (at start; when a profile's billing changes
        every cost class may move). Readers keep the figures they had meanwhile."""
        snapshot = ExitStack()
        reader = snapshot.enter_context(self._store.snapshot())
        self._pending = []
        self._settled.clear()
        threading.Thread(
            target=self._load, args=(snapshot, reader), name="ledger-load", daemon=True
        ).start()

    def _new_ledger(self) -> Ledger:
        return Ledger(
            self._book,
            lambda machine, profile: self._billing.get((machine, profile or "")) or Billing.API,
            self._tz,
            self.clock,
        )

    def _load(self, snapshot: ExitStack, reader: Store) -> None:
        ledger = self._new_ledger()
        try:
            with snapshot:
                self._fill(ledger, reader)
        except Exception:  # the hub keeps collecting; its figures then start from empty
            log.exception("could not load the figures from the store's roll-ups")
        with self._lock:
            if self._closed:  # the hub stopped meanwhile (it could not listen, say)
                self._settled.set()
                return
            pending, self._pending = self._pending or [], None
            self.ledger = ledger
            if any(result.billing_changed or result.credit_redrawn for result in pending):
                self._billing = self._store.billing()
                self._fill(ledger, self._store)  # the store has those batches too
            else:
                for result in pending:
                    ledger.apply_all(result.changes, result.prices, result.redraws)
            self._sessions.update(ledger.sessions.keys())
            for row in ledger.sessions.active_since(0.0):
                if row.profile is not None:
                    self.board.note_call(row.machine, row.profile, row.last_ts)
            change = self._all_changed(sum(len(r.changes) for r in pending))
            self._loaded.set()
            self._settled.set()
        self._publish(change)

    def _all_changed(self, usage: int) -> Update:
        """An update that has every row redrawn (the figures were loaded or reloaded)."""
        return Update(
            usage=usage,
            machines={n.node for n in self._store.nodes()},
            profiles={profile_key(p.node, p.name) for p in self._store.profiles()},
            sessions=set(self.ledger.sessions.keys()),
            nodes_changed=True,
        )

    def _fill(self, ledger: Ledger, source: Store) -> None:
        """`ledger` from `source`'s roll-ups (sums, not events: fast at any store size)."""
        horizon = ledger.horizon()
        ledger.load(
            source.rollup(ledger.tz, since=horizon),
            source.rollup_minutes(since=horizon),
            # a minute more: the rate's window starts at a minute's start before now
            source.usage_events(since=self.clock() - RECENT_S - 60, counted_only=True),
            source.session_spend(since=self.clock() - RUN_RATE_WINDOW - 60),
            # (minute rows are kept a day: no move before that can be in the run rate)
            source.credit_minute_moves(since=max(horizon, self.clock() - MINUTE_KEEP_S)),
        )

    def use_subscriptions(self, settings: Sequence[SubscriptionSettings]) -> None:
        """Draw the Agent SDK credits under new `[[subscriptions]]` settings: the profiles whose
        terms changed are drawn again whole, then the figures reload."""
        self.wait_settled()
        with self._lock:
            changed = self._store.use_subscriptions(settings)
            self.credit_meters.settings = tuple(settings)
            if changed:
                self._start_load()
        self.credit_meters.forget()

    def close(self) -> None:
        """Before the store closes: a figures load still running ends without using it."""
        with self._lock:
            self._closed = True

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Wait until the figures are loaded (readers of the ledger do); False on a timeout."""
        return self._loaded.wait(timeout)

    def wait_settled(self, timeout: float | None = None) -> bool:
        """Wait until no load of the figures runs: after a profile's billing changed, the
        figures are loaded again on a thread and readers see the ones from before until it
        ends (with the batches that arrived meanwhile). False on a timeout."""
        return self._settled.wait(timeout)

    # -- the write path (receiver thread) ----------------------------------------------------

    def handle_batch(self, frame: Frame) -> dict[str, Any]:
        """Commit one verified batch; returns the ack body. A malformed body raises
        `shared.wire.FrameError` (a ValueError), which the receiver counts."""
        body = parse_batch_body(frame.body)
        events: list[Event] = []
        packed: list[bytes] = []  # as received: the store keeps these bytes, not a re-pack
        bad: list[DecodeError] = []
        for blob in body["events"]:
            try:
                events.append(unpack(blob))
            except DecodeError as exc:
                # One bad event never costs the batch (else the node would re-send it forever).
                bad.append(exc)
                continue
            packed.append(blob)
        if bad:
            self.bad_events += len(bad)
            self._undecodable.note(frame.node, len(bad), str(bad[0]))
        hello: NodeHello | None = None
        if body.get("hello") is not None:
            try:
                hello = hello_from_map(body["hello"])
            except DecodeError as exc:
                self._bad_hellos.note(frame.node, 1, str(exc))
        result = self.ingest(
            frame.node, body["stream"], body["seq0"], body["seq1"], events, hello, packed=packed
        )
        if result.rejected:
            event_id, why = result.rejected[0]
            self._refused.note(frame.node, len(result.rejected), f"{event_id!r}: {why}")
        owners: dict[str, list[str]] = {}
        for event_id, owner in result.foreign:
            owners.setdefault(owner, []).append(event_id)
        for owner, ids in owners.items():
            example = f"{ids[0]!r}, which belongs to {owner!r}"
            self._foreign.note(frame.node, len(ids), example, about=owner)
        if body.get("outcomes"):
            self.outcomes.handle(frame.node, body["outcomes"])  # committed before the ack
        return {"seq1": body["seq1"], **self._verdicts_for(frame.node)}

    def _verdicts_for(self, node: str) -> dict[str, Any]:
        """The ack's verdicts for `node` ("v", bounded) and the detectors' notes on its sessions
        ("f"); left out when there are none (the node reads a missing list as empty, and an ack
        stays as small as it was). A failing provider costs its part, never the ack (the batch
        is committed by now)."""
        extra: dict[str, Any] = {}
        verdicts, notes = self.verdicts, self.notes
        try:
            if verdicts is not None and (given := bounded(verdicts(node))):
                extra["v"] = given
            if notes is not None and (noted := notes(node)[:MAX_NOTES]):
                extra["f"] = [note_to_map(n) for n in noted]
        except Exception:
            log.exception("the verdict or note provider failed for %s", node)
        return extra

    def note_bad_key(self, node: str) -> None:
        """Frames claiming to come from `node` fail authentication: say so in the feed (the
        receiver calls this once per node; the node itself only sees no answer)."""
        item = FeedItem(
            self.clock(), "auth", node, f"frames from {node} fail authentication: wrong key?"
        )
        with self._lock:
            self._add_to_feed([item])
        self._publish(Update(feed=[item]))

    def ingest(
        self,
        node: str,
        stream: str,
        seq0: int,
        seq1: int,
        events: list[Event],
        hello: NodeHello | None = None,
        *,
        packed: list[bytes] | None = None,
    ) -> IngestResult:
        """Commit one batch of decoded events from an authenticated `node` and tell the
        subscribers (what `handle_batch` does after checking the frame). `packed`: the events
        as received, for the store to keep."""
        now = self.clock()
        with self._lock:
            result = self._store.ingest(node, stream, seq0, seq1, events, hello, now, packed=packed)
            change = self._account(node, result, hello, now)
        if result.changes:
            self.credit_meters.touch()
        self._publish(change)
        self._tell_listeners(result)
        return result

    def _account(
        self, node: str, result: IngestResult, hello: NodeHello | None, now: float
    ) -> Update:
        change = Update(machines={node})
        self.batches += 1
        news: list[FeedItem] = []
        if hello is not None:
            previous = self._hellos.get(node)
            news = [
                FeedItem(now, "node", node, text)
                for text in hello_news(node, previous, hello, self.pauses, self.ledger.tz)
            ]
            self._hellos[node] = hello
        if self._states.get(node) is not NodeState.ONLINE:
            self._states[node] = NodeState.ONLINE
            change.nodes_changed = True
            change.feed.append(FeedItem(now, "node", node, f"{node} is online"))
        change.feed.extend(news)
        if result.too_old and node not in self._told_too_old:
            self._told_too_old.add(node)
            change.feed.append(FeedItem(now, "node", node, self._too_old_words(node)))
            log.warning("%s", change.feed[-1].text)
        if self._pending is not None:
            self._pending.append(result)  # the ledger is loading: applied once it has
        elif result.billing_changed or result.credit_redrawn:
            # not here: a month of sums takes a second or more, and the receiver acks
            self._billing = self._store.billing()
            self._start_load()
        else:
            self.ledger.apply_all(result.changes, result.prices, result.redraws)
        change.usage = len(result.changes)
        self.events_in += len(result.changes)
        # (machine, profile) -> its latest counted call in the batch: the board is told once
        latest: dict[tuple[str, str], float | None] = {}
        for _old, new in result.changes:
            key = session_key(new)
            change.sessions.add(key)
            if new.profile is not None:
                pair = (new.machine, new.profile)
                last = latest.get(pair)
                if new.counts and (last is None or new.ts > last):
                    latest[pair] = new.ts
                elif pair not in latest:
                    latest[pair] = None
            if key not in self._sessions and new.counts:
                self._sessions.add(key)
                where = new.project or "?"
                change.feed.append(
                    FeedItem(
                        new.ts,
                        "session",
                        node,
                        f"new {new.agent} session {self._names.name(key)} "
                        f"({new.profile or '?'}, {where})",
                    )
                )
        for (machine, profile), last in latest.items():
            change.profiles.add(profile_key(machine, profile))
            if last is not None:
                self.board.note_call(machine, profile, last)
        change.feed += self._words.limits_and_switches(
            node, result.limits, result.profile_events, self._previous_reading
        )
        for limit in result.limits:
            if (pkey := self.board.add_limit(limit)) is not None:
                change.profiles.add(pkey)
        for event in result.profile_events:
            change.profiles.add(self.board.add_profile_event(event))
        change.feed.sort(key=lambda item: item.ts)
        self._add_to_feed(change.feed)
        return change

    def _too_old_words(self, node: str) -> str:
        """Why a node's calls from before the retention edge count nowhere (said once per node:
        a node reading months of old logs sends them in many batches)."""
        edge = datetime.fromtimestamp(self._store.pruned_before, UTC).strftime("%Y-%m-%d %H:%M")
        return (
            f"{node} sends events from before {edge} UTC, which this hub does not store "
            f"(retain_days = {self.retain_days} in hub.toml; for older logs: node-agent scan)"
        )

    def _add_to_feed(self, items: list[FeedItem]) -> None:
        """Keep the feed in the order things happened (a node catching up tells older news)."""
        if items and self.feed and items[0].ts < self.feed[-1].ts:
            self.feed = deque(sorted([*self.feed, *items], key=_when), maxlen=FEED_SIZE)
        else:
            self.feed.extend(items)

    def _previous_reading(self, limit: LimitEvent) -> WindowReading | None:
        if limit.profile is None:
            return None
        return self.board.window(profile_key(limit.machine, limit.profile), limit.window)

    def _restore_board(self) -> None:
        since = self.clock() - PROFILE_MEMORY_S
        for limit in self._store.limit_events(since=since):
            self.board.add_limit(limit)
        for event in self._store.profile_events(since=since):
            self.board.add_profile_event(event)

    # -- upkeep: retention and re-pricing ----------------------------------------------------

    def maintain(self) -> None:
        """The store's upkeep, a small step at a time (call it every few seconds): prune old
        raw events, and re-price the kept ones when the price tables changed."""
        self.prune()
        self.reprice()

    def use_prices(self, book: PriceBook) -> None:
        """Price with `book` from now on (a table installed while the hub serves): new calls at
        once; the kept ones over the next upkeep rounds (`reprice`), then the figures reload."""
        with self._lock:
            self._book = book
            self._store.use_prices(book)
            self.ledger.use_prices(book)
            self._repriced = False
            self._reprice_changes = 0
        self.credit_meters.forget()

    def reprice(self, budget_s: float = PRUNE_BUDGET_S) -> int:
        """Bring the kept calls to the price tables (`Store.reprice`), for about `budget_s`
        at most per call; once all are, reload the figures if a price changed. Returns the
        calls whose price changed in this call."""
        if not self._loaded.is_set() or self._repriced:
            return 0
        changed = 0
        until = time.monotonic() + budget_s
        reloaded: Update | None = None
        while True:
            with self._lock:
                step, done = self._store.reprice()
                changed += step
                self._reprice_changes += step
                if done:
                    self._repriced = True
                    if self._reprice_changes:
                        log.info("%d stored calls re-priced", self._reprice_changes)
                        self._fill(self.ledger, self._store)
                        reloaded = self._all_changed(self._reprice_changes)
            if done or time.monotonic() >= until:
                break
        if reloaded is not None:
            self._publish(reloaded)
        return changed

    def prune(self, budget_s: float = PRUNE_BUDGET_S) -> int:
        """Prune raw events older than `retain_days`, a small step at a time, for about
        `budget_s` at most (call it every few seconds: once it has caught up it rests for
        `PRUNE_REST_S`); the lock is let go between steps, so a batch never waits for more
        than one. Returns the rows deleted."""
        start = time.monotonic()
        if start < self._prune_rest_until:
            return 0
        deleted = 0
        while True:
            now = self.clock()
            with self._lock:
                step = self._store.prune(now - self.retain_days * 86400.0, now)
            deleted += step
            if step < PRUNE_STEP:
                self._prune_rest_until = time.monotonic() + PRUNE_REST_S
                self.outcomes.prune(now - self.retain_days * 86400.0)
                return deleted
            if time.monotonic() >= start + budget_s:
                return deleted

    # -- liveness ----------------------------------------------------------------------------

    def check_nodes(self) -> None:
        """Note nodes that went stale or offline since the last check (call every few seconds)."""
        now = self.clock()
        change = Update()
        with self._lock:
            for record in self._store.nodes():
                state = record.state(now, self.stale_after)
                if self._states.get(record.node) is not state:
                    self._states[record.node] = state
                    change.nodes_changed = True
                    change.machines.add(record.node)
                    if state is not NodeState.ONLINE:
                        age = now - (record.last_seen or now)
                        item = FeedItem(
                            now,
                            "node",
                            record.node,
                            f"{record.node} is {state.value} (silent {age:.0f}s)",
                        )
                        change.feed.append(item)
            self._add_to_feed(change.feed)
        if change.nodes_changed:
            self._publish(change)

    # -- reading -----------------------------------------------------------------------------

    @property
    def tz(self) -> tzinfo:
        """The zone the figures' days are cut in."""
        return self.ledger.tz

    def connection(self) -> Connection:
        # Said so, because other dashboards can then attach to this one's hub.
        return Connection(f"embedded hub, api {self.api_url}") if self.api_url else EMBEDDED

    def nodes(self) -> list[NodeView]:
        now = self.clock()
        with self._lock:
            return [
                NodeView(r, r.state(now, self.stale_after), self._hellos.get(r.node))
                for r in self._store.nodes()
            ]

    def profiles(self) -> list[ProfileRecord]:
        with self._lock:
            return self._store.profiles()

    def paused_by(self, node: str, process: ProcessInfo) -> tuple[float, str] | None:
        """(when, who) of the pause that stopped `process`, from the audit log; None when the
        hub did not pause it (or does not remember)."""
        with self._lock:
            return self.pauses.of(node, process)

    def pause_holder(self, node: str, pid: int, create_time: float) -> tuple[float, str] | None:
        """(when, who) of the pause that holds that process now, from the audit log; None when
        it is not paused through this hub (never, or resumed or killed since)."""
        with self._lock:
            return self.pauses.holder(node, pid, create_time)

    def processes(self, node: str | None = None) -> list[tuple[str, ProcessInfo]]:
        """The agent processes each node reported with its last batch."""
        with self._lock:
            return [
                (name, process)
                for name, hello in sorted(self._hellos.items())
                if node is None or name == node
                for process in hello.processes
            ]

    def fleet(self, period: Period) -> Totals:
        self._loaded.wait()
        with self._lock:
            return self.ledger.fleet(period)

    def totals(self, dimension: Dimension, period: Period) -> dict[str | None, Totals]:
        self._loaded.wait()
        with self._lock:
            return self.ledger.totals(dimension, period)

    def total(self, dimension: Dimension, key: str | None, period: Period) -> Totals:
        self._loaded.wait()
        with self._lock:
            return self.ledger.total(dimension, key, period)

    def sessions(self, keys: Iterable[str] | None = None) -> list[SessionFigures]:
        """Snapshots of session rows (all kept ones when `keys` is None; unknown keys skipped)."""
        self._loaded.wait()
        with self._lock:
            book = self.ledger.sessions
            rows = (book.get(k) for k in (book.keys() if keys is None else keys))
            return [self._snapshot(row) for row in rows if row is not None]

    def session_run_rate(self, key: str) -> Decimal | None:
        """Session `key`'s dollars an hour over the last hour (None: not a kept session)."""
        self._loaded.wait()
        with self._lock:
            return self.ledger.session_run_rate(key, self.clock())

    def active_sessions(self, since: float) -> list[SessionFigures]:
        self._loaded.wait()
        with self._lock:
            return [self._snapshot(row) for row in self.ledger.sessions.active_since(since)]

    def session_label(self, key: str) -> str:
        """The short id the dashboard shows for session `key`, unlike any other's."""
        with self._lock:
            return self._names.name(key)

    def _snapshot(self, row: SessionFigures) -> SessionFigures:
        return dataclasses.replace(
            row,
            main=row.main.copy(),
            subagents=row.subagents.copy(),
            recent=dict(row.recent),
            label=self._names.name(row.key),
        )

    def session_series(self, key: str, bins: int) -> SessionSeries:
        """A session's API-equivalent spend over its life in `bins` equal bins; on pruned
        days from the quarter-hour roll-ups."""
        self._loaded.wait()
        with self._lock:
            line = roll_up_line(self._store.pruned_before)
            cells = [] if line is None else rolled_up_cells(self._store.reading(), key, line)
            events = self._store.session_usage(key)
            priced = [
                (e.ts, self.ledger.price(e).api_equivalent or ZERO)
                for e in events
                if line is None or e.ts >= line  # before the line: counted in the cells
            ]
        return spend_series(cells, priced, bins, line)

    def credits(self) -> dict[str, dict[str, Any]]:
        """MACHINE/PROFILE -> its Agent SDK credit this month (`CreditMonth.to_json`), for
        each Claude subscription profile that has one."""
        return {k: m.to_json() for k, m in self.credit_meters.months().items()}

    def profile_standing(self, key: str) -> ProfileStanding:
        """Where the profile "machine/profile" stands now."""
        now = self.clock()
        self._loaded.wait()
        with self._lock:
            return self.board.standing(key, now)

    def profile_history(self, key: str) -> list[ProfileEvent]:
        with self._lock:
            return self.board.history(key)

    def burn_rate_per_hour(
        self, scope: Scope = FLEET, minutes: int = 15, basis: Basis = Basis.API_EQUIVALENT
    ) -> Decimal:
        self._loaded.wait()
        with self._lock:
            return self.ledger.burn_rate_per_hour(scope, minutes, basis)

    def first_call(self) -> float | None:
        """The earliest call the figures hold (what a rate or a projection can rest on)."""
        self._loaded.wait()
        with self._lock:
            return self.ledger.first_call

    def run_rate(self, scope: Scope = FLEET) -> list[MinutePoint]:
        self._loaded.wait()
        with self._lock:
            return list(self.ledger.run_rate(scope))

    def run_rate_bins(self, scope: Scope, bins: int) -> list[Decimal]:
        self._loaded.wait()
        with self._lock:
            return self.ledger.run_rate_bins(scope, bins)

    def recent_feed(self, limit: int = 100) -> list[FeedItem]:
        with self._lock:
            return list(self.feed)[-limit:]

    def report(
        self,
        by: Iterable[str],
        tz: tzinfo,
        since: date | None = None,
        until: date | None = None,
        *,
        lazy_rows: bool = False,
    ) -> dict[str, Any]:
        """`lazy_rows`: a roll-up report's `rows` come as an iterator (see `build_hub_report`)."""
        by = tuple(by)
        if outcome := check_outcome_keys(by):
            return self.outcomes.report(outcome, tz, since, until)
        # From a snapshot with a small page cache, outside the lock: a report neither holds
        # ingest back nor fills the writer's cache (kept for the usage indexes) with roll-ups.
        with ExitStack() as snapshot:
            with self._lock:
                generation = self._store.rollup_writes.generation
                reader = snapshot.enter_context(self._store.snapshot(REPORT_CACHE_KIB))
            return build_hub_report(
                reader,
                by=tuple(by),
                tz=tz,
                since=since,
                until=until,
                cache=(self._report_cache, generation),
                lazy_rows=lazy_rows,
            )

    def outcome_report(self, view: str, period: Period) -> dict[str, Any] | None:
        """The `view` outcome report of `period` as last read (None before the first), at
        once: a dashboard calls it on its UI thread."""
        return self.outcomes.report_now(view, period, self.clock())

    def session_outcome(self, key: str) -> SessionOutcome | None:
        """What the session `key` produced, as its node last said."""
        rows = self.sessions([key])
        return self.outcomes.of_session(rows[0].machine, key) if rows else None

    def audit_log(self, limit: int = 100) -> list[AuditRecord]:
        with self._lock:
            return self._store.audit_log(limit)

    # -- subscriptions -----------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with every change; returns the function that unsubscribes."""
        return self._subscribers.add(subscriber)

    def on_batch(self, listener: BatchListener) -> Callable[[], None]:
        """Call `listener` with every committed batch's result (after the subscribers, on the
        receiver thread, before the ack); returns the function that stops it."""
        return self._batch_listeners.add(listener)

    def _tell_listeners(self, result: IngestResult) -> None:
        if result.changes:
            self._batch_listeners.publish(result)

    def _publish(self, change: Update) -> None:
        self._subscribers.publish(change)

    # -- commands ----------------------------------------------------------------------------

    def command(
        self,
        node: str,
        action: Action,
        pid: int,
        create_time: float,
        *,
        who: str,
        command_id: str | None = None,
        told: str | None = None,
    ) -> CommandOutcome:
        """Send pause / resume / kill / interrupt for (pid, create_time) on `node`; its answer.
        Written to the audit log and the feed, whatever the outcome, except an outcome equal to
        `told` (a retry's repeat of a failure its caller audited already: one row per outcome,
        not one per attempt). `command_id`: the same id sent again is answered by the node from
        memory, not acted on twice (the governor's retries after a restart); default a fresh
        one."""
        if self.commander is None:
            outcome = CommandOutcome(
                False, "refused", "this hub has no command endpoint", node, pid
            )
        else:
            body: dict[str, Any] = {"cmd": action, "pid": pid, "ctime": create_time}
            if command_id is not None:
                body["id"] = command_id
            try:
                reply = self.commander.send(node, body, ANSWER_WITHIN[action])
            except ValueError as exc:
                reply = {"ok": False, "outcome": "refused", "detail": str(exc)}
            if reply is None:
                outcome = CommandOutcome(False, "no answer", f"no answer from {node}", node, pid)
            else:
                outcome = CommandOutcome(
                    bool(reply.get("ok")),
                    str(reply.get("outcome", "?")),
                    str(reply.get("detail", "")),
                    node,
                    pid,
                    tuple(p for p in reply.get("pids", []) if isinstance(p, int)),
                )
        now = self.clock()
        if told is not None and outcome.outcome == told:
            return outcome
        text = f"{action} pid {pid} on {node}: {outcome.outcome}"
        if outcome.detail:
            text += f" ({outcome.detail})"
        item = FeedItem(now, "command", node, text)
        target = pause_target(node, pid, create_time)
        result = outcome.outcome + (f": {outcome.detail}" if outcome.detail else "")
        with self._lock:
            self._store.audit(who, action, target, result, now)
            self.pauses.note(action, target, result, now, who)
            self._add_to_feed([item])
        self._publish(Update(machines={node}, feed=[item]))
        return outcome

    def tell(self, machine: str, text: str, kind: str = "budget") -> None:
        """Add a line to the feed from another part of the hub (the governor) and publish it."""
        item = FeedItem(self.clock(), kind, machine, text)
        with self._lock:
            self._add_to_feed([item])
        self._publish(Update(feed=[item]))

    def tell_alerts(self) -> None:
        """The alert outbox changed: tell the subscribers (the stream, a dashboard)."""
        self._publish(Update(alerts=True))

    async def acommand(
        self, node: str, action: Action, pid: int, create_time: float, *, who: str
    ) -> CommandOutcome:
        """`command` without blocking an event loop (the TUI)."""
        return await asyncio.to_thread(self.command, node, action, pid, create_time, who=who)


def _when(item: FeedItem) -> float:
    return item.ts
