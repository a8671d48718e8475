"""fleet-hub's dashboard: the fleet's spend live, per machine, profile and session, with halt keys.

The app reads only through the hub service (via `hub.dashboard`), on a timer: the service tells
the dashboard what changed from its own threads, and every `TICK_S` the app takes one
`Frame` and writes only the changed cells. Halt actions go through `FleetSource.acommand`
(the same command path as any other client), off the UI loop, and their outcome is written to
the row, the feed and the hub's audit log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import ClassVar, Final

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Input, RichLog, Static, TabbedContent, TabPane

from hub.dashboard import (
    COLUMNS,
    GROUPINGS,
    SPEND_COLUMNS,
    Dashboard,
    Detail,
    Frame,
    HeaderFigures,
    Table,
    TableDiff,
    machine_detail,
    process_key,
    profile_detail,
    session_detail,
    spend_rows,
)
from hub.governance import Governance, backend_for
from hub.governance_rows import (
    ALERT_COLUMNS,
    BUDGET_COLUMNS,
    Breaches,
    alert_rows,
    breaches,
    budget_rows,
    open_alerts,
)
from hub.ledger import Dimension, Period
from hub.outcome_view import OUTCOME_VIEWS, VIEW_NAMES, outcome_spend_rows
from hub.reconcile_rows import RECONCILE_COLUMNS
from hub.service import Action, CommandOutcome, FeedItem
from hub.source import FleetSource
from hub.tui.governance import GovernanceKeys
from hub.tui.reconcile import ReconcileTab
from hub.tui.screens import ConfirmScreen, DetailScreen, HelpScreen, SortScreen
from hub.tui.table import LiveTable
from hub.tui.trail import Step, Trail

TICK_S: Final = 0.25
NEEDS_OPERATOR: Final = "needs an operator token"
SPEND_EVERY_S: Final = 1.0
FEED_KINDS: Final = {
    "node": "cyan",
    "limit": "bold red",
    "profile": "magenta",
    "session": "green",
    "command": "bold yellow",
    "auth": "bold red",
}
NOTES: Final = (
    "Classes: metered = paid per token (API keys); subscription = included in a plan, shown at "
    "API-equivalent rates; estimated = metered but from an approximation (e.g. no 5m/1h cache "
    "split); unknown = no price for the model: counted in calls and tokens, never as $0.",
    "Burn: $/h over the last 5 minutes and the last hour (paid = metered + estimated, then "
    "API-equivalent), divided by the part of the window the hub's figures cover. Projections, "
    "once today's figures cover 15 minutes (before: '→ day –'): day = today so far + the "
    "last hour's paid burn until midnight; month = the month so far and that, plus the "
    "average covered day for each day left. tok/min: a session's tokens of the last 5 "
    "minutes, per minute (zero 5 minutes after its last call).",
    "Cache rd: share of prompt tokens read from the cache; red and marked ▼ when low while "
    "writing a lot (cache thrash).",
    "Columns: a narrow screen shows the most important ones that fit; c shows them all "
    "(← → scroll sideways) and c again fits them.",
    "Halt actions go to the node that runs the agent and name (pid, start time); each is "
    "written to the feed and the hub's audit log with its outcome.",
)


class FiguresLine(Static):
    """The header: the fleet's figures, abbreviated to the line's width (again on a resize)."""

    figures: HeaderFigures | None = None

    def show(self, figures: HeaderFigures) -> None:
        self.figures = figures
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        width = self.content_size.width
        if self.figures is not None and width:
            # One line high, fixed: no need to lay out the whole screen again (~10 ms a tick).
            self.update(Text(self.figures.line(width), no_wrap=True), layout=False)


class FleetApp(App[None]):
    TITLE = "fleet-hub"
    CSS = """
    #figures { height: 1; background: $boost; padding: 0 1; }
    #figures.unreachable { color: $text-disabled; }
    .unreachable LiveTable { opacity: 60%; }
    #scope { height: 1; color: $text-muted; padding: 0 1; }
    #tabs { height: 1fr; }
    #tabs TabPane { height: 1fr; padding: 0; }
    #feed-row { height: 8; }
    #feed { height: 8; border-top: solid $primary-darken-2; }
    #filter { dock: bottom; display: none; }
    #filter.shown { display: block; }
    LiveTable { height: 1fr; }
    #reconcile-note { display: none; height: auto; max-height: 24; padding: 0 1; }
    #reconcile-note.shown { display: block; }
    ConfirmScreen, HelpScreen, SortScreen, DetailScreen, FormScreen, InfoScreen {
        align: center middle;
    }
    InfoScreen #dialog {
        width: 100; max-width: 100%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    FormScreen #dialog {
        width: 80; height: auto; max-width: 100%; max-height: 100%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    FormScreen .form-field { height: 1; margin-top: 1; }
    FormScreen .form-label { width: 8; }
    FormScreen Input { width: 1fr; }
    #form-problem { height: auto; margin-top: 1; }
    ConfirmScreen #dialog, SortScreen #dialog {
        width: 80; height: auto; border: thick $error; background: $surface; padding: 1 2;
    }
    ConfirmScreen #dialog, SortScreen #dialog { max-width: 100%; max-height: 100%; }
    HelpScreen #dialog {
        width: 100; max-width: 100%; height: 80%; min-height: 10; max-height: 100%;
        border: thick $primary; background: $surface;
    }
    #buttons { height: auto; margin-top: 1; }
    #buttons Button { margin-right: 2; }
    DetailScreen #detail {
        width: 95%; height: 90%; border: thick $primary; background: $surface; padding: 0 1;
    }
    #detail-spark { height: 3; margin-bottom: 1; }
    #detail-sessions { height: 12; }
    SortScreen OptionList { height: auto; max-height: 20; }
    """

    # The footer shows these in order and cuts what does not fit: the halt keys come first.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "halt('pause')", "Pause"),
        Binding("r", "halt('resume')", "Resume"),
        Binding("k", "halt('kill')", "Kill"),
        Binding("P", "halt_all('pause')", "Pause all"),
        Binding("R", "halt_all('resume')", "Resume all"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort", "Sort"),
        # Not in the footer, which keeps the halt keys whole at 80 columns: enter opens the
        # detail too, the table says "N more columns (c)", and ? lists them all.
        Binding("d", "detail", "Detail", show=False),
        Binding("c", "columns", "Columns", show=False),
        Binding("1", "tab('machines')", "Machines", show=False),  # the tabs' labels say 1-4
        Binding("2", "tab('profiles')", "Profiles", show=False),
        Binding("3", "tab('sessions')", "Sessions", show=False),
        Binding("4", "tab('spend')", "Spend by", show=False),
        Binding("5", "tab('budgets')", "Budgets", show=False),
        Binding("6", "tab('alerts')", "Alerts", show=False),
        Binding("7", "tab('reconcile')", "Reconciliation", show=False),
        Binding("u", "reconcile_now", "Reconcile now", show=False),
        # the Budgets and Alerts tabs' keys (the line under the header names them there)
        Binding("a", "add", "Add / ack", show=False),
        Binding("e", "edit", "Edit budget", show=False),
        Binding("x", "remove", "Remove budget", show=False),
        Binding("m", "silence", "Silence", show=False),
        Binding("y", "retry", "Retry delivery", show=False),
        Binding("escape", "step_back", "Back", show=False),
        Binding("g", "grouping", "Group", show=False),
        Binding("t", "period", "Period", show=False),
        Binding("o", "outcome_view", "Outcome", show=False),
    ]
    KEY_HELP: Final = (
        (
            "1 2 3 4 5 6 7",
            "Machines, Profiles, Sessions, Spend-by, Budgets, Alerts, Reconciliation",
        ),
        # the halt keys first: an 80x24 screen shows them without scrolling
        ("p", "pause the selected session's agent (its whole process tree)"),
        ("r", "resume it"),
        ("k", "kill it (asks first)"),
        ("P", "pause every agent of the selected machine or profile (asks first)"),
        ("R", "resume every paused agent of the selected machine or profile (asks first)"),
        ("↑ ↓ PgUp PgDn", "move in the table"),
        (
            "enter",
            "drill down: machine → its profiles and sessions; profile → its sessions on "
            "all machines; session → detail",
        ),
        ("escape", "back one level of the drill-down (and close any pop-up)"),
        ("d", "detail of the selected row: spend over time, sessions, profile timeline"),
        ("/", "filter this tab's rows (text anywhere in the row); empty to clear"),
        ("s", "sort by a column (choose it again to flip); click a header too"),
        ("g", "Spend-by tab: next grouping (account, machine, profile, agent, project, model)"),
        ("t", "Spend-by tab: today / this week / this month"),
        ("o", "Spend-by tab: by outcome: commit, branch, pull request, repository (g: back)"),
        ("a", "Budgets tab: add a budget (operator); Alerts tab: acknowledge the alert"),
        ("e", "Budgets tab: edit the selected budget (operator)"),
        ("x", "Budgets tab: remove the selected budget (asks; operator)"),
        ("o", "Budgets tab: override the budget: raise or lift it until a time, with why"),
        ("m", "Alerts tab: silence alerts like the selected one (scope, kind, for how long)"),
        ("y", "Alerts tab: send a dead letter again (same webhook-id)"),
        ("u", "Reconciliation tab: ask the providers now (a run of the last minute is shared)"),
        ("c", "all columns (← → scroll sideways), or again: those that fit"),
        ("ctrl+p", "command palette: every action by name"),
        ("?", "this help"),
        ("q", "quit"),
    )

    def __init__(
        self,
        service: FleetSource,
        *,
        who: str | None = None,
        live_window: float = 1800.0,
    ) -> None:
        super().__init__()
        self.service = service
        self.dashboard = Dashboard(service, live_window=live_window)
        self.dashboard.in_front = Table.MACHINES  # the first tab
        self.who = who or f"{getpass.getuser()}@tui"
        self.grouping = Dimension.ACCOUNT
        self.outcome_view: str | None = None  # the Spend-by tab groups by outcome (o)
        self.period = Period.TODAY
        self.trail = Trail()
        self.header_figures: HeaderFigures | None = None
        self.ticks = 0
        self._spend_at = 0.0
        self._spend_dirty = True
        self._unsubscribe: Callable[[], None] | None = None
        self.connection = service.connection()
        backend = backend_for(service)
        self.governance = None if backend is None else Governance(backend, service)
        self.governance_keys = GovernanceKeys(self, self.governance)
        self._governance_seen = -1  # the version of the rows on screen
        self.breaches = Breaches()
        self.reconcile = ReconcileTab(self, service)  # the Reconciliation tab (7)
        self.refusal: str | None = None  # the last key refused to a viewer's token, and why
        self._loop: asyncio.AbstractEventLoop | None = None  # set while mounted: see leave_soon

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield FiguresLine("", id="figures")
        yield Static("", id="scope")
        with TabbedContent(initial="machines", id="tabs"):
            with TabPane("1 Machines", id="machines"):
                yield LiveTable(COLUMNS[Table.MACHINES], id="table-machines")
            with TabPane("2 Profiles", id="profiles"):
                yield LiveTable(COLUMNS[Table.PROFILES], id="table-profiles")
            with TabPane("3 Sessions", id="sessions"):
                yield LiveTable(COLUMNS[Table.SESSIONS], id="table-sessions")
            with TabPane("4 Spend by", id="spend"):
                yield LiveTable(SPEND_COLUMNS, id="table-spend")
            with TabPane("5 Budgets", id="budgets"):
                yield LiveTable(BUDGET_COLUMNS, id="table-budgets")
            with TabPane("6 Alerts", id="alerts"):
                yield LiveTable(ALERT_COLUMNS, id="table-alerts")
            # "Recon": every label fits 80 columns (the help and the palette say it whole)
            with TabPane("7 Recon", id="reconcile"):
                yield Static("", id="reconcile-note")
                yield LiveTable(RECONCILE_COLUMNS, id="table-reconcile")
        with Horizontal(id="feed-row"):
            yield RichLog(id="feed", max_lines=500, wrap=False, markup=False)
        yield Input(
            placeholder="filter rows: enter to apply (empty clears), esc to cancel", id="filter"
        )
        # room for every key it shows at 80 columns (? names ctrl+p, the command palette)
        yield Footer(compact=True, show_command_palette=False)

    def on_mount(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = self.service.subscribe(self.dashboard.note)
        feed = self.query_one("#feed", RichLog)
        for item in self.dashboard.feed_backlog():
            feed.write(_feed_line(item, self.service))
        self.table(Table.MACHINES).focus()
        self.table("alerts").sort_by("raised", reverse=True)  # the newest first
        if self.governance is not None:
            self.governance.start()
        self.reconcile.start()
        self.tick()
        self.set_interval(TICK_S, self.tick)
        self._show_scope()

    def leave_soon(self) -> bool:
        """Ask the app to exit, from any thread or a signal handler (the exit is posted through
        the loop's thread-safe door, which also wakes it); False when it is not running."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return False
        loop.call_soon_threadsafe(self.exit)
        return True

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.governance is not None:
            self.governance.close()
        self.reconcile.close()

    def table(self, which: Table | str) -> LiveTable:
        return self.query_one(f"#table-{which}", LiveTable)

    @property
    def current_tab(self) -> str:
        return self.query_one("#tabs", TabbedContent).active or "machines"

    @property
    def current_table(self) -> LiveTable:
        return self.table(self.current_tab)

    # -- the live loop -----------------------------------------------------------------------

    def tick(self) -> None:
        if not self.is_running:  # shutting down: the timer can fire after the screen is gone
            return
        frame = self.dashboard.tick()
        self.apply_frame(frame)
        self._governance_tick()
        self.reconcile.tick()
        self._check_connection()

    def _check_connection(self) -> None:
        """The hub went away or came back: say so, and grey the figures while it is away."""
        now = self.service.connection()
        if now == self.connection:
            return
        self.connection = now
        down = now.unreachable_since is not None
        self.query_one("#figures", FiguresLine).set_class(down, "unreachable")
        self.set_class(down, "unreachable")  # the app: whichever screen is up now
        self._show_scope()

    @property
    def link_text(self) -> str:
        """Where the figures come from: the line under the header starts with it."""
        since = self.connection.unreachable_since
        if since is None:
            return self.connection.label
        when = datetime.fromtimestamp(since, self.service.tz).strftime("%H:%M:%S")
        why = self.connection.refused or "reconnecting"
        return f"hub unreachable since {when} ({why}; figures as of then)"

    def apply_frame(self, frame: Frame) -> int:
        """Write one frame to the screen; returns the cells written."""
        self.ticks += 1
        written = 0
        current = self.current_table
        count = current.row_count
        for which, diff in frame.tables.items():
            if diff.upserts or diff.removed:
                table = self.table(which)
                written += table.apply(diff)
                table.settle()
        if frame.header is not None:
            self._show_header(frame.header)
            self._spend_dirty = True
        if frame.feed:
            feed = self.query_one("#feed", RichLog)
            if frame.feed_reset:  # older news came in late: the lines are written in order
                feed.clear()
            for item in frame.feed:
                feed.write(_feed_line(item, self.service))
        now = time.monotonic()
        if self._spend_dirty and now - self._spend_at >= SPEND_EVERY_S:
            self.refresh_spend()
        if current.row_count != count:  # the status line counts the rows shown
            self._show_scope()
        return written

    def _show_header(self, figures: HeaderFigures) -> None:
        b = self.breaches
        self.header_figures = dataclasses.replace(figures, breached=b.count, worst_budget=b.worst)
        self.query_one("#figures", FiguresLine).show(self.header_figures)

    def _governance_tick(self) -> None:
        """The Budgets and Alerts tabs and the header's breaches, when the rows read changed."""
        if self.governance is None:
            return
        view = self.governance.view()
        if view.version == self._governance_seen:
            return
        self._governance_seen = view.version
        tz, now = self.service.tz, self.service.clock()
        for which, rows in (
            ("budgets", budget_rows(view.budgets, tz, now)),
            ("alerts", alert_rows(view.alerts, tz, now, max(24, self.size.width - 40))),
        ):
            table = self.table(which)
            table.apply(TableDiff(upserts=rows, removed=set(table.rows_by_key) - set(rows)))
            table.settle()
        found = breaches(view.budgets)
        if found != self.breaches:
            self.breaches = found
            if self.header_figures is not None:
                self._show_header(self.header_figures)
        if self.current_tab in ("budgets", "alerts"):
            self._show_scope()

    def on_resize(self) -> None:
        self._governance_seen = -1  # the alerts' sentences are cut to the width: again
        self.reconcile.redraw()  # and so are the reconciliation's causes

    def refresh_spend(self) -> None:
        self._spend_at = time.monotonic()
        self._spend_dirty = False
        table = self.table("spend")
        if self.outcome_view is not None:
            report = self.service.outcome_report(self.outcome_view, self.period)
            rows = outcome_spend_rows(self.outcome_view, report)
            self._spend_dirty = report is None  # read again until the first read is in
        else:
            rows = spend_rows(self.service, self.grouping, self.period)
        gone = set(table.rows_by_key) - set(rows)
        table.apply(TableDiff(upserts=rows, removed=gone))
        table.settle()

    # -- navigation --------------------------------------------------------------------------

    def action_tab(self, tab: str) -> None:
        self.query_one("#tabs", TabbedContent).active = tab
        self._tab_shown()

    @on(TabbedContent.TabActivated)
    def _tab_changed(self) -> None:
        self._tab_shown()

    def _tab_shown(self) -> None:
        tab = self.current_tab
        # the rows waiting to be built of the table on screen come first
        self.dashboard.in_front = next((t for t in Table if t == tab), None)
        self.table(tab).focus()
        self._show_scope()

    @on(LiveTable.ColumnsChanged)
    def _columns_changed(self) -> None:
        if self.query("#tabs"):  # not while the tables are being mounted
            self._show_scope()

    @on(LiveTable.RowSelected)
    def _row_chosen(self, event: LiveTable.RowSelected) -> None:
        if event.table is self.current_table:  # enter (or a click) on a row
            self.action_drill()

    @property
    def scope_text(self) -> str:
        """The drill-down level shown now ("" at the top)."""
        return self.trail.last

    def action_drill(self) -> None:
        row = self.current_table.selected_row
        tab = self.current_tab
        if row is None:
            return
        if tab == "machines":
            machine = row.machine
            self._drill(
                Step(
                    f"machine {machine}",
                    lambda r: r.machine == machine,
                    (Table.PROFILES, Table.SESSIONS),
                    tab,
                    row.key,
                ),
                "profiles",
            )
        elif tab == "profiles" and row.profile:
            name = row.profile.split("/", 1)[1]
            self._drill(
                Step(
                    f"profile {name} (all machines)",
                    lambda r: r.profile is not None and r.profile.split("/", 1)[1] == name,
                    (Table.SESSIONS,),
                    tab,
                    row.key,
                ),
                "sessions",
            )
        else:
            self.action_detail()

    def _drill(self, step: Step, tab: str) -> None:
        self.trail.push(step)
        self._apply_trail()
        self.action_tab(tab)

    def _apply_trail(self) -> None:
        for which in Table:
            self.table(which).set_scope(self.trail.scope(which))
        self._show_scope()

    def action_step_back(self) -> None:
        """Escape: close the filter being typed, else step back one level of the drill-down,
        to the tab and row it was taken from."""
        filt = self.query_one("#filter", Input)
        if filt.has_class("shown"):  # escape while editing the filter: leave it as it was
            filt.remove_class("shown")
            self.current_table.focus()
            return
        step = self.trail.pop()
        if step is None:
            return
        self._apply_trail()
        self.action_tab(step.tab)
        table = self.current_table
        if step.row is not None and table.is_shown(step.row):
            table.move_cursor(row=table.get_row_index(step.row), animate=False)

    def _show_scope(self) -> None:
        table = self.current_table
        parts = [self.link_text]
        if self.trail:
            parts.append(f"▸ {self.trail.path()} (esc: back)")
        if table.filter_text:
            parts.append(f"filter “{table.filter_text}”")
        if table.sort_column:
            label = next(c.label for c in table.spec if c.key == table.sort_column)
            parts.append(f"sort {label} {'↓' if table.sort_reverse else '↑'}")
        if self.current_tab == "spend":
            group = (
                f"{VIEW_NAMES[self.outcome_view]} (o)"
                if self.outcome_view is not None
                else f"{self.grouping.value} (g)"
            )
            parts.append(f"group by {group} · {self.period.value} (t)")
        parts.extend(self._governance_hints())
        parts.extend(self.reconcile.hints())
        parts.append(f"{table.row_count} rows")
        hidden = table.hidden_columns
        if hidden:
            parts.append(f"{len(hidden)} more columns (c)")
        elif table.show_all:
            parts.append("all columns (← →, c: fit)")
        self.query_one("#scope", Static).update(Text("   ".join(parts)), layout=False)

    def _governance_hints(self) -> list[str]:
        tab = self.current_tab
        if tab not in ("budgets", "alerts"):
            return []
        if self.governance is None:
            return ["this hub has no budgets or alerts"]
        view = self.governance.view()
        hints = [f"could not read them: {view.problem}"] if view.problem else []
        if tab == "budgets":
            return [*hints, "a add · e edit · x remove · o override"]
        silences = len(view.silences)
        return [
            *hints,
            # not "open": that is the state of an alert no sink routes (the table's column)
            f"{open_alerts(view.alerts)} unacked · {silences} silence{'s' * (silences != 1)}",
            "a ack · m silence · y retry",
        ]

    def action_filter(self) -> None:
        filt = self.query_one("#filter", Input)
        filt.value = self.current_table.filter_text
        filt.add_class("shown")
        filt.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.current_table.set_filter(event.value)  # this tab's rows only
        event.input.remove_class("shown")
        self.current_table.focus()
        self._show_scope()

    def action_sort(self) -> None:
        table = self.current_table

        def chosen(column: str | None) -> None:
            if column is not None:
                table.sort_by(column)
                self._show_scope()

        self.push_screen(SortScreen(table.spec, table.sort_column), chosen)

    @on(LiveTable.HeaderSelected)
    def _header_clicked(self, event: LiveTable.HeaderSelected) -> None:
        event.table.sort_by(event.column)
        self._show_scope()

    def action_columns(self) -> None:
        show_all = not self.current_table.show_all
        for which in (*Table, "spend", "budgets", "alerts", "reconcile"):
            self.table(which).set_show_all(show_all)
        self._show_scope()

    def action_grouping(self) -> None:
        i = GROUPINGS.index(self.grouping)
        if self.outcome_view is not None:  # from an outcome view, g goes back to its grouping
            self.outcome_view = None
        else:
            self.grouping = GROUPINGS[(i + 1) % len(GROUPINGS)]
        self.table("spend").apply(TableDiff(removed=set(self.table("spend").rows_by_key)))
        self.refresh_spend()
        self.action_tab("spend")

    def action_outcome_view(self) -> None:
        """Group the Spend-by tab by outcome, the next view on each press (on the Budgets
        tab, `o` overrides the selected budget)."""
        if self.current_tab == "budgets":
            self.action_override()
            return
        i = OUTCOME_VIEWS.index(self.outcome_view) + 1 if self.outcome_view else 0
        self.outcome_view = OUTCOME_VIEWS[i % len(OUTCOME_VIEWS)]
        self.table("spend").apply(TableDiff(removed=set(self.table("spend").rows_by_key)))
        self.refresh_spend()
        self.action_tab("spend")

    def action_period(self) -> None:
        periods = list(Period)
        self.period = periods[(periods.index(self.period) + 1) % len(periods)]
        self.refresh_spend()
        self.action_tab("spend")

    def action_detail(self) -> None:
        row = self.current_table.selected_row
        tab = self.current_tab
        if row is None:
            self.notify("No row selected", severity="warning")
            return
        build: Callable[[], Detail]
        if tab == "machines":
            build = partial(machine_detail, self.dashboard, row.machine)
        elif tab == "profiles" and row.profile:
            build = partial(profile_detail, self.dashboard, row.profile)
        elif tab == "sessions":
            build = partial(session_detail, self.dashboard, row.key)
        elif tab in ("budgets", "alerts"):
            self.governance_keys.detail()
            return
        elif tab == "reconcile":
            self.reconcile.detail()
            return
        else:
            self.notify("The Spend-by rows have no detail view", severity="warning")
            return
        if self.connection.remote:  # it reads from the hub: not on the UI thread
            self._detail_from_hub(build)
        else:
            self.push_screen(DetailScreen(build()))

    @work(thread=True, group="detail", exclusive=True)
    def _detail_from_hub(self, build: Callable[[], Detail]) -> None:
        detail = build()
        self.call_from_thread(self.push_screen, DetailScreen(detail))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.KEY_HELP, NOTES))

    # -- the Budgets and Alerts tabs' keys (hub.tui.governance) ------------------------------

    def action_add(self) -> None:
        self.governance_keys.add()

    def action_edit(self) -> None:
        self.governance_keys.edit()

    def action_remove(self) -> None:
        self.governance_keys.remove()

    def action_override(self) -> None:
        self.governance_keys.override()

    def action_silence(self) -> None:
        self.governance_keys.silence()

    def action_retry(self) -> None:
        self.governance_keys.retry()

    def action_reconcile_now(self) -> None:
        self.reconcile.run_now()

    # -- halt actions ------------------------------------------------------------------------

    def _may_halt(self, action: str, key: str | None = None) -> bool:
        """False, after saying so (on the session's row too), for a viewer's token."""
        if self.connection.may_halt:
            return True
        if key is not None:
            self.dashboard.note_outcome(key, NEEDS_OPERATOR, "bad")
        self.refusal = (
            f"{action}: {NEEDS_OPERATOR} (token {self.connection.who!r} may only look; "
            "`fleet-hub token create NAME --role operator`, then --token)"
        )
        self.notify(self.refusal, severity="error")
        return False

    def action_halt(self, action: Action) -> None:
        if self.current_tab != "sessions":
            self.notify(
                "Select a session in the Sessions tab (3) to pause, resume or kill it; "
                "P / R pause / resume every agent of a machine or profile.",
                severity="warning",
            )
            return
        row = self.current_table.selected_row
        proc = self.dashboard.process_of(row.key) if row else None
        if row is None or proc is None:
            self.notify("This session has no live process to act on", severity="warning")
            return
        if not self._may_halt(action, row.key):
            return
        node, p = proc
        if action != "kill":
            self._run_commands(action, [(row.key, node, p.pid, p.create_time)])
            return
        cells = dict(zip((c.key for c in COLUMNS[Table.SESSIONS]), row.cells, strict=True))
        lines = (
            f"machine  {node}",
            f"profile  {p.profile or '?'}",
            f"project  {cells['project'].sort or p.cwd or '?'}",
            f"spend    {cells['main'].text or '$0.00'} main, "
            f"{cells['subagents'].text or '$0.00'} subagents",
            f"process  pid {p.pid} and its {p.children} children: frozen, terminated, killed",
        )

        def answered(yes: bool | None) -> None:
            if yes:
                self._run_commands("kill", [(row.key, node, p.pid, p.create_time)])

        self.push_screen(ConfirmScreen("Kill this agent?", lines, "Kill"), answered)

    def action_halt_all(self, action: Action) -> None:
        """Pause every running agent (or resume every paused one) of the selected machine or
        profile, after asking."""
        if not self._may_halt(action):
            return
        row = self.current_table.selected_row
        tab = self.current_tab
        verb = "Pause" if action == "pause" else "Resume"
        if row is None or tab not in ("machines", "profiles"):
            self.notify(
                f"Select a machine or a profile to {verb.lower()} all its agents",
                severity="warning",
            )
            return
        if tab == "machines":
            what = f"machine {row.machine}"
            procs = self.dashboard.processes_of(machine=row.machine)
        else:
            what = f"profile {row.profile}"
            procs = self.dashboard.processes_of(profile=row.profile)
        state = "running" if action == "pause" else "paused"
        chosen = [(n, p) for n, p in procs if p.state == state]
        if not chosen:
            self.notify(f"No {state} agent on {what}", severity="warning")
            return
        lines = [
            f"{n} pid {p.pid} {p.agent.value} {p.profile or '?'} {p.cwd or ''}" for n, p in chosen
        ]

        def answered(yes: bool | None) -> None:
            if yes:
                targets = [(process_key(n, p), n, p.pid, p.create_time) for n, p in chosen]
                self._run_commands(action, targets)

        self.push_screen(
            ConfirmScreen(f"{verb} all {len(chosen)} agents of {what}?", lines, f"{verb} all"),
            answered,
        )

    @work(group="halt")
    async def _run_commands(
        self, action: Action, targets: list[tuple[str, str, int, float]]
    ) -> None:
        """Send the commands (concurrently) and put each outcome on its row."""
        for key, _node, _pid, _ctime in targets:
            self.dashboard.note_outcome(key, f"{action}…", "warn")
        outcomes = await asyncio.gather(
            *(
                self.service.acommand(node, action, pid, ctime, who=self.who)
                for _key, node, pid, ctime in targets
            )
        )
        for (key, *_), outcome in zip(targets, outcomes, strict=True):
            text, tone = _outcome_text(action, outcome)
            self.dashboard.note_outcome(key, text, tone)
            if not outcome.ok:
                self.notify(
                    f"{action} pid {outcome.pid} on {outcome.node}: {text}", severity="error"
                )
        self.tick()

    # -- the command palette -----------------------------------------------------------------

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield from [
            SystemCommand("Show machines", "Machines tab", lambda: self.action_tab("machines")),
            SystemCommand("Show profiles", "Profiles tab", lambda: self.action_tab("profiles")),
            SystemCommand("Show sessions", "Sessions tab", lambda: self.action_tab("sessions")),
            SystemCommand("Show spend by group", "Spend-by tab", lambda: self.action_tab("spend")),
            SystemCommand("Show budgets", "Budgets tab", lambda: self.action_tab("budgets")),
            SystemCommand("Show alerts", "Alerts tab", lambda: self.action_tab("alerts")),
            SystemCommand("Add budget", "Budgets tab: a new budget", self.action_add),
            SystemCommand("Edit budget", "Budgets tab: the selected budget", self.action_edit),
            SystemCommand("Remove budget", "Budgets tab: the selected one", self.action_remove),
            SystemCommand("Override budget", "Raise or lift it for a while", self.action_override),
            SystemCommand("Acknowledge alert", "Alerts tab: the selected alert", self.action_add),
            SystemCommand("Silence alerts", "Alerts like the selected one", self.action_silence),
            SystemCommand("Retry delivery", "Send a dead letter again", self.action_retry),
            SystemCommand(
                "Show reconciliation", "Reconciliation tab", lambda: self.action_tab("reconcile")
            ),
            SystemCommand("Reconcile now", "Ask the providers now", self.action_reconcile_now),
            SystemCommand("Drill down", "Into the selected machine or profile", self.action_drill),
            SystemCommand("Back", "One level back up the drill-down", self.action_step_back),
            SystemCommand("Detail", "Detail view of the selected row", self.action_detail),
            SystemCommand("Filter rows", "Filter by text", self.action_filter),
            SystemCommand("Sort", "Sort by a column", self.action_sort),
            SystemCommand("Columns", "All columns, or those that fit", self.action_columns),
            SystemCommand("Next grouping", "Spend-by: next grouping", self.action_grouping),
            SystemCommand(
                "Group by outcome",
                "Spend-by: by commit, branch, pull request, repository",
                self.action_outcome_view,
            ),
            SystemCommand("Next period", "Spend-by: today / week / month", self.action_period),
            SystemCommand(
                "Pause agent",
                "Pause the selected session's agent",
                lambda: self.action_halt("pause"),
            ),
            SystemCommand(
                "Resume agent",
                "Resume the selected session's agent",
                lambda: self.action_halt("resume"),
            ),
            SystemCommand(
                "Kill agent",
                "Kill the selected session's agent (asks)",
                lambda: self.action_halt("kill"),
            ),
            SystemCommand(
                "Pause all",
                "Pause every agent of the selected machine or profile (asks)",
                lambda: self.action_halt_all("pause"),
            ),
            SystemCommand(
                "Resume all",
                "Resume every paused agent of the selected machine or profile (asks)",
                lambda: self.action_halt_all("resume"),
            ),
            SystemCommand("Help", "Every key", self.action_help),
        ]


def _outcome_text(action: Action, outcome: CommandOutcome) -> tuple[str, str]:
    if outcome.ok:
        return {"pause": "paused", "resume": "running", "kill": "killed"}[action], "warn"
    if outcome.outcome == "no answer":
        return "no answer from node", "bad"
    detail = f": {outcome.detail}" if outcome.detail else ""
    return f"{outcome.outcome}{detail}", "bad"


def _feed_line(item: FeedItem, service: FleetSource) -> Text:
    """ "14:02:11 spark01   max-a hit its rate limit (resets 16:00)": when it happened (with
    its date when not today), where, and what in words; the colour only repeats the kind."""
    tz = service.tz
    at = datetime.fromtimestamp(item.ts, tz)
    today = datetime.fromtimestamp(service.clock(), tz).date()
    when = at.strftime("%H:%M:%S" if at.date() == today else "%m-%d %H:%M")
    text = Text(f"{when:>11} ", style="grey50")
    text.append(f"{item.machine:<10} ", style="bold")
    text.append(item.text, style=FEED_KINDS.get(item.kind, ""))
    return text
