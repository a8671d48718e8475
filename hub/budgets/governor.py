"""The governor: every budget checked against every batch of calls as the hub commits it.

Inside the batch's transaction (`on_ingest`, a store ingest hook) it adds the calls to each
budget's spend and inserts the marks (thresholds, forecast, unverified) the new spend reaches:
insert-or-ignore on (budget, period, mark), so a mark fires once per budget and period, in the
same commit as the calls that crossed it; a restart neither fires it again nor misses it (a
mark still `pending` at start is acted on then). After the commit an actor thread acts on the
new marks: a finding to the sink, a line in the feed and the audit log, and for a hard budget
pause or kill of every agent process in scope through the commander (a Codex process's turn is
interrupted first: see `_interrupt`), each stop recorded so
it is sent once (a command id derived from the mark makes a resend after a crash a no-op on
the node). Calls that arrive after a stop are in-flight overshoot: they are added to the
mark's `spent_after`. An agent process that joins a scope whose stop stands (see
`stopped_scope`) is stopped with the same action as soon as its node's hello names it (or it
logs a call there), once per process: `budget_stops` remembers what was stopped, so a
restarted hub neither stops it again nor misses one it had not reached. A process counts as
stopped only when its node confirmed it: a stop that failed (no answer, an error) is kept in
`budget_retries` with its reason and tried again with a backoff while the stop stands.

A re-price (new price tables) recounts each money budget in the re-pricing transaction and
judges it as a batch would (`on_reprice`): a crossing by the new prices fires once, as a live
one does.

A hard budget fires when less than one typical call (the p95 of the scope's recent calls) of
headroom is left, so the stop lands near the limit rather than one call past it.

Lock order: SQLite's write lock, then `_lock` (the ingest hook runs inside a transaction);
`_own_lock` serialises this module's own connection and is taken before either.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Final

from hub._sessions import session_key
from hub.budgets import records
from hub.budgets.config_io import add_budget, remove_budget
from hub.budgets.evaluation import (
    ZERO,
    RunRate,
    call_matches,
    counted,
    counted_move,
    forecast_due,
    limit_marks,
    p95,
    process_matches,
    reading_matches,
)
from hub.budgets.model import (
    CALENDAR,
    Basis,
    Budget,
    BudgetError,
    NextPeriod,
    PeriodKind,
    ScopeKind,
)
from hub.budgets.periods import (
    bucket_at,
    calendar_bounds,
    quota_bucket,
    slot_seconds,
    window_slots,
)
from hub.budgets.records import PASSED, Mark, Override
from hub.budgets.seed import billing_map, seed
from hub.budgets.standing import BudgetStanding, standing_of, stop_summary
from hub.budgets.stopped_scope import standing_stops, stands
from hub.config import load_hub_config
from hub.findings import Finding, FindingSink, Severity
from hub.model import Change, NodeState, Price, Redraw
from hub.service import CommandOutcome, FleetService, Update
from hub.store import Store
from pricing import Billing
from shared.config import ConfigError
from shared.events import Agent, LimitEvent
from shared.hello import ProcessInfo

log = logging.getLogger(__name__)

RECENT_CALLS: Final = 200  # call costs kept per budget for the headroom's p95
RATE_WINDOW_S: Final = 600.0  # the run rate a forecast extrapolates: the last 10 minutes
TICK_S: Final = 1.0
# A stop that stands is also checked for agents that joined its scope this often, besides when
# a hello names a new process: a process named before its node had told its profile or session
# (or in a hello the hub read before its processes were recorded) is not new at its next hello.
SWEEP_S: Final = 5.0
# A restarted hub knows no agent process until each node says hello again (with its first
# batch after the restart): a stop to make waits for the hellos of the nodes in its scope, up
# to this long, before it says there is no agent in scope (a loaded machine took over 7 s).
HELLO_GRACE_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class Due:
    mark: Mark
    repeat: bool = False  # the scope is stopped already: stop any agent that joined it
    eta_s: float | None = None  # forecast: seconds until the limit


def command_id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


class Governor:
    def __init__(
        self,
        store_path: Path,
        service: FleetService,
        budgets: Sequence[Budget],
        *,
        sink: FindingSink | None = None,
        config_path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._service = service
        self._sink = sink
        self._config_path = config_path
        self._config_mtime = _mtime(config_path)
        self.clock = clock  # the time periods are judged by (a test may move it)
        self._own = Store(store_path)
        self._own_lock = threading.RLock()
        self._lock = threading.Lock()
        self._budgets: dict[str, Budget] = {}
        self._recent: dict[str, deque[Decimal]] = defaultdict(lambda: deque(maxlen=RECENT_CALLS))
        self._flow: dict[str, RunRate] = defaultdict(lambda: RunRate(RATE_WINDOW_S))
        self._sessions: dict[str, set[tuple[str, str]]] = defaultdict(set)
        self._hard: set[tuple[str, str]] = set()  # (budget, bucket) with a hard mark
        self._tentative: list[Due] = []
        self._later: list[Due] = []  # hard marks waiting for the nodes' first hellos
        self._hellos_by = clock() + HELLO_GRACE_S
        self._due: deque[Due] = deque()
        # each node's agent processes as its last hello named them: a new one may join a
        # stopped scope (empty at start, so a restarted hub looks at every process once)
        self._known: dict[str, frozenset[tuple[int, float]]] = {}
        self._joined = False  # a hello named a process not known before: check the stops
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._config_problem: str | None = None
        with self._own_lock, self._own.writing() as db:
            records.create_tables(db)
        self.set_budgets(budgets)
        with self._own_lock:
            pending = records.marks(self._own.reading(), state="pending")
        self._due.extend(Due(m) for m in pending)  # crossed before a restart, not acted on

    # -- wiring ----------------------------------------------------------------------------

    def attach(self, store: Store) -> None:
        """Hook into `store`'s ingest transactions and start acting (before the receiver
        starts: no batch may pass unchecked)."""
        store.add_ingest_hook(self.on_ingest)
        store.add_reprice_hook(self.on_reprice)
        self._service.subscribe(self._on_update)
        self._thread = threading.Thread(target=self._run, name="governor", daemon=True)
        self._thread.start()
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._own_lock:
            self._own.close()

    @property
    def budgets(self) -> list[Budget]:
        with self._lock:
            return list(self._budgets.values())

    def set_budgets(self, budgets: Sequence[Budget]) -> None:
        """Take these budgets and recount their current periods from the roll-ups."""
        now = self.clock()
        with self._own_lock, self._own.writing() as db, self._lock:
            old = self._budgets
            self._budgets = {b.name: b for b in budgets}
            for name in set(old) - set(self._budgets):
                records.forget_spend(db, name)
                records.forget_retries(db, name)
            for budget in budgets:
                if old.get(budget.name) != budget:
                    self._recent.pop(budget.name, None)
                    self._flow.pop(budget.name, None)
                seed(db, budget, now)
            self._hard = {
                (m.budget, m.bucket)
                for m in records.marks(db)
                if m.action in ("pause", "kill") and m.budget in self._budgets
            }

    # -- inside the ingest transaction -------------------------------------------------------

    def on_ingest(
        self,
        db: sqlite3.Connection,
        changes: Sequence[Change],
        prices: Sequence[tuple[Price | None, Price]],
        limits: Sequence[LimitEvent],
        now: float,
        redraws: Sequence[Redraw] = (),
        redrawn: bool = False,
    ) -> None:
        """`redraws`: what the Agent SDK credit moved out of subscription_included (or back) in
        the batch, late calls' re-draws of earlier ones included; `redrawn`: a profile was drawn
        again whole, so paid budgets are recounted from the roll-ups (which hold the batch)."""
        with self._lock:
            self._tentative = []
            if not self._budgets or not (changes or limits or redraws or redrawn):
                return
            overrides = records.active_overrides(db, now)
            billing = billing_map(db) if changes or redraws or redrawn else {}
            for budget in self._budgets.values():
                if budget.basis is Basis.QUOTA:
                    self._quota(db, budget, limits, overrides.get(budget.name), now)
                elif changes or redraws or redrawn:
                    recount = redrawn and budget.basis is not Basis.API
                    if recount:
                        seed(db, budget, now)
                    self._money(
                        db, budget, changes, prices, redraws, billing, overrides, now, recount
                    )

    @staticmethod
    def _bucketer(budget: Budget, now: float) -> Callable[[float, str], str | None]:
        """The bucket a call at `ts` (of session `session`) counts in, or None when that
        period is over: the current period's bounds are worked out once a batch, not per
        call (a zone's calendar is the costly part)."""
        kind = budget.period.kind
        if kind is PeriodKind.SESSION:
            return lambda _ts, session: session
        if kind is PeriodKind.ROLLING:
            slot = slot_seconds(budget)
            low, _ = window_slots(budget, now)
            return lambda ts, _s: str(int(ts // slot)) if int(ts // slot) >= low else None
        start, end = calendar_bounds(kind, budget.zone, now)
        bucket = str(int(start))
        return lambda ts, _s: bucket if start <= ts < end else None

    def _money(
        self,
        db: sqlite3.Connection,
        budget: Budget,
        changes: Sequence[Change],
        prices: Sequence[tuple[Price | None, Price]],
        redraws: Sequence[Redraw],
        billing: dict[tuple[str, str], Billing],
        overrides: dict[str, Override],
        now: float,
        recounted: bool,
    ) -> None:
        """Add the batch's calls and credit moves to `budget`'s spend (not when it was just
        `recounted` from the roll-ups: they are in it) and judge the buckets they touched."""
        name = budget.name
        calls: dict[str, list[tuple[int, float, Decimal | None]]] = defaultdict(list)
        # the credit's moves: spend on the paid basis, but no call of their own
        moves: dict[str, list[tuple[int, float, Decimal | None]]] = defaultdict(list)
        bucket_of = self._bucketer(budget, now)
        for redraw in redraws:
            call = redraw.event
            if not call.counts or not call_matches(budget.scope, call):
                continue
            bill = billing.get((call.machine, call.profile or ""), Billing.API)
            move = counted_move(budget.basis, redraw.moved, bill)
            bucket = bucket_of(call.ts, session_key(call))
            if not move or bucket is None:
                continue
            moves[bucket].append((1, call.ts, move))
            if move > 0:
                self._recent[name].append(move)
                self._flow[name].add(call.ts, move)
        for (old, new), (old_price, new_price) in zip(changes, prices, strict=True):
            for sign, event, price in ((-1, old, old_price), (1, new, new_price)):
                if event is None or price is None or not event.counts:
                    continue
                if not call_matches(budget.scope, event):
                    continue
                bucket = bucket_of(event.ts, session_key(event))
                if bucket is None:
                    continue
                bill = billing.get((event.machine, event.profile or ""), Billing.API)
                amount = counted(budget.basis, price, bill)
                calls[bucket].append((sign, event.ts, amount))
                if sign > 0:
                    self._sessions[name].add((event.machine, event.session_id))
                    if amount is not None and amount > 0:
                        self._recent[name].append(amount)
                        self._flow[name].add(event.ts, amount)
        if not calls and not moves and not recounted:
            return
        if not recounted:
            for bucket in {*calls, *moves}:
                items = calls.get(bucket, [])
                known = [(s, a) for s, _, a in items + moves.get(bucket, []) if a is not None]
                amount = sum((s * a for s, a in known), ZERO)
                unknown = sum(s for s, _, a in items if a is None)
                count = sum(s for s, _, _ in items)
                records.add_spend(db, name, bucket, amount, unknown, count, now)
        order = [*calls, *(b for b in moves if b not in calls)]
        if recounted and budget.period.kind is not PeriodKind.SESSION:
            current = bucket_of(now, "")  # a re-drawn month may move the current period
            if current is not None and current not in order:
                order.append(current)
        touched = {b: calls.get(b, []) + moves.get(b, []) for b in order}
        self._tentative += self._judge(db, budget, list(touched), touched, overrides.get(name), now)

    def on_reprice(self, db: sqlite3.Connection, now: float) -> Callable[[], None]:
        """Stored calls were re-priced (new price tables) in this transaction: each money
        budget's spend is recounted from the roll-ups, as a restart would, and judged as a
        batch's would be (a re-price that crosses a limit fires its mark in this commit, once).
        Returns what queues the marks it fired, for after the commit."""
        fired: list[Due] = []
        with self._lock:
            overrides = records.active_overrides(db, now)
            for budget in self._budgets.values():
                if budget.basis is Basis.QUOTA:
                    continue
                seed(db, budget, now)
                buckets = [bucket for bucket, *_ in records.buckets(db, budget.name)]
                if not buckets:
                    continue
                calls: dict[str, list[tuple[int, float, Decimal | None]]] = {
                    b: [] for b in buckets
                }  # no call of its own: spend moved, nothing was added
                override = overrides.get(budget.name)
                fired += self._judge(db, budget, buckets, calls, override, now)

        def queue() -> None:
            with self._lock:
                self._due.extend(fired)
            self._wake.set()

        return queue

    def _judge(
        self,
        db: sqlite3.Connection,
        budget: Budget,
        touched: list[str],
        calls: dict[str, list[tuple[int, float, Decimal | None]]],
        override: Override | None,
        now: float,
    ) -> list[Due]:
        """The marks `budget`'s spend in the `touched` buckets reaches (inserted, to act on
        once the transaction commits)."""
        name = budget.name
        due: list[Due] = []
        if budget.period.kind is PeriodKind.ROLLING:
            low, high = window_slots(budget, now)
            spent, unknown = records.spend_between(db, name, low, high)
            episode = records.episode(db, name)
            targets = [
                (episode or str(high), spent, unknown, [c for b in touched for c in calls[b]])
            ]
        else:
            targets = []
            for bucket in touched:
                spent, unknown = records.spend(db, name, bucket)
                targets.append((bucket, spent, unknown, calls[bucket]))
        limit = budget.limit if override is None else override.limit
        for bucket, spent, unknown, items in targets:
            if (name, bucket) in self._hard:
                added = [(ts, s * a) for s, ts, a in items if a is not None]
                records.add_overshoot(db, name, bucket, added)
            fired: list[Due] = []
            if unknown > 0:
                fired += self._fire(db, budget, bucket, "unverified", spent, limit or ZERO,
                                    budget.on_unverified.value, now)  # fmt: skip
            if limit is not None:
                headroom = p95(self._recent[name]) if budget.hard else ZERO
                new = [
                    due
                    for mark, action in limit_marks(budget, spent, limit, headroom)
                    for due in self._fire(db, budget, bucket, mark, spent, limit, action, now)
                ]
                if new and budget.period.kind is PeriodKind.ROLLING:
                    records.open_episode(db, name, bucket)
                # several thresholds crossed at once: the highest speaks for them
                for lower in new[:-1]:
                    records.finish_mark(db, lower.mark, f"{PASSED} {new[-1].mark.mark}", None)
                fired += new[-1:]
                rate = self._flow[name].per_second(now)
                eta = forecast_due(budget, spent, limit, rate)
                if eta is not None:
                    mark = f"forecast@{limit}"
                    fired += [
                        Due(d.mark, eta_s=eta)
                        for d in self._fire(db, budget, bucket, mark, spent, limit, "alert", now)
                    ]
                if not new and (name, bucket) in self._hard and any(s > 0 for s, _, _ in items):
                    hard = [
                        m
                        for m in records.marks(db, name, bucket=bucket)
                        if m.action in ("pause", "kill") and m.limit == limit
                    ]
                    fired += [Due(m, repeat=True) for m in hard[-1:]]
            due += fired
        return due

    def _fire(
        self,
        db: sqlite3.Connection,
        budget: Budget,
        bucket: str,
        mark: str,
        spent: Decimal,
        limit: Decimal,
        action: str,
        now: float,
    ) -> list[Due]:
        row = Mark(budget.name, bucket, mark, now, spent, limit, action)
        if not records.insert_mark(db, row):
            return []
        if action in ("pause", "kill"):
            self._hard.add((budget.name, bucket))
        return [Due(row)]

    def _quota(
        self,
        db: sqlite3.Connection,
        budget: Budget,
        limits: Sequence[LimitEvent],
        override: Override | None,
        now: float,
    ) -> None:
        window = budget.period.window
        touched: set[str] = set()
        for reading in limits:
            if (
                reading.window.value != window
                or reading.used_percent is None
                or not reading_matches(budget.scope, reading)
            ):
                continue
            bucket = quota_bucket(window, reading.ts, reading.resets_at)
            if float(bucket) <= now:
                continue  # that window has reset already
            value = Decimal(str(reading.used_percent))
            records.raise_spend(db, budget.name, bucket, value, reading.ts)
            touched.add(bucket)
            if reading.profile is not None:
                self._sessions[budget.name].add((reading.machine, reading.session_id or ""))
        if touched:
            self._tentative += self._judge(
                db, budget, sorted(touched), defaultdict(list), override, now
            )

    # -- after the commit -----------------------------------------------------------------------

    def _on_update(self, update: Update) -> None:
        self._committed()
        if update.machines:
            self._note_processes(update.machines)

    def _committed(self) -> None:
        with self._lock:
            if not self._tentative:
                return
            self._due.extend(self._tentative)
            self._tentative = []
        self._wake.set()

    def _note_processes(self, machines: set[str]) -> None:
        """A hello that names a process its node had not named before wakes the actor to
        stop it if it joined a stopped scope (checked there, after the marks queued before
        it: a crossing in the same batch acts on it first)."""
        reported = {
            node: {(p.pid, p.create_time) for _, p in self._service.processes(node)
                   if p.state != "zombie"}
            for node in machines
        }  # fmt: skip
        joined = False
        with self._lock:
            for node, keys in reported.items():
                joined |= bool(keys - self._known.get(node, frozenset()))
                self._known[node] = frozenset(keys)
            if not joined or not any(b.hard for b in self._budgets.values()):
                return
            self._joined = True
        self._wake.set()

    def _stop_joiners(self) -> None:
        """Each stop that stands acts again on the agents of its scope it has not stopped."""
        now = self.clock()
        with self._own_lock:
            db = self._own.reading()
            standing = {b.name: standing_stops(db, b, now) if b.hard else [] for b in self.budgets}
            # retries of stops that no longer stand end
            over = {
                name: records.retry_buckets(db, name) - {m.bucket for m in marks}
                for name, marks in standing.items()
            }
            if any(over.values()):
                with self._own.writing() as wdb:
                    for name, buckets in over.items():
                        records.forget_retries(wdb, name, buckets)
        due = [Due(mark, repeat=True) for marks in standing.values() for mark in marks]
        for item in due:
            self._act(item)

    def _run(self) -> None:
        next_tick = 0.0
        next_sweep = time.monotonic() + SWEEP_S
        while not self._stop.is_set():
            self._wake.wait(TICK_S)
            self._wake.clear()
            while True:
                with self._lock:
                    if not self._due:
                        break
                    due = self._due.popleft()
                try:
                    self._act(due)
                except Exception:
                    log.exception("the governor could not act on %s", due.mark)
            with self._lock:
                joined, self._joined = self._joined, False
            if time.monotonic() >= next_sweep:
                next_sweep = time.monotonic() + SWEEP_S
                joined = True
            if joined:
                try:
                    self._stop_joiners()
                except Exception:
                    log.exception("the governor could not check the stopped scopes")
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_S
                with self._lock:
                    self._due.extend(self._later)
                    self._later = []
                try:
                    self.tick()
                except Exception:
                    log.exception("the governor's periodic check failed")

    def _act(self, due: Due) -> None:
        with self._own_lock:
            found = [
                m
                for m in records.marks(self._own.reading(), due.mark.budget, bucket=due.mark.bucket)
                if m.mark == due.mark.mark
            ]
        if not found:
            return  # its batch never committed
        mark = found[0]
        if mark.state == "done" and not due.repeat:
            return
        with self._lock:
            budget = self._budgets.get(mark.budget)
        if budget is None:
            with self._own_lock, self._own.writing() as db:
                records.finish_mark(db, mark, "budget removed", None)
            return
        if due.repeat and not self._stands(budget, mark):
            return  # resumed by a person, overridden, or its period is over
        summary, stopped_at = "", None
        if mark.action in ("pause", "kill"):
            if not self._targets(budget, mark.bucket) and self._awaiting_hellos(budget):
                with self._lock:
                    self._later.append(due)  # a restarted hub has not heard the nodes yet
                return
            summary, acted = self._stop_scope(budget, mark)
            if due.repeat and not acted:
                return
            stopped_at = self.clock()
        elif due.repeat:
            return
        text = self._sentence(budget, mark, summary, due)
        self._service.tell(budget.scope.value(ScopeKind.MACHINE) or "fleet", text)
        with self._own_lock, self._own.writing() as db:
            if not due.repeat:
                records.finish_mark(db, mark, summary or "alerted", stopped_at)
        self._own_audit(f"budget '{budget.name}'", f"budget {mark.action}", budget, text)
        if self._sink is not None and not due.repeat:
            self._sink.raise_finding(self._finding(budget, mark, text, summary))

    def _stands(self, budget: Budget, mark: Mark) -> bool:
        with self._own_lock:
            return stands(self._own.reading(), budget, mark, self.clock())

    def _own_audit(self, who: str, action: str, budget: Budget, result: str) -> None:
        with self._own_lock:
            self._own.audit(
                who, action, f"{budget.name} ({budget.scope.text})", result, self.clock()
            )

    def _awaiting_hellos(self, budget: Budget) -> bool:
        """Whether a node of `budget`'s scope has not said hello since this hub started (its
        processes are unknown yet), within HELLO_GRACE_S of the start."""
        if self.clock() >= self._hellos_by:
            return False
        machine = budget.scope.value(ScopeKind.MACHINE)
        return any(
            view.hello is None
            for view in self._service.nodes()
            if machine is None or view.record.node == machine
        )

    def _targets(self, budget: Budget, bucket: str) -> list[tuple[str, ProcessInfo]]:
        accounts = {(p.node, p.name): p.account for p in self._service.profiles()}
        with self._lock:
            sessions = set(self._sessions[budget.name])
        out: list[tuple[str, ProcessInfo]] = []
        for node, process in self._service.processes():
            if process.state == "zombie":
                continue
            if budget.period.kind is PeriodKind.SESSION and process.session_id != bucket:
                continue
            if process_matches(
                budget.scope,
                node,
                process,
                lambda n, p: accounts.get((n, p or "")),
                sessions,
            ):
                out.append((node, process))
        return out

    def _stop_scope(self, budget: Budget, mark: Mark) -> tuple[str, int]:
        """Pause or kill every agent process in scope not stopped yet (one whose last try
        failed: once its retry is due); (summary, stopped)."""
        action = mark.action
        with self._own_lock:
            db = self._own.reading()
            done = records.stopped(db, budget.name, mark.bucket, action)
            pending = records.retries(db, budget.name, mark.bucket, action)
        outcomes: dict[str, int] = defaultdict(int)
        acted = 0
        who = f"budget '{budget.name}'"
        now = self.clock()
        for key in self._left(set(pending) - done):
            outcomes["gone"] += 1
            with self._own_lock, self._own.writing() as db:
                records.confirm_stop(db, budget.name, mark.bucket, key, action, "gone", now)
        for node, process in self._targets(budget, mark.bucket):
            key = (node, process.pid, process.create_time)
            retry = pending.get(key)
            if key in done or (retry is not None and retry.next_at > now):
                continue
            holder = self._service.pause_holder(*key)
            if action == "pause" and (
                process.state == "paused" or (holder is not None and holder[1] != who)
            ):  # by a person (its hello may not say so yet), or by us before a restart
                outcomes["already paused"] += 1
                with self._own_lock, self._own.writing() as db:
                    records.confirm_stop(
                        db, budget.name, mark.bucket, key, action, "already paused", self.clock()
                    )
                continue
            outcome = self._command(budget.name, mark.bucket, node, process, action, retry)
            settled = outcome.ok or _gone(outcome)
            word = outcome.outcome if outcome.ok else "gone" if settled else outcome.outcome
            outcomes[word] += 1
            acted += outcome.ok
            with self._own_lock, self._own.writing() as db:
                if settled:
                    records.confirm_stop(
                        db, budget.name, mark.bucket, key, action, word, self.clock()
                    )
                else:
                    reason = outcome.outcome + (f": {outcome.detail}" if outcome.detail else "")
                    answered = outcome.outcome != "no answer"
                    records.note_failure(
                        db, budget.name, mark.bucket, action, retry, key, outcome.outcome,
                        reason, answered, self.clock(),
                    )  # fmt: skip
        return stop_summary(action, outcomes), acted

    def _left(self, keys: set[records.StopKey]) -> list[records.StopKey]:
        """Those of `keys` whose node has said hello since this hub started without them."""
        named = {
            view.record.node: {(p.pid, p.create_time) for p in view.hello.processes
                               if p.state != "zombie"}
            for view in self._service.nodes()
            if view.hello is not None
        }  # fmt: skip
        return sorted(k for k in keys if k[0] in named and (k[1], k[2]) not in named[k[0]])

    def _command(
        self,
        budget: str,
        bucket: str,
        node: str,
        process: ProcessInfo,
        action: str,
        retry: records.Retry | None,
    ) -> CommandOutcome:
        """One try at stopping `process` (a Codex one is interrupted first). A retry's repeat
        of the failure it had is not audited again; its command id is new after an answered
        failure (the node would answer the same id from memory) and the same after none."""
        who = f"budget '{budget}'"
        key = (node, process.pid, process.create_time)
        told = None if retry is None else retry.outcome
        generation = () if retry is None or not retry.generation else (retry.generation,)
        if action == "pause" and process.agent is Agent.CODEX:
            first = self._interrupt(node, process, who, budget, bucket, generation, told)
            if first is not None:  # Codex ended with its turn: nothing left to pause
                return first
        return self._service.command(
            node,
            "pause" if action == "pause" else "kill",
            process.pid,
            process.create_time,
            who=who,
            command_id=command_id(budget, bucket, *key, action, *generation),
            told=told,
        )

    def _interrupt(
        self,
        node: str,
        process: ProcessInfo,
        who: str,
        budget: str,
        bucket: str,
        generation: tuple[int, ...] = (),
        told: str | None = None,
    ) -> CommandOutcome | None:
        """A Codex turn is interrupted before the pause (its hooks gate no model call inside
        a turn, and a turn frozen mid-stream goes on streaming when resumed): the outcome when
        Codex exited with it (`codex exec`), else None and the pause follows as the brake,
        whether the interrupt worked or not."""
        outcome = self._service.command(
            node,
            "interrupt",
            process.pid,
            process.create_time,
            who=who,
            command_id=command_id(
                budget, bucket, node, process.pid, process.create_time, "interrupt", *generation
            ),  # fmt: skip
            told=told,
        )
        return outcome if outcome.outcome == "exited" else None

    def _sentence(self, budget: Budget, mark: Mark, summary: str, due: Due) -> str:
        head = f"budget '{budget.name}' ({budget.scope.text}, {budget.period.text})"
        spent = budget.limit_text(mark.spent)
        limit = budget.limit_text(mark.limit)
        if mark.mark == "unverified":
            text = f"{head}: spend cannot be verified (calls of unknown price); {spent} known"
        elif mark.mark.startswith("forecast"):
            minutes = max(1, round((due.eta_s or 0) / 60))
            text = (
                f"{head}: {spent} of {limit}, at this rate the limit is reached in ~{minutes} min"
            )
        elif mark.mark.startswith("unverified:"):
            machine = mark.mark.partition(":")[2]
            text = f"{head}: {machine} has gone quiet, its spend cannot be verified"
        else:
            text = f"{head} at {mark.percent} %: {spent} of {limit}"
        return f"{text}: {summary}" if summary else text

    def _finding(self, budget: Budget, mark: Mark, text: str, summary: str) -> Finding:
        pct = mark.percent
        if mark.action in ("pause", "kill") or (pct is not None and pct >= 100):
            severity = Severity.CRITICAL
        elif pct is not None and pct < 80:
            severity = Severity.INFO
        else:
            severity = Severity.WARNING
        evidence = {
            "budget": budget.name,
            "period": budget.period.text,
            "bucket": mark.bucket,
            "basis": budget.basis.value,
            "spent": str(mark.spent),
            "limit": str(mark.limit),
            "action": mark.action,
        }
        if summary:
            evidence["outcome"] = summary
        return Finding(
            id=f"budget:{budget.name}:{mark.bucket}:{mark.mark}",
            kind="forecast" if mark.mark.startswith("forecast") else "budget",
            scope=budget.scope.text,
            severity=severity,
            start=mark.at,
            text=text,
            evidence=evidence,
        )

    # -- the periodic part: new periods, quiet nodes, config changes ----------------------------

    def tick(self) -> None:
        self._reload_if_changed()
        now = self.clock()
        for budget in self.budgets:
            self._next_period(budget, now)
            if budget.hard:
                self._quiet_nodes(budget, now)

    def _reload_if_changed(self) -> None:
        path = self._config_path
        mtime = _mtime(path)
        if path is None or mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        try:
            budgets = load_hub_config(path).budgets
        except ConfigError as exc:
            log.error("budgets not reloaded, the old ones stay: %s", exc)
            self._service.tell("hub", f"budgets not reloaded: {exc}", "budget")
            return
        if list(budgets) != self.budgets:
            self.set_budgets(budgets)
            log.info("budgets reloaded from %s: %d", path, len(budgets))

    def _next_period(self, budget: Budget, now: float) -> None:
        kind = budget.period.kind
        with self._own_lock:
            db = self._own.reading()
            hard = [
                m
                for m in records.marks(db, budget.name, state="done")
                if m.action == "pause" and m.resumed_at is None
            ]
            over: list[str] = []
            if kind is PeriodKind.ROLLING:
                with self._own.writing() as wdb:
                    records.forget_slots_before(wdb, budget.name, window_slots(budget, now)[0])
                episode = records.episode(db, budget.name)
                if episode is not None:
                    low, high = window_slots(budget, now)
                    spent, _ = records.spend_between(db, budget.name, low, high)
                    limit = records.active_overrides(db, now).get(budget.name)
                    cap = budget.limit if limit is None else limit.limit
                    with self._lock:
                        headroom = p95(self._recent[budget.name]) if budget.hard else ZERO
                    # room again: what would fire the stop no longer holds
                    if cap is None or spent + headroom < cap:
                        over = [episode]
                        with self._own.writing() as wdb:
                            records.close_episode(wdb, budget.name)
            elif kind in CALENDAR:
                current = bucket_at(budget, now)
                over = sorted({m.bucket for m in hard if m.bucket != current})
            elif kind is PeriodKind.WINDOW:
                over = sorted({m.bucket for m in hard if float(m.bucket) <= now})
        if budget.next_period is not NextPeriod.RESUME:
            if over:
                with self._own_lock, self._own.writing() as wdb:
                    for bucket in over:
                        records.note_resumed(wdb, budget.name, bucket, now)  # waits for a person
            return
        for bucket in over:
            self._resume(budget, bucket, now)

    def _resume(self, budget: Budget, bucket: str, now: float) -> None:
        with self._own_lock:
            paused = records.paused_unresumed(self._own.reading(), budget.name, bucket)
        resumed = left = 0
        who = f"budget '{budget.name}'"
        for node, pid, ctime in paused:
            holder = self._service.pause_holder(node, pid, ctime)
            # only what its own pause still holds: one a person resumed (and maybe paused
            # again) since is theirs now, and stays as they left it
            if holder is not None and holder[1] == who:
                outcome = self._service.command(
                    node,
                    "resume",
                    pid,
                    ctime,
                    who=who,
                    command_id=command_id(budget.name, bucket, node, pid, ctime, "resume"),
                )
                resumed += outcome.ok
            else:
                left += 1
            with self._own_lock, self._own.writing() as db:
                records.note_stop_resumed(db, budget.name, bucket, (node, pid, ctime), now)
        with self._own_lock, self._own.writing() as db:
            records.note_resumed(db, budget.name, bucket, now)
        if paused:
            text = (
                f"budget '{budget.name}' ({budget.scope.text}, {budget.period.text}): new "
                f"period, resumed {resumed} agent{'s' * (resumed != 1)}"
                + (f" ({left} left as a person set them since)" if left else "")
            )
            self._service.tell("fleet", text)
            self._own_audit(f"budget '{budget.name}'", "budget resume", budget, text)

    def _quiet_nodes(self, budget: Budget, now: float) -> None:
        if budget.period.kind is PeriodKind.ROLLING:
            return
        machine = budget.scope.value(ScopeKind.MACHINE)
        with self._lock:
            seen = {m for m, _ in self._sessions[budget.name]}
        bucket = bucket_at(budget, now) if budget.period.kind in CALENDAR else None
        if bucket is None:
            return
        fired: list[Due] = []
        for view in self._service.nodes():
            node = view.record.node
            if view.state is NodeState.ONLINE or (node != machine and node not in seen):
                continue
            mark = Mark(
                budget.name, bucket, f"unverified:{node}", now, ZERO, budget.limit,
                budget.on_unverified.value,
            )  # fmt: skip
            with self._own_lock, self._own.writing() as db:
                if records.insert_mark(db, mark):
                    fired.append(Due(mark))
        with self._lock:
            self._due.extend(fired)

    # -- the read model and the operator's changes -------------------------------------------------

    def standings(self) -> list[BudgetStanding]:
        """Where each budget stands now (the dashboard's Budgets tab, the API, the CLI)."""
        now = self.clock()
        with self._lock:
            budgets = list(self._budgets.values())
            rates = {b.name: self._flow[b.name].per_second(now) for b in budgets}
            quiet = {}
        states = {v.record.node: v.state for v in self._service.nodes()}
        for budget in budgets:
            machine = budget.scope.value(ScopeKind.MACHINE)
            with self._lock:
                seen = {m for m, _ in self._sessions[budget.name]}
            quiet[budget.name] = sorted(
                n
                for n, s in states.items()
                if s is not NodeState.ONLINE and (n == machine or n in seen)
            )
        with self._own_lock:
            db = self._own.reading()
            return [standing_of(db, b, now, rates[b.name], quiet[b.name]) for b in budgets]

    def add_budget(self, budget: Budget, who: str) -> None:
        """Write `budget` into hub.toml (replacing one of its name) and take it at once."""
        self._edit(lambda path: add_budget(path, budget, self.budgets))
        self._own_audit(who, "budget add", budget, f"{budget.title} {budget.action.value}")
        self._service.tell("fleet", f"{budget.title} set by {who}")

    def remove_budget(self, name: str, who: str) -> None:
        with self._lock:
            budget = self._budgets.get(name)
        if budget is None:
            raise BudgetError(f"no budget named {name!r} (fleet-hub budget list)")
        self._edit(lambda path: remove_budget(path, name))
        self._own_audit(who, "budget rm", budget, f"{budget.title} removed")
        self._service.tell("fleet", f"{budget.title} removed by {who}")

    def _edit(self, change: Callable[[Path], object]) -> None:
        path = self._config_path
        if path is None:
            raise ConfigError("this hub has no config file to keep budgets in")
        change(path)
        self._config_mtime = _mtime(path)
        self.set_budgets(load_hub_config(path).budgets)

    def override(
        self, name: str, limit: Decimal | None, until: float, who: str, why: str
    ) -> Override:
        """Raise (or, with `limit` None, lift) budget `name` until `until`; audited."""
        now = self.clock()
        with self._lock:
            budget = self._budgets.get(name)
        if budget is None:
            raise BudgetError(f"no budget named {name!r} (fleet-hub budget list)")
        entry = write_override(self._own, self._own_lock, budget, limit, until, who, why, now)
        self._service.tell("fleet", override_text(budget, entry))
        return entry


def write_override(
    store: Store,
    lock: AbstractContextManager[object] | None,
    budget: Budget,
    limit: Decimal | None,
    until: float,
    who: str,
    why: str,
    now: float,
) -> Override:
    """Record an override and its audit row (used by the governor and by the CLI when no hub
    runs)."""
    if until <= now:
        raise BudgetError("--until must be in the future")
    if not why.strip():
        raise BudgetError("say why (--why TEXT): the audit log keeps it")
    entry = Override(budget.name, limit, until, who, why.strip(), now)
    with lock or nullcontext():
        with store.writing() as db:
            records.create_tables(db)
            records.add_override(db, entry)
        store.audit(who, "budget override", f"{budget.name} ({budget.scope.text})",
                    override_text(budget, entry), now)  # fmt: skip
    return entry


def override_text(budget: Budget, entry: Override) -> str:
    until = datetime.fromtimestamp(entry.until, UTC).strftime("%Y-%m-%d %H:%M UTC")
    what = "lifted" if entry.limit is None else f"raised to {budget.limit_text(entry.limit)}"
    return f"budget '{budget.name}' {what} until {until} by {entry.who}: {entry.why}"


def _gone(outcome: CommandOutcome) -> bool:
    """Whether the node refused because the process is no longer there: nothing to retry."""
    return outcome.outcome == "refused" and any(
        words in outcome.detail
        for words in ("no such process", "has already exited", "now belongs to another")
    )


def _mtime(path: Path | None) -> float | None:
    if path is None:
        return None
    try:
        return path.stat().st_mtime_ns / 1e9
    except OSError:
        return None
