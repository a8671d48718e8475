"""What the dashboard shows, as plain rows: the view model between the hub service and any screen.

No Textual here (the TUI in `hub/tui/` renders these rows; a test or a benchmark reads them
directly). The service tells `note()` what changed, on whatever thread changed it; `tick()`,
called by the screen a few times a second, returns only the rows that need redrawing:

- machines: the ones that reported, and every row once a second (last-seen ages move);
- profiles: the ones with new calls or limit/profile events, rate-limited ones each second
  (their countdown), and all of them each sweep (idle comes from the clock);
- sessions: the ones with new calls or whose process changed, and all shown ones each sweep
  (tokens per minute decay); a session leaves the view when it has no process and no call in
  `live_window` seconds.

Each cell carries its text, a sort value (numbers sort as numbers, blanks last) and a tone
(a meaning such as "bad" or "dim", not a colour: the screen picks colours).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from hub import _format as fmt
from hub._sessions import SessionFigures, cache_read_ratio
from hub._totals import ZERO, Basis, Totals
from hub.ledger import Dimension, Period, profile_key
from hub.model import NodeState, ProfileRecord
from hub.profile_board import ProfileStanding
from hub.service import FeedItem, FleetService, NodeView, Update
from shared.config import Billing
from shared.events import LimitWindow, ProfileState
from shared.hello import ProcessInfo

SWEEP_EVERY_S: Final = 5.0
PROFILE_LIST_EVERY_S: Final = 2.0
SPARK_BINS: Final = 24  # 6 h of run rate in 15-minute bars
OUTCOME_SHOWN_S: Final = 8.0  # a halt action's outcome stays on its row this long


class Table(StrEnum):
    MACHINES = "machines"
    PROFILES = "profiles"
    SESSIONS = "sessions"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    numeric: bool = False  # right-aligned; sorts largest first on the first press


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


@dataclass(slots=True)
class TableDiff:
    upserts: dict[str, Row] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class HeaderFigures:
    """The fleet's figures for today, as the header shows them."""

    metered: Decimal
    subscription_included: Decimal
    estimated: Decimal
    unknown_calls: int
    unknown_tokens: int
    api_equivalent: Decimal
    burn_paid_per_hour: Decimal  # metered + estimated, last 15 minutes
    burn_api_per_hour: Decimal  # API-equivalent, last 15 minutes
    projected_day: Decimal  # paid: today so far + paid burn until midnight
    projected_month: Decimal  # paid: month so far + today's projection + daily average after
    online: int
    nodes: int

    def line(self) -> str:
        unknown = (
            f"unknown {self.unknown_calls} calls / {fmt.tokens(self.unknown_tokens)} tok"
            if self.unknown_calls
            else "unknown –"
        )
        return (
            f"today  metered {fmt.money(self.metered)} · "
            f"subscription {fmt.money(self.subscription_included)} (API-eq) · "
            f"estimated {fmt.money(self.estimated)} · {unknown}  │  "
            f"burn {fmt.money(self.burn_paid_per_hour)}/h paid, "
            f"{fmt.money(self.burn_api_per_hour)}/h API-eq  │  "
            f"→ day {fmt.money(self.projected_day)} · month {fmt.money(self.projected_month)}  │  "
            f"nodes {self.online}/{self.nodes}"
        )


@dataclass(slots=True)
class Frame:
    """One tick's worth of redrawing."""

    tables: dict[Table, TableDiff]
    header: HeaderFigures | None  # None: unchanged
    feed: list[FeedItem]


COLUMNS: Final[dict[Table, tuple[Column, ...]]] = {
    Table.MACHINES: (
        Column("machine", "machine"),
        Column("state", "state"),
        Column("seen", "seen", numeric=True),
        Column("agents", "agents ▶/⏸", numeric=True),
        Column("metered", "metered", numeric=True),
        Column("subscription", "subscr. (API-eq)", numeric=True),
        Column("estimated", "estimated", numeric=True),
        Column("unknown", "unknown", numeric=True),
        Column("cache", "cache rd", numeric=True),
        Column("burn", "$/h", numeric=True),
        Column("spark", "last 6 h"),
    ),
    Table.PROFILES: (
        Column("profile", "profile"),
        Column("machine", "machine"),
        Column("agent", "agent"),
        Column("account", "account"),
        Column("billing", "billing"),
        Column("state", "state"),
        Column("window_5h", "5h", numeric=True),
        Column("window_weekly", "week", numeric=True),
        Column("metered", "metered", numeric=True),
        Column("subscription", "subscr. (API-eq)", numeric=True),
        Column("estimated", "estimated", numeric=True),
        Column("unknown", "unknown", numeric=True),
        Column("cw_5m", "cache wr 5m", numeric=True),
        Column("cw_1h", "cache wr 1h", numeric=True),
    ),
    Table.SESSIONS: (
        Column("session", "session"),
        Column("machine", "machine"),
        Column("profile", "profile"),
        Column("project", "project"),
        Column("branch", "branch"),
        Column("model", "model"),
        Column("main", "main $", numeric=True),
        Column("subagents", "subagents $", numeric=True),
        Column("tpm", "tok/min", numeric=True),
        Column("cache", "cache rd", numeric=True),
        Column("process", "process"),
        Column("pid", "pid", numeric=True),
        Column("last", "last call", numeric=True),
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
    Column("calls", "calls", numeric=True),
    Column("tokens", "tokens", numeric=True),
    Column("metered", "metered", numeric=True),
    Column("subscription", "subscr. (API-eq)", numeric=True),
    Column("estimated", "estimated", numeric=True),
    Column("unknown", "unknown", numeric=True),
    Column("api", "API-eq total", numeric=True),
    Column("cache", "cache rd", numeric=True),
    Column("cw_5m", "cache wr 5m", numeric=True),
    Column("cw_1h", "cache wr 1h", numeric=True),
)


def spend_rows(service: FleetService, dimension: Dimension, period: Period) -> dict[str, Row]:
    """One row per key of `dimension` with calls in `period` ("(none)": calls that do not say)."""
    out: dict[str, Row] = {}
    for key, t in service.totals(dimension, period).items():
        name = key if key is not None else "(none)"
        machine = name.split("/", 1)[0] if dimension is Dimension.PROFILE else ""
        out[name] = Row(
            name,
            (
                Cell(name, name),
                Cell(str(t.calls), t.calls),
                Cell(fmt.tokens(t.tokens), t.tokens),
                *_class_cells(t),
                Cell(fmt.money(t.api_equivalent), t.api_equivalent),
                _ratio_cell(t),
                Cell(fmt.tokens(t.cache_write_5m), t.cache_write_5m),
                Cell(fmt.tokens(t.cache_write_1h), t.cache_write_1h),
            ),
            machine,
        )
    return out


def column_index(table: Table, key: str) -> int:
    return next(i for i, c in enumerate(COLUMNS[table]) if c.key == key)


# A session row's process: (node, the process as the node last reported it).
Process = tuple[str, ProcessInfo]


class Dashboard:
    def __init__(
        self,
        service: FleetService,
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
        self._nodes: dict[str, NodeView] = {}
        self._profiles: dict[str, ProfileRecord] = {}
        self._profiles_at = 0.0
        self._limited: set[str] = set()  # profiles whose countdown moves
        self._machine_figures: dict[str, tuple[Cell, ...]] = {}
        # session key -> its process; and per node, the session keys its processes fill
        self._procs: dict[str, Process] = {}
        self._node_procs: dict[str, tuple[ProcessInfo, ...]] = {}
        self._sessions_shown: set[str] = set()
        self._minute = -1
        self._swept = 0.0
        self._outcomes: dict[str, tuple[str, str, float]] = {}  # key -> (text, tone, until)

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
        with self._lock:
            pending, self._pending = self._pending, Update()
        now = self.clock()
        first, self._first = self._first, False
        minute = int(now // 60)
        new_minute, self._minute = minute != self._minute, minute
        sweep = first or now - self._swept >= SWEEP_EVERY_S
        if sweep:
            self._swept = now
        changed = bool(pending.usage or pending.machines or pending.nodes_changed)

        self._nodes = {v.record.node: v for v in self.service.nodes()}
        figures_for = set(self._nodes) if first or new_minute else pending.machines
        machines = TableDiff()
        for name, view in self._nodes.items():
            machines.upserts[name] = self._machine_row(view, name in figures_for, now)

        sessions = TableDiff()
        touched_sessions = set(pending.sessions)
        for name in pending.machines | (set(self._nodes) if first else set()):
            touched_sessions |= self._refresh_processes(name)

        profiles = TableDiff()
        profile_keys = set(pending.profiles) | self._limited
        if first or (pending.machines and now - self._profiles_at >= PROFILE_LIST_EVERY_S):
            known = self._profiles
            self._profiles = {profile_key(p.node, p.name): p for p in self.service.profiles()}
            self._profiles_at = now
            profile_keys |= set(self._profiles) - set(known)
        if sweep or new_minute:
            profile_keys |= set(self._profiles)
        for key in profile_keys:
            record = self._profiles.get(key)
            if record is not None:
                profiles.upserts[key] = self._profile_row(key, record)

        with self._lock:
            touched_sessions |= set(self._outcomes)
        if sweep or new_minute:
            touched_sessions |= self._sessions_shown
            since = now - self.live_window
            touched_sessions |= {s.key for s in self.service.active_sessions(since)}
        self._session_rows(touched_sessions, now, sessions)

        header = self.header() if first or changed or sweep or new_minute else None
        return Frame(
            {Table.MACHINES: machines, Table.PROFILES: profiles, Table.SESSIONS: sessions},
            header,
            pending.feed,
        )

    def header(self) -> HeaderFigures:
        s = self.service
        today = s.fleet(Period.TODAY)
        month = s.fleet(Period.MONTH)
        paid = s.burn_rate_per_hour(basis=Basis.METERED)
        api = s.burn_rate_per_hour(basis=Basis.API_EQUIVALENT)
        now = datetime.fromtimestamp(self.clock(), s.ledger.tz)
        day, month_total = project(today, month, paid, now)
        online = sum(v.state is NodeState.ONLINE for v in self._nodes.values())
        return HeaderFigures(
            today.metered,
            today.subscription_included,
            today.estimated,
            today.unknown_calls,
            today.unknown_tokens,
            today.api_equivalent,
            paid,
            api,
            day,
            month_total,
            online,
            len(self._nodes),
        )

    def process_of(self, key: str) -> Process | None:
        """The live process behind a session row (what a halt action names)."""
        return self._procs.get(key)

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
            cached = self._machine_figures[name] = self._machine_figure_cells(name)
        seen = view.record.last_seen
        state_tone = {NodeState.ONLINE: "good", NodeState.STALE: "warn"}.get(view.state, "bad")
        procs = view.hello.processes if view.hello else ()
        running = sum(p.state == "running" for p in procs)
        paused = sum(p.state == "paused" for p in procs)
        live = (
            Cell(name, name),
            Cell(view.state.value, _STATE_ORDER[view.state], state_tone),
            Cell(fmt.age(now - seen) if seen else "never", -(seen or 0.0)),
            Cell(f"{running}/{paused}", running + paused, "warn" if paused else ""),
        )
        return Row(name, live + cached, name)

    def _machine_figure_cells(self, name: str) -> tuple[Cell, ...]:
        s = self.service
        totals = s.total(Dimension.MACHINE, name, Period.TODAY)
        scope = ("machine", name)
        burn = s.burn_rate_per_hour(scope)
        spark = s.run_rate_bins(scope, SPARK_BINS)
        return (
            *_class_cells(totals),
            _ratio_cell(totals),
            Cell(fmt.money(burn) if burn else "", burn),
            Cell(fmt.sparkline(spark, SPARK_BINS), sum(spark, ZERO)),
        )

    # -- profiles ----------------------------------------------------------------------------

    def _profile_row(self, key: str, record: ProfileRecord) -> Row:
        standing = self.service.profile_standing(key)
        totals = self.service.total(Dimension.PROFILE, key, Period.TODAY)
        now = self.clock()
        if standing.state is ProfileState.RATE_LIMITED:
            self._limited.add(key)
        else:
            self._limited.discard(key)
        billing = (
            (record.plan or "subscription") if record.billing is Billing.SUBSCRIPTION else "API"
        )
        return Row(
            key,
            (
                Cell(record.name, record.name),
                Cell(record.node, record.node),
                Cell(record.agent.value, record.agent.value),
                Cell(record.account or "", record.account),
                Cell(billing, billing),
                state_cell(standing, now),
                _window_cell(standing, LimitWindow.FIVE_HOUR),
                _window_cell(standing, LimitWindow.WEEKLY),
                *_class_cells(totals),
                Cell(fmt.tokens(totals.cache_write_5m), totals.cache_write_5m),
                Cell(fmt.tokens(totals.cache_write_1h), totals.cache_write_1h),
            ),
            record.node,
            key,
        )

    # -- sessions ----------------------------------------------------------------------------

    def _refresh_processes(self, node: str) -> set[str]:
        """Re-read `node`'s processes; returns the session rows whose process changed."""
        view = self._nodes.get(node)
        procs = view.hello.processes if view and view.hello else ()
        old = self._node_procs.get(node, ())
        if procs == old:
            return set()
        self._node_procs[node] = procs
        touched: set[str] = set()
        for p in old:
            key = process_key(node, p)
            self._procs.pop(key, None)
            touched.add(key)
        for p in procs:
            key = process_key(node, p)
            self._procs[key] = (node, p)
            touched.add(key)
        return touched

    def _session_rows(self, keys: set[str], now: float, diff: TableDiff) -> None:
        figures = {s.key: s for s in self.service.sessions(keys)}
        horizon = now - self.live_window
        for key in keys:
            proc = self._procs.get(key)
            fig = figures.get(key)
            live = proc is not None or (fig is not None and fig.last_ts >= horizon)
            if not live:
                if key in self._sessions_shown:
                    self._sessions_shown.discard(key)
                    diff.removed.add(key)
                continue
            self._sessions_shown.add(key)
            row = session_row(key, fig, proc, now)
            diff.upserts[key] = self._with_outcome(row, now)

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
_STATE_ORDER: Final = {NodeState.ONLINE: 0, NodeState.STALE: 1, NodeState.OFFLINE: 2}


def process_key(node: str, process: ProcessInfo) -> str:
    """A process's row: its session's when the node could tell it, else its own."""
    return process.session_id or f"{node}:pid{process.pid}"


def session_row(key: str, fig: SessionFigures | None, proc: Process | None, now: float) -> Row:
    node = proc[0] if proc else (fig.machine if fig else "")
    p = proc[1] if proc else None
    profile = (fig.profile if fig else None) or (p.profile if p else None)
    main = fig.main.api_equivalent if fig else ZERO
    sub = fig.subagents.api_equivalent if fig else ZERO
    tpm = fig.tokens_per_minute(now) if fig else 0.0
    total = fig.total if fig else Totals()
    project = (fig.project if fig else None) or (p.cwd if p else None) or ""
    state = p.state if p else ("ended" if fig is None or now - fig.last_ts > 600 else "no process")
    tone = {"paused": "warn", "running": "good", "zombie": "bad"}.get(state, "dim")
    short = key if key.startswith(node + ":pid") else key[:8]
    return Row(
        key,
        (
            Cell(short, key),
            Cell(node, node),
            Cell(profile or "", profile),
            Cell(_tail(project, 28), project),
            Cell(fig.git_branch or "" if fig else "", fig.git_branch if fig else None),
            Cell(fig.model if fig else "", fig.model if fig else None),
            Cell(fmt.money(main) if fig else "", main),
            Cell(fmt.money_or_blank(sub), sub),
            Cell(fmt.tokens(round(tpm)) if tpm else "", tpm),
            _ratio_cell(total),
            Cell(state, state, tone),
            Cell(str(p.pid) if p else "", p.pid if p else None),
            Cell(fmt.age(now - fig.last_ts) if fig else "", -(fig.last_ts if fig else 0.0)),
        ),
        node,
        profile_key(node, profile) if profile else None,
    )


def state_cell(standing: ProfileStanding, now: float) -> Cell:
    state = standing.state
    if state is ProfileState.RATE_LIMITED:
        left = f" {fmt.countdown(standing.until - now)}" if standing.until else " (reset ?)"
        return Cell(f"rate-limited{left}", 2, "bad")
    if state is ProfileState.SWITCHED_AWAY:
        to = f" → {standing.switched_to}" if standing.switched_to else ""
        return Cell(f"switched away{to}", 3, "dim")
    if state is ProfileState.ACTIVE:
        return Cell("active", 0, "good")
    return Cell("idle", 1, "dim")


def _window_cell(standing: ProfileStanding, window: LimitWindow) -> Cell:
    reading = standing.windows.get(window)
    if reading is None or reading.used_percent is None:
        return Cell("", None)
    used = reading.used_percent
    tone = "bad" if used >= 90 else "warn" if used >= 70 else ""
    return Cell(f"{used:.0f}%", used, tone)


def _class_cells(t: Totals) -> tuple[Cell, ...]:
    unknown = (
        Cell(f"{t.unknown_calls} / {fmt.tokens(t.unknown_tokens)}", t.unknown_tokens, "warn")
        if t.unknown_calls
        else Cell("", 0)
    )
    return (
        Cell(fmt.money_or_blank(t.metered), t.metered),
        Cell(fmt.money_or_blank(t.subscription_included), t.subscription_included),
        Cell(fmt.money_or_blank(t.estimated), t.estimated),
        unknown,
    )


def _ratio_cell(t: Totals) -> Cell:
    ratio = cache_read_ratio(t)
    writes = t.cache_write_5m + t.cache_write_1h
    # Cache thrash: paying to write prompts that are never read back.
    thrash = ratio is not None and ratio < 0.2 and writes > 50_000
    return Cell(fmt.percent(ratio), ratio, "bad" if thrash else "")


def _tail(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def project(
    today: Totals, month: Totals, paid_per_hour: Decimal, now: datetime
) -> tuple[Decimal, Decimal]:
    """(end of day, end of month) paid spend: today so far plus the current paid burn until
    midnight; the month so far plus that, plus the month's average day for the days left."""
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo)
    hours_left = Decimal(str((midnight - now).total_seconds())) / 3600
    rest_of_today = paid_per_hour * hours_left
    day = today.metered + today.estimated + rest_of_today
    so_far = month.metered + month.estimated + rest_of_today
    first_next = (now.replace(day=28) + timedelta(days=4)).replace(day=1)
    days_after_today = (first_next.date() - now.date()).days - 1
    average_day = so_far / now.day
    return day, so_far + average_day * days_after_today


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


def period_figures(service: FleetService, dimension: Dimension, key: str) -> list[tuple[str, str]]:
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
        f"estimated {fmt.money(t.estimated)}{unknown} · API-eq {fmt.money(t.api_equivalent)} · "
        f"{t.calls} calls · cache rd {fmt.percent(cache_read_ratio(t))} · "
        f"cache wr 5m {fmt.tokens(t.cache_write_5m)} / 1h {fmt.tokens(t.cache_write_1h)}"
    )


def timeline_lines(service: FleetService, keys: list[str], tz: Any) -> tuple[str, ...]:
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
        timeline_lines(s, keys, s.ledger.tz),
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
        timeline_lines(s, [key], s.ledger.tz),
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
    if proc is not None:
        node, p = proc
        figures.append(
            (
                "process",
                f"{node} pid {p.pid} · {p.state} · cpu {p.cpu_percent:.0f}% · "
                f"rss {p.rss // 2**20} MiB · {p.children} children · {p.cwd or ''}",
            )
        )
    first, last, series = s.session_series(key, bins)
    label = (
        f"API-eq spend over the session's life ({fmt.age(last - first)})" if first else "no calls"
    )
    pkey = profile_key(fig.machine, fig.profile) if fig and fig.profile else None
    return Detail(
        f"session {key}",
        tuple(figures),
        tuple(series),
        label,
        (session_row(key, fig, proc, now),),
        timeline_lines(s, [pkey] if pkey else [], s.ledger.tz),
    )
