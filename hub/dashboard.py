"""What the dashboard shows, as plain rows: the view model between the hub service and any screen.

No Textual here (the TUI in `hub/tui/` renders these rows; a test or a benchmark reads them
directly). The service tells `note()` what changed, on whatever thread changed it; `tick()`,
called by the screen a few times a second, names the rows that need redrawing:

- machines: every row each tick (last-seen ages move), their spend figures read again when
  they reported (sparklines at most every `SPARK_EVERY_S`);
- profiles: the ones with new calls or limit/profile events, rate-limited ones each tick
  (their countdown), and all of them once per sweep (idle comes from the clock);
- sessions: the ones with new calls or whose process changed as the row shows it, and all
  shown ones once per sweep (tokens per minute decay); a session leaves the view when it has
  no process and no call in `live_window` seconds.

A sweep is spread over the ticks of `SWEEP_EVERY_S`, a slice each. A fleet of thousands of
rows changes more rows a second than a tick can build and draw, so a tick builds each table's
new rows and then, within a budget, those that have waited longest (the table in front, that
the screen shows, gets most of it); the others are named in the diff's `stale` with the
`source` that builds them, and the screen builds at once the ones it shows, and all of a
table's when a sort or filter needs them (see `LiveTable.apply`). A row is built from its
previous version: cells whose
figures did not change are carried over, neither formatted again nor redrawn.

Each cell carries its text, a sort value (numbers sort as numbers, blanks last) and a tone
(a meaning such as "bad" or "dim", not a colour: the screen picks colours).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from functools import partial
from operator import attrgetter
from typing import Any, Final

from hub import _format as fmt
from hub._node_news import paused_since
from hub._outcome_cache import outcome_words
from hub._sessions import (
    RECENT_S,
    SessionFigures,
    cache_ratio,
    cache_read_ratio,
    is_thrash,
    short_id,
)
from hub._totals import ZERO, Totals
from hub.header import SHORT_MIN, fleet_header
from hub.header import HeaderFigures as HeaderFigures  # the screens take it from here
from hub.ledger import Dimension, Period, profile_key
from hub.model import NodeState, ProfileRecord
from hub.profile_board import ProfileStanding
from hub.service import FeedItem, NodeView, Update
from hub.source import FleetSource
from shared.config import Billing
from shared.events import LimitWindow, ProfileState
from shared.hello import ProcessInfo, ProfileInfo

SWEEP_EVERY_S: Final = 5.0  # every shown row is rebuilt at least this often (a slice a tick)
SPARK_EVERY_S: Final = 5.0  # a machine's sparkline is redrawn at most this often
# A tick builds a table's new rows, then its changed ones, longest waiting first, at least
# OFFSCREEN_ROWS and more while OFFSCREEN_S lasts; the screen builds those in view at once.
# The tables behind the one in front (`Dashboard.in_front`) get BEHIND_ROWS and BEHIND_S.
OFFSCREEN_ROWS: Final = 50
OFFSCREEN_S: Final = 0.002
BEHIND_ROWS: Final = 10
BEHIND_S: Final = 0.0005
_CHUNK: Final = 25
SPARK_BINS: Final = 24  # 6 h of run rate in 15-minute bars
FEED_LINES: Final = 100  # the feed lines a screen is given at once
OUTCOME_SHOWN_S: Final = 8.0  # a halt action's outcome stays on its row this long
THRASH_MARK: Final = " ▼"  # after a cache-read ratio that is low while writing a lot


class Table(StrEnum):
    MACHINES = "machines"
    PROFILES = "profiles"
    SESSIONS = "sessions"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    numeric: bool = False  # right-aligned; sorts largest first on the first press
    # What a narrow screen keeps: 0 always, then 1, 2, ... as long as they fit (the screen
    # can show the rest on demand).
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    sort: Any = None  # None sorts after every value
    tone: str = ""  # "", "good", "warn", "bad", "dim"


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    cells: tuple[Cell, ...]
    machine: str
    profile: str | None = None  # "machine/profile": what a profile drill-down matches


# Builds the rows of the given keys now: (rows, keys whose row has left the view).
RowSource = Callable[[Iterable[str]], tuple[dict[str, "Row"], set[str]]]


@dataclass(slots=True)
class TableDiff:
    upserts: dict[str, Row] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    # Rows that changed but are not built yet (a live view: it shrinks as they are built) and
    # what builds them: a screen builds those it shows at once, the rest come in later ticks.
    stale: AbstractSet[str] = field(default_factory=frozenset)
    source: RowSource | None = None


@dataclass(slots=True)
class Frame:
    """One tick's worth of redrawing."""

    tables: dict[Table, TableDiff]
    header: HeaderFigures | None  # None: unchanged
    feed: list[FeedItem]  # new feed lines, in the order things happened
    feed_reset: bool = False  # `feed` is the whole recent feed: older news came in late


# Today's spend per cost class, as the machines and profiles show it.
_CLASS_COLUMNS: Final = (
    Column("metered", "metered", numeric=True, priority=1),
    Column("subscription", "subscr. (API-eq)", numeric=True, priority=2),
    Column("estimated", "estimated", numeric=True, priority=4),
    Column("unknown", "unknown", numeric=True, priority=3),
)
COLUMNS: Final[dict[Table, tuple[Column, ...]]] = {
    Table.MACHINES: (
        Column("machine", "machine"),
        Column("state", "state", priority=1),
        Column("seen", "seen", numeric=True, priority=3),
        Column("agents", "agents ▶/⏸", numeric=True, priority=2),
        *_CLASS_COLUMNS,
        Column("cache", "cache rd", numeric=True, priority=2),
        Column("burn", f"$/h {SHORT_MIN}m", numeric=True, priority=1),
        Column("spark", "last 6 h", priority=5),
    ),
    Table.PROFILES: (
        Column("profile", "profile"),
        Column("machine", "machine", priority=1),
        Column("agent", "agent", priority=3),
        Column("account", "account", priority=4),
        Column("billing", "billing", priority=3),
        Column("state", "state", priority=1),
        Column("window_5h", "5h", numeric=True, priority=2),
        Column("window_weekly", "week", numeric=True, priority=2),
        *_CLASS_COLUMNS,
        Column("cw_5m", "cache wr 5m", numeric=True, priority=5),
        Column("cw_1h", "cache wr 1h", numeric=True, priority=5),
        Column("sdk_credit", "SDK credit", numeric=True, priority=2),
        Column("overage", "overage", numeric=True, priority=2),
    ),
    Table.SESSIONS: (
        Column("session", "session"),
        Column("machine", "machine", priority=1),
        Column("profile", "profile", priority=3),
        Column("project", "project", priority=4),
        Column("branch", "branch", priority=6),
        Column("model", "model", priority=5),
        Column("main", "main $", numeric=True, priority=1),
        Column("subagents", "subagents $", numeric=True, priority=3),
        Column("tpm", f"tok/min {RECENT_S // 60}m", numeric=True, priority=2),
        Column("cache", "cache rd", numeric=True, priority=2),
        Column("process", "process", priority=1),
        Column("pid", "pid", numeric=True, priority=4),
        Column("last", "last call", numeric=True, priority=3),
    ),
}


# The "spend by" view: today's (or this week's, month's) totals grouped by one dimension.
GROUPINGS: Final = (
    Dimension.ACCOUNT,
    Dimension.MACHINE,
    Dimension.PROFILE,
    Dimension.AGENT,
    Dimension.PROJECT,
    Dimension.MODEL,
)
SPEND_COLUMNS: Final = (
    Column("key", "group"),
    Column("calls", "calls", numeric=True, priority=3),
    Column("tokens", "tokens", numeric=True, priority=2),
    Column("metered", "metered", numeric=True, priority=1),
    Column("subscription", "subscr. (API-eq)", numeric=True, priority=1),
    Column("estimated", "estimated", numeric=True, priority=2),
    Column("unknown", "unknown", numeric=True, priority=2),
    Column("api", "API-eq total", numeric=True, priority=1),
    Column("cache", "cache rd", numeric=True, priority=3),
    Column("cw_5m", "cache wr 5m", numeric=True, priority=4),
    Column("cw_1h", "cache wr 1h", numeric=True, priority=4),
)


def spend_rows(service: FleetSource, dimension: Dimension, period: Period) -> dict[str, Row]:
    """One row per key of `dimension` with calls in `period` ("(none)": calls that do not say)."""
    out: dict[str, Row] = {}
    for key, t in service.totals(dimension, period).items():
        name = key if key is not None else "(none)"
        machine = name.split("/", 1)[0] if dimension is Dimension.PROFILE else ""
        out[name] = spend_row(name, name, t, machine)
    return out


def spend_row(key: str, label: str, t: Totals, machine: str = "") -> Row:
    """One Spend-by row (`SPEND_COLUMNS`) of the sums `t`, its group cell reading `label`."""
    return Row(
        key,
        (
            Cell(label, label),
            Cell(str(t.calls), t.calls),
            Cell(fmt.tokens(t.tokens), t.tokens),
            *_class_cells(t),
            Cell(fmt.spend(t.api_equivalent, t.unknown_calls), t.api_equivalent),
            _ratio_cell(t),
            Cell(fmt.tokens(t.cache_write_5m), t.cache_write_5m),
            Cell(fmt.tokens(t.cache_write_1h), t.cache_write_1h),
        ),
        machine,
    )


def column_index(table: Table, key: str) -> int:
    return next(i for i, c in enumerate(COLUMNS[table]) if c.key == key)


# A session row's process: (node, the process as the node last reported it).
Process = tuple[str, ProcessInfo]


class _Sweep:
    """Visits each of a changing set of keys about once every `period` seconds, a slice a tick
    in proportion to the time since the last tick, so that no tick pays for a whole sweep."""

    __slots__ = ("_at", "_queue", "period")

    def __init__(self, period: float) -> None:
        self.period = period
        self._queue: list[str] = []
        self._at = 0

    def take(self, keys: Callable[[], Iterable[str]], elapsed: float) -> list[str]:
        if self._at >= len(self._queue):
            self._queue, self._at = list(keys()), 0
        n = math.ceil(len(self._queue) * min(1.0, max(0.0, elapsed) / self.period))
        out = self._queue[self._at : self._at + n]
        self._at += n
        return out


class Dashboard:
    def __init__(
        self,
        service: FleetSource,
        *,
        live_window: float = 1800.0,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.service = service
        self.live_window = live_window
        self.clock = clock or service.clock
        self._lock = threading.Lock()
        self._pending = Update()
        self._first = True
        self._ticked_at = 0.0
        self._header_at = 0.0
        self._nodes: dict[str, NodeView] = {}
        self._profiles: dict[str, ProfileRecord] = {}
        self._hello_profiles: dict[str, tuple[ProfileInfo, ...]] = {}  # per node, as announced
        self._limited: set[str] = set()  # profiles whose countdown moves
        self._machine_figures: dict[str, tuple[Cell, ...]] = {}
        self._sparks: dict[str, tuple[float, Cell]] = {}  # machine -> (drawn at, sparkline)
        self._spark_due: set[str] = set()  # machines whose calls came after their sparkline
        # The rows as last built (before a halt outcome is laid over them): unchanged cells are
        # carried over, so that neither the formatting nor the screen pays for them again.
        self._built: dict[Table, dict[str, Row]] = {t: {} for t in Table}
        # session key -> its process; per node, its processes; what a session row shows of one
        self._procs: dict[str, tuple[str, int]] = {}  # (node, index in its processes)
        self._node_procs: dict[str, tuple[ProcessInfo, ...]] = {}
        # per node, what the rows show of its processes (`_LOOKS`), as of the last change
        self._node_looks: dict[str, tuple[tuple[Any, ...], ...]] = {}
        self._sessions_shown: set[str] = set()
        # per table, the rows that changed and are not built yet, longest waiting first
        self._dirty: dict[Table, dict[str, None]] = {t: {} for t in Table}
        self._refigure: set[str] = set()  # machines whose spend figures are to be read again
        self._sweeps = {
            Table.PROFILES: _Sweep(SWEEP_EVERY_S),
            Table.SESSIONS: _Sweep(SWEEP_EVERY_S),
        }
        self._minute = -1
        self._feed_last: float | None = None  # when the latest line shown happened
        self._outcomes: dict[str, tuple[str, str, float]] = {}  # key -> (text, tone, until)
        # The table the screen shows, whose waiting rows come first (see `_diff`); None: no
        # table is in front, each gets the full budget.
        self.in_front: Table | None = None

    # -- input (any thread) ----------------------------------------------------------------

    def note(self, update: Update) -> None:
        """Remember what changed; `service.subscribe(dashboard.note)`."""
        with self._lock:
            p = self._pending
            p.usage += update.usage
            p.machines |= update.machines
            p.profiles |= update.profiles
            p.sessions |= update.sessions
            p.feed.extend(update.feed)
            p.nodes_changed |= update.nodes_changed

    def note_outcome(self, key: str, text: str, tone: str) -> None:
        """Show a halt action's outcome in the session row's process cell for a few seconds
        (until the node's next report says the same)."""
        with self._lock:
            self._outcomes[key] = (text, tone, self.clock() + OUTCOME_SHOWN_S)
            self._pending.sessions.add(key)

    # -- output (the screen's thread) --------------------------------------------------------

    def tick(self) -> Frame:
        """What changed since the last tick. Each table's rows are built here within a budget
        (see `_diff`); the rest are named in its diff's `stale`, and its `source` builds them
        when the screen needs them (in view, or asked by a filter or a sort)."""
        with self._lock:
            pending, self._pending = self._pending, Update()
            outcomes = set(self._outcomes)
        now = self.clock()
        first, self._first = self._first, False
        elapsed = SWEEP_EVERY_S if first else now - self._ticked_at
        self._ticked_at = now
        minute = int(now // 60)
        new_minute, self._minute = minute != self._minute, minute
        changed = bool(pending.usage or pending.machines or pending.nodes_changed)

        self._nodes = {v.record.node: v for v in self.service.nodes()}
        reported = set(self._nodes) if first else pending.machines & self._nodes.keys()
        touched_sessions = pending.sessions | outcomes
        profiles_announced = first
        for name in reported:
            touched_sessions |= self._refresh_processes(name)
            profiles_announced |= self._announced(name)

        # machines: every row each tick (last-seen ages move); figures for those that reported,
        # and the sparklines that were due while their machine's figures were read
        self._refigure |= set(self._nodes) if first or new_minute else reported
        due = {m for m in self._spark_due if now - self._sparks[m][0] >= SPARK_EVERY_S}
        self._refigure |= due
        self._spark_due -= due
        self._dirty[Table.MACHINES].update(dict.fromkeys(self._nodes))

        profile_keys = pending.profiles | self._limited
        if profiles_announced:
            known = self._profiles
            self._profiles = {profile_key(p.node, p.name): p for p in self.service.profiles()}
            profile_keys |= {k for k, r in self._profiles.items() if known.get(k) != r}
        profile_keys.update(self._sweeps[Table.PROFILES].take(lambda: self._profiles, elapsed))
        self._dirty[Table.PROFILES].update(dict.fromkeys(profile_keys))

        if first:
            since = now - self.live_window
            touched_sessions |= {s.key for s in self.service.active_sessions(since)}
        touched_sessions.update(
            self._sweeps[Table.SESSIONS].take(lambda: self._sessions_shown, elapsed)
        )
        self._dirty[Table.SESSIONS].update(dict.fromkeys(touched_sessions))

        header = None
        if first or changed or new_minute or now - self._header_at >= SWEEP_EVERY_S:
            header = self.header()
            self._header_at = now
        feed, reset = self._feed(pending.feed)
        return Frame({t: self._diff(t) for t in Table}, header, feed, reset)

    def feed_backlog(self, lines: int = FEED_LINES) -> list[FeedItem]:
        """The recent feed, oldest first, as a screen shows it when it opens."""
        items = self.service.recent_feed(lines)
        if items:
            self._feed_last = max(self._feed_last or items[-1].ts, items[-1].ts)
        return items

    def _feed(self, items: list[FeedItem]) -> tuple[list[FeedItem], bool]:
        """New lines in time order; the whole recent feed again (True) when one of them
        happened before a line already shown, so the screen never lists news out of order."""
        items = sorted(items, key=attrgetter("ts"))
        if not items:
            return items, False
        if self._feed_last is not None and items[0].ts < self._feed_last:
            return self.feed_backlog(), True
        self._feed_last = items[-1].ts
        return items, False

    def _diff(self, table: Table) -> TableDiff:
        """New rows (in key order: machine, then profile or session), then the rows longest
        waiting, `OFFSCREEN_ROWS` at least and more while `OFFSCREEN_S` lasts; the rest stay
        stale until the screen or a later tick builds them."""
        dirty = self._dirty[table]
        built = self._built[table]
        waiting = [k for k in dirty if k in built]
        rows, gone = self.rows(table, sorted(k for k in dirty if k not in built))
        front = self.in_front is None or table is self.in_front
        least, budget = (OFFSCREEN_ROWS, OFFSCREEN_S) if front else (BEHIND_ROWS, BEHIND_S)
        chunk = min(_CHUNK, least)
        deadline = time.perf_counter() + budget
        for start in range(0, len(waiting), chunk):
            more, left = self.rows(table, waiting[start : start + chunk])
            rows.update(more)
            gone |= left
            if start + chunk >= least and time.perf_counter() >= deadline:
                break
        return TableDiff(rows, gone, dirty.keys(), partial(self.rows, table))

    def rows(self, table: Table, keys: Iterable[str]) -> tuple[dict[str, Row], set[str]]:
        """Build the rows of `keys` now: (rows, keys whose row has left the view). A key with
        nothing to show (a profile no longer announced, a session never shown) is in neither."""
        now = self.clock()
        dirty = self._dirty[table]
        keys = list(keys)
        for key in keys:
            dirty.pop(key, None)
        if table is Table.MACHINES:
            out = {}
            for name in keys:
                view = self._nodes.get(name)
                if view is not None:
                    out[name] = self._machine_row(view, name in self._refigure, now)
                    self._refigure.discard(name)
            return out, set()
        if table is Table.PROFILES:
            built = self._built[Table.PROFILES]
            out = {}
            for key in keys:
                record = self._profiles.get(key)
                if record is not None:
                    out[key] = built[key] = self._profile_row(key, record, now, built.get(key))
            return out, set()
        diff = TableDiff()
        self._session_rows(keys, now, diff)
        return diff.upserts, diff.removed

    def header(self) -> HeaderFigures:
        online = sum(v.state is NodeState.ONLINE for v in self._nodes.values())
        return fleet_header(self.service, self.clock(), online, len(self._nodes))

    def process_of(self, key: str) -> Process | None:
        """The live process behind a session row (what a halt action names)."""
        at = self._procs.get(key)
        return None if at is None else (at[0], self._node_procs[at[0]][at[1]])

    def processes_of(self, machine: str | None = None, profile: str | None = None) -> list[Process]:
        """Every live agent process of a machine, or of a "machine/profile" key."""
        out: list[Process] = []
        for node, procs in self._node_procs.items():
            for p in procs:
                if machine is not None and node != machine:
                    continue
                if profile is not None and (
                    p.profile is None or profile_key(node, p.profile) != profile
                ):
                    continue
                out.append((node, p))
        return out

    # -- machines ----------------------------------------------------------------------------

    def _machine_row(self, view: NodeView, refigure: bool, now: float) -> Row:
        name = view.record.node
        cached = self._machine_figures.get(name)
        if refigure or cached is None:
            cached = self._machine_figures[name] = self._machine_figure_cells(name, now, cached)
        old = self._built[Table.MACHINES].get(name)
        o = old.cells if old is not None else _NO_CELLS
        seen = view.record.last_seen
        state_tone = {NodeState.ONLINE: "good", NodeState.STALE: "warn"}.get(view.state, "bad")
        procs = view.hello.processes if view.hello else ()
        running = sum(p.state == "running" for p in procs)
        paused = sum(p.state == "paused" for p in procs)
        cells = (
            _pure(o[0], name) or Cell(name, name),
            _same(o[1], view.state.value, _STATE_ORDER[view.state], state_tone),
            _same(o[2], fmt.age(now - seen) if seen else "never", -(seen or 0.0)),
            _same(o[3], f"{running}/{paused}", running + paused, "warn" if paused else ""),
            *cached,
        )
        row = _row(name, cells, name, None, old)
        self._built[Table.MACHINES][name] = row
        return row

    def _machine_figure_cells(
        self, name: str, now: float, old: tuple[Cell, ...] | None
    ) -> tuple[Cell, ...]:
        s = self.service
        o = old or _NO_CELLS
        totals = s.total(Dimension.MACHINE, name, Period.TODAY)
        scope = ("machine", name)
        burn = s.burn_rate_per_hour(scope, minutes=SHORT_MIN)
        drawn = self._sparks.get(name)
        if drawn is None or now - drawn[0] >= SPARK_EVERY_S:
            bins = s.run_rate_bins(scope, SPARK_BINS)
            drawn = self._sparks[name] = (
                now,
                _same(o[6], fmt.sparkline(bins, SPARK_BINS), sum(bins, ZERO)),
            )
            self._spark_due.discard(name)
        else:
            self._spark_due.add(name)  # drawn a moment ago: again when it is due
        return (
            *_class_cells(totals, o[:4]),
            _ratio_cell(totals, o[4]),
            _pure(o[5], burn) or Cell(fmt.money(burn) if burn else "", burn),
            drawn[1],
        )

    def _announced(self, node: str) -> bool:
        """Whether `node`'s hello names other profiles (or other figures of them) than before."""
        view = self._nodes.get(node)
        if view is None or view.hello is None:
            return False
        profiles = view.hello.profiles
        if self._hello_profiles.get(node) == profiles:
            return False
        self._hello_profiles[node] = profiles
        return True

    # -- profiles ----------------------------------------------------------------------------

    def _profile_row(self, key: str, record: ProfileRecord, now: float, old: Row | None) -> Row:
        standing = self.service.profile_standing(key)
        totals = self.service.total(Dimension.PROFILE, key, Period.TODAY)
        if standing.state is ProfileState.RATE_LIMITED or standing.until is not None:
            self._limited.add(key)  # its countdown moves
        else:
            self._limited.discard(key)
        o = old.cells if old is not None else _NO_CELLS
        billing = (
            (record.plan or "subscription") if record.billing is Billing.SUBSCRIPTION else "API"
        )
        agent = record.agent.value
        cells = (
            _pure(o[0], record.name) or Cell(record.name, record.name),
            _pure(o[1], record.node) or Cell(record.node, record.node),
            _pure(o[2], agent) or Cell(agent, agent),
            _pure(o[3], record.account) or Cell(record.account or "", record.account),
            _pure(o[4], billing) or Cell(billing, billing),
            _kept(o[5], state_cell(standing, now)),
            _kept(o[6], _window_cell(standing, LimitWindow.FIVE_HOUR)),
            _kept(o[7], _window_cell(standing, LimitWindow.WEEKLY)),
            *_class_cells(totals, o[8:12]),
            _tokens_cell(o[12], totals.cache_write_5m),
            _tokens_cell(o[13], totals.cache_write_1h),
            *credit_cells(self.service.credits().get(key)),
        )
        return _row(key, cells, record.node, key, old)

    # -- sessions ----------------------------------------------------------------------------

    def _refresh_processes(self, node: str) -> set[str]:
        """Take `node`'s processes as last reported; returns the session rows whose process
        changed as the row shows it (CPU and memory move with every report: the detail view
        reads them from here, so nothing is redrawn for them)."""
        view = self._nodes.get(node)
        procs = view.hello.processes if view and view.hello else ()
        self._node_procs[node] = procs
        looks = tuple(map(_LOOKS, procs))
        old = self._node_looks.get(node, ())
        if looks == old:
            return set()
        self._node_looks[node] = looks
        before = {_look_key(node, look): look for look in old}
        touched: set[str] = set()
        for i, look in enumerate(looks):
            key = _look_key(node, look)
            self._procs[key] = (node, i)
            if before.pop(key, None) != look:
                touched.add(key)
        for key in before:  # ended
            if self._procs.get(key, (node, 0))[0] == node:
                del self._procs[key]
            touched.add(key)
        return touched

    def _session_rows(self, keys: Collection[str], now: float, diff: TableDiff) -> None:
        figures = {s.key: s for s in self.service.sessions(keys)}
        horizon = now - self.live_window
        built = self._built[Table.SESSIONS]
        for key in keys:
            proc = self.process_of(key)
            fig = figures.get(key)
            live = proc is not None or (fig is not None and fig.last_ts >= horizon)
            if not live:
                built.pop(key, None)
                if key in self._sessions_shown:
                    self._sessions_shown.discard(key)
                    diff.removed.add(key)
                continue
            self._sessions_shown.add(key)
            # a process whose session has no call yet: its id is named as the calls' will be
            named = fig is None and proc is not None and proc[1].session_id
            label = self.service.session_label(key) if named else ""
            row = built[key] = session_row(key, fig, proc, now, built.get(key), label)
            diff.upserts[key] = self._with_outcome(self._with_pause(row, proc), now)

    def _with_pause(self, row: Row, proc: Process | None) -> Row:
        """A paused agent's process cell says since when and by whom (from the audit log)."""
        if proc is None or proc[1].state != "paused":
            return row
        pause = self.service.paused_by(*proc)
        if pause is None:
            return row
        cells = list(row.cells)
        i = _PROCESS_COLUMN
        cells[i] = Cell(paused_since(*pause, self.service.tz), cells[i].sort, "warn")
        return Row(row.key, tuple(cells), row.machine, row.profile)

    def _with_outcome(self, row: Row, now: float) -> Row:
        with self._lock:
            outcome = self._outcomes.get(row.key)
            if outcome is not None and outcome[2] <= now:
                del self._outcomes[row.key]
                outcome = None
        if outcome is None:
            return row
        cells = list(row.cells)
        i = _PROCESS_COLUMN
        cells[i] = Cell(outcome[0], cells[i].sort, outcome[1])
        return Row(row.key, tuple(cells), row.machine, row.profile)


_PROCESS_COLUMN: Final = column_index(Table.SESSIONS, "process")
_LOOKS: Final = attrgetter("session_id", "pid", "state", "profile", "cwd")
_STATE_ORDER: Final = {NodeState.ONLINE: 0, NodeState.STALE: 1, NodeState.OFFLINE: 2}
_NO_CELLS: Final[tuple[None, ...]] = (None,) * max(len(c) for c in COLUMNS.values())


def _pure(old: Cell | None, sort: Any) -> Cell | None:
    """`old` when it sorts by `sort`, for a cell whose text and tone follow from its sort
    value alone (no formatting, and the screen sees the same object); else None."""
    if old is not None and old.sort == sort and type(old.sort) is type(sort):
        return old
    return None


def _same(old: Cell | None, text: str, sort: Any, tone: str = "") -> Cell:
    """`old` when it reads and sorts the same, else a new cell."""
    if old is not None and old.text == text and old.tone == tone and _pure(old, sort):
        return old
    return Cell(text, sort, tone)


def _kept(old: Cell | None, new: Cell) -> Cell:
    return old if old is not None and _same(old, new.text, new.sort, new.tone) is old else new


def _row(
    key: str, cells: tuple[Cell, ...], machine: str, profile: str | None, old: Row | None
) -> Row:
    """`old` itself when nothing in it changed (the screen skips it at once), else a new row."""
    if (
        old is not None
        and old.machine == machine
        and old.profile == profile
        and all(a is b for a, b in zip(cells, old.cells, strict=True))
    ):
        return old
    return Row(key, cells, machine, profile)


def process_key(node: str, process: ProcessInfo) -> str:
    """A process's row: its session's when the node could tell it, else its own."""
    return process.session_id or f"{node}:pid{process.pid}"


def _look_key(node: str, look: tuple[Any, ...]) -> str:
    """`process_key` of a process's `_LOOKS`."""
    return str(look[0]) if look[0] else f"{node}:pid{look[1]}"


_NO_FIG_CELLS: Final = (
    Cell("", None),  # branch
    Cell("", None),  # model
    Cell("", ZERO),  # main $
    Cell("", ZERO),  # subagents $
    Cell("", 0.0),  # tok/min
    Cell(fmt.percent(None), None),  # cache rd
)
_NO_FIG_LAST: Final = Cell("", None)


def session_row(
    key: str,
    fig: SessionFigures | None,
    proc: Process | None,
    now: float,
    old: Row | None = None,
    label: str = "",
) -> Row:
    """A session's row; `old`, its previous one, lends the cells that have not changed.
    `label`: the session's short id (`FleetService.session_label`), else its figures'."""
    o = old.cells if old is not None else _NO_CELLS
    node = proc[0] if proc else (fig.machine if fig else "")
    p = proc[1] if proc else None
    profile = (fig.profile if fig else None) or (p.profile if p else None)
    project = (fig.project if fig else None) or (p.cwd if p else None) or ""
    state = p.state if p else ("ended" if fig is None or now - fig.last_ts > 600 else "no process")
    pid = p.pid if p else None
    if fig is None:
        figure_cells = _NO_FIG_CELLS
        last = _NO_FIG_LAST
    else:
        m, s = fig.main, fig.subagents
        main, sub, tpm = m.api_equivalent, s.api_equivalent, fig.tokens_per_minute(now)
        main_text = fmt.spend(main, m.unknown_calls)
        sub_text = fmt.spend(sub, s.unknown_calls, blank_zero=True)
        figure_cells = (
            _pure(o[4], fig.git_branch) or Cell(fig.git_branch or "", fig.git_branch),
            _pure(o[5], fig.model) or Cell(fig.model, fig.model),
            _same(o[6], main_text, main),
            _same(o[7], sub_text, sub),
            _pure(o[8], tpm) or Cell(fmt.tokens(round(tpm)) if tpm else "", tpm),
            _ratio(
                m.input + s.input,
                m.cache_read + s.cache_read,
                m.cache_write_5m + m.cache_write_1h + s.cache_write_5m + s.cache_write_1h,
                o[9],
            ),
        )
        last = _same(o[12], fmt.age(now - fig.last_ts), fig.last_ts)
    same_node = o[1] is not None and o[1].sort == node
    label = label or (fig.label if fig is not None else "") or _short(key, node)
    cells = (
        _same(o[0], label, key),
        o[1] if same_node and o[1] is not None else Cell(node, node),
        _pure(o[2], profile) or Cell(profile or "", profile),
        _pure(o[3], project) or Cell(_tail(project, 28), project),
        *figure_cells,
        _pure(o[10], state) or Cell(state, state, _PROCESS_TONES.get(state, "dim")),
        _pure(o[11], pid) or Cell(str(pid) if pid is not None else "", pid),
        last,
    )
    return _row(key, cells, node, profile_key(node, profile) if profile else None, old)


_PROCESS_TONES: Final = {"paused": "warn", "running": "good", "zombie": "bad"}


def _short(key: str, node: str) -> str:
    return key if key.startswith(node + ":pid") else short_id(key)


def state_cell(standing: ProfileStanding, now: float) -> Cell:
    state = standing.state
    if state is ProfileState.RATE_LIMITED:
        left = f" {fmt.countdown(standing.until - now)}" if standing.until else " (reset ?)"
        return Cell(f"rate-limited{left}", 2, "bad")
    if state is ProfileState.SWITCHED_AWAY:
        to = f" → {standing.switched_to}" if standing.switched_to else " away"
        if standing.until is None:
            return Cell(f"switched{to}", 3, "dim")
        return Cell(f"switched{to} · limited {fmt.countdown(standing.until - now)}", 3, "warn")
    if state is ProfileState.ACTIVE:
        return _ACTIVE
    return _IDLE


_ACTIVE: Final = Cell("active", 0, "good")
_IDLE: Final = Cell("idle", 1, "dim")
_NO_WINDOW: Final = Cell("", None)


def _window_cell(standing: ProfileStanding, window: LimitWindow) -> Cell:
    reading = standing.windows.get(window)
    if reading is None or reading.used_percent is None:
        return _NO_WINDOW
    used = reading.used_percent
    tone = "bad" if used >= 90 else "warn" if used >= 70 else ""
    return Cell(f"{used:.0f}%", used, tone)


_NO_UNKNOWN: Final = Cell("", 0)


def _class_cells(t: Totals, old: Sequence[Cell | None] = _NO_CELLS) -> tuple[Cell, ...]:
    """metered, subscription, estimated, unknown; `old` lends the cells that have not changed."""
    unknown = (
        _same(
            old[3], f"{t.unknown_calls} / {fmt.tokens(t.unknown_tokens)}", t.unknown_tokens, "warn"
        )
        if t.unknown_calls
        else _NO_UNKNOWN
    )
    return (
        _pure(old[0], t.metered) or Cell(fmt.money_or_blank(t.metered), t.metered),
        _pure(old[1], t.subscription_included)
        or Cell(fmt.money_or_blank(t.subscription_included), t.subscription_included),
        _pure(old[2], t.estimated) or Cell(fmt.money_or_blank(t.estimated), t.estimated),
        unknown,
    )


def _ratio_cell(t: Totals, old: Cell | None = None) -> Cell:
    return _ratio(t.input, t.cache_read, t.cache_write_5m + t.cache_write_1h, old)


def _ratio(input_: int, cache_read: int, writes: int, old: Cell | None) -> Cell:
    """Share of prompt tokens read from the cache; red when the scope thrashes the cache, and
    marked, so that it reads so without colour too."""
    ratio = cache_ratio(input_, cache_read, writes)
    tone = "bad" if is_thrash(ratio, writes) else ""
    if old is not None and old.tone == tone and _pure(old, ratio):
        return old
    return Cell(fmt.percent(ratio) + (THRASH_MARK if tone else ""), ratio, tone)


def credit_cells(credit: Mapping[str, Any] | None) -> tuple[Cell, Cell]:
    """The Agent SDK credit drawn of the month's ("$12.30 / $100", "~" when estimated: some
    calls' logs did not say how the agent was started) and the overage past it."""
    if credit is None:
        return Cell("", None), Cell("", None)
    used = Decimal(credit["used_usd"])
    mark = "~" if credit["estimated"] else ""
    if credit["credit_usd"] is None:  # not known: the SDK calls are estimated apart
        used = Decimal(credit["untold_usd"])
        text, tone = f"~{fmt.money(used)} / ?", "warn"
    else:
        total = Decimal(credit["credit_usd"])
        tone = "warn" if used >= total else ""
        text = f"{mark}{fmt.money(used)} / {fmt.money(total)}"
    overage = Decimal(credit["overage_usd"]) + Decimal(credit["refused_usd"])
    return (
        Cell(text, used, tone),
        Cell(fmt.money_or_blank(overage), overage, "bad" if overage else ""),
    )


def _tokens_cell(old: Cell | None, n: int) -> Cell:
    return _pure(old, n) or Cell(fmt.tokens(n), n)


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


# -- the detail view ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Detail:
    """What the detail view shows for one row: figures, spend over time, sessions, timeline."""

    title: str
    figures: tuple[tuple[str, str], ...]  # (label, value) lines
    series: tuple[Decimal, ...]  # API-equivalent spend per bin, oldest first
    series_label: str
    sessions: tuple[Row, ...]
    timeline: tuple[str, ...]  # the profile timeline, newest first


TIMELINE_LINES: Final = 30


def period_figures(service: FleetSource, dimension: Dimension, key: str) -> list[tuple[str, str]]:
    out = []
    for period in Period:
        t = service.total(dimension, key, period)
        out.append((period.value, _figures_text(t)))
    return out


def _figures_text(t: Totals) -> str:
    unknown = (
        f" · unknown {t.unknown_calls} calls/{fmt.tokens(t.unknown_tokens)}"
        if t.unknown_calls
        else ""
    )
    return (
        f"metered {fmt.money(t.metered)} · subscription {fmt.money(t.subscription_included)} · "
        f"estimated {fmt.money(t.estimated)}{unknown} · "
        f"API-eq {fmt.spend(t.api_equivalent, t.unknown_calls)} · "
        f"{t.calls} calls · cache rd {fmt.percent(cache_read_ratio(t))} · "
        f"cache wr 5m {fmt.tokens(t.cache_write_5m)} / 1h {fmt.tokens(t.cache_write_1h)}"
    )


def timeline_lines(service: FleetSource, keys: list[str], tz: Any) -> tuple[str, ...]:
    events = [e for key in keys for e in service.profile_history(key)]
    events.sort(key=lambda e: e.ts, reverse=True)
    lines = []
    for e in events[:TIMELINE_LINES]:
        when = datetime.fromtimestamp(e.ts, tz).strftime("%m-%d %H:%M:%S")
        text = f"{when}  {e.machine}/{e.profile}  {e.state.value}"
        if e.until:
            text += f" until {datetime.fromtimestamp(e.until, tz).strftime('%H:%M')}"
        if e.switched_to:
            text += f" → {e.switched_to}"
        if e.reason:
            text += f" ({e.reason})"
        lines.append(text)
    return tuple(lines)


def machine_detail(dash: Dashboard, machine: str, bins: int = 72) -> Detail:
    s = dash.service
    now = dash.clock()
    sessions = [f for f in s.active_sessions(now - dash.live_window) if f.machine == machine]
    keys = [profile_key(p.node, p.name) for p in s.profiles() if p.node == machine]
    return Detail(
        f"machine {machine}",
        tuple(period_figures(s, Dimension.MACHINE, machine)),
        tuple(s.run_rate_bins(("machine", machine), bins)),
        "API-eq spend, last 6 h",
        tuple(session_row(f.key, f, dash.process_of(f.key), now) for f in sessions),
        timeline_lines(s, keys, s.tz),
    )


def profile_detail(dash: Dashboard, key: str, bins: int = 72) -> Detail:
    s = dash.service
    now = dash.clock()
    name = key.split("/", 1)[1]
    standing = s.profile_standing(key)
    figures = [("now", state_cell(standing, now).text), *period_figures(s, Dimension.PROFILE, key)]
    sessions = [f for f in s.active_sessions(now - dash.live_window) if f.profile == name]
    return Detail(
        f"profile {name} on {key.split('/', 1)[0]} (sessions: all machines)",
        tuple(figures),
        tuple(s.run_rate_bins(("profile", key), bins)),
        "API-eq spend, last 6 h",
        tuple(session_row(f.key, f, dash.process_of(f.key), now) for f in sessions),
        timeline_lines(s, [key], s.tz),
    )


def session_detail(dash: Dashboard, key: str, bins: int = 72) -> Detail:
    s = dash.service
    now = dash.clock()
    found = s.sessions([key])
    fig = found[0] if found else None
    proc = dash.process_of(key)
    figures: list[tuple[str, str]] = []
    if fig is not None:
        figures += [
            ("main", _figures_text(fig.main)),
            ("subagents", _figures_text(fig.subagents)),
            (
                "where",
                f"{fig.machine} · {fig.profile or '?'} · {fig.project or '?'} · "
                f"{fig.git_branch or '-'} · {fig.model}",
            ),
        ]
    if fig is not None:
        figures.append(("outcome", outcome_words(s.session_outcome(key))))
    if proc is not None:
        node, p = proc
        figures.append(
            (
                "process",
                f"{node} pid {p.pid} · {p.state} · cpu {p.cpu_percent:.0f}% · "
                f"rss {p.rss // 2**20} MiB · {p.children} children · {p.cwd or ''}",
            )
        )
    series = s.session_series(key, bins)
    first, last = series.first_call, series.last_call
    label = (
        f"API-eq spend over the session's life ({fmt.age(last - first)})" if first else "no calls"
    )
    if series.rolled_up_before is not None:
        when = datetime.fromtimestamp(series.rolled_up_before, s.tz).strftime("%Y-%m-%d %H:%M")
        label += f"; before {when} by quarter-hour"
        figures.append(("events", f"pruned before {when}; totals from roll-ups"))
    pkey = profile_key(fig.machine, fig.profile) if fig and fig.profile else None
    return Detail(
        f"session {key}",
        tuple(figures),
        tuple(series.bins),
        label,
        (session_row(key, fig, proc, now),),
        timeline_lines(s, [pkey] if pkey else [], s.tz),
    )
