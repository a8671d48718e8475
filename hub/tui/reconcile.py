"""The Reconciliation tab (7): one row per provider and UTC day from the hub's latest run
(`hub.reconcile_view`), enter for the day's rows per model and key (and Claude Code's per
user), `u` to reconcile now on a worker thread; how to set it up when the hub asks no
provider."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from rich.text import Text
from textual.widgets import Static

from hub.dashboard import TableDiff
from hub.reconcile.days import ProviderDay, provider_days
from hub.reconcile_rows import analytics_problem, day_rows, detail_lines, status_line
from hub.reconcile_view import ReconcileError, ReconcileWatch, backend_for
from hub.tui.governance import InfoScreen

if TYPE_CHECKING:
    from hub.source import FleetSource
    from hub.tui.app import FleetApp

TAB: Final = "reconcile"
NO_API: Final = (
    "This hub serves no API in this process, so it has no reconciliation to show "
    "(see the log: the API's port may be taken)."
)


class ReconcileTab:
    """`FleetApp` calls `start`, `tick` (each of its ticks), `run_now` (u), `detail` (enter),
    `hints` (the line under the header) and `close`."""

    def __init__(self, app: FleetApp, source: FleetSource) -> None:
        self.app = app
        backend = backend_for(source)
        self.watch = None if backend is None else ReconcileWatch(backend)
        self.entries: dict[str, ProviderDay] = {}
        self._seen = -1
        self.running = False  # a run asked from here is under way

    def start(self) -> None:
        if self.watch is not None:
            self.watch.start()
        else:
            self._note(NO_API)

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()

    def redraw(self) -> None:
        """Draw again at the next tick (the width changed: causes are cut to it)."""
        self._seen = -1

    def _note(self, text: str | None) -> None:
        note = self.app.query_one("#reconcile-note", Static)
        note.update(Text(text or ""))
        note.set_class(bool(text), "shown")

    def tick(self) -> None:
        if self.watch is None:
            return
        view = self.watch.view()
        if view.version == self._seen:
            return
        self._seen = view.version
        latest = view.latest
        result = None if latest is None else latest.get("result")
        configured = latest is None or bool(latest["configured"])
        self.app.table(TAB).display = configured  # else the set-up text has the room
        if not configured:
            assert latest is not None
            self._note(latest["setup"])
        elif view.problem is not None:
            self._note(f"Could not read the hub's reconciliation: {view.problem}")
        elif latest is not None and result is None:
            self._note(self._status(latest))
        else:
            why = analytics_problem(latest)  # one line: all of it on enter
            self._note(None if why is None else _clip(why, self.app.size.width - 2))
        entries = [] if result is None else provider_days(result)
        self.entries = {e.key: e for e in entries}
        width = max(24, self.app.size.width - 70)
        rows = day_rows(entries, width)
        table = self.app.table(TAB)
        table.apply(TableDiff(upserts=rows, removed=set(table.rows_by_key) - set(rows)))
        table.settle()
        if self.app.current_tab == TAB:
            self.app._show_scope()

    def hints(self) -> list[str]:
        if self.app.current_tab != TAB:
            return []
        if self.watch is None:
            return ["no reconciliation in this process"]
        view = self.watch.view()
        hints = [f"could not read it: {view.problem}"] if view.problem else []
        if self.running:
            hints.append("reconciling now…")
        return [*hints, self._status(view.latest)]

    def _status(self, latest: dict[str, Any] | None) -> str:
        return status_line(latest, self.app.service.tz, self.app.service.clock())

    def run_now(self) -> None:
        """u: ask the providers now (the hub's shared answer: a run in the last minute is
        the answer), on a worker thread; the tab shows the new rows when it is in."""
        if self.watch is None or self.running:
            return
        self.running = True
        self.app.notify("Reconciling: asking the providers…")
        self.app.run_worker(self._run, thread=True, group="reconcile", exclusive=True)
        self.app._show_scope()

    def _run(self) -> None:
        assert self.watch is not None
        try:
            self.watch.run_now()
        except ReconcileError as exc:
            self.app.call_from_thread(self.app.notify, f"reconcile: {exc}", severity="error")
        else:
            self.app.call_from_thread(self.app.notify, "Reconciled")
        finally:
            self.running = False

    def detail(self) -> None:
        row = self.app.current_table.selected_row
        entry = None if row is None else self.entries.get(row.key)
        if entry is None or self.watch is None:
            return
        latest = self.watch.view().latest
        result = None if latest is None else latest.get("result")
        day = entry.day.isoformat() if entry.day else "unreachable"
        title = f"{entry.provider} {day} (UTC)"
        self.app.push_screen(InfoScreen(title, detail_lines(entry, result)))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(1, width - 1)] + "…"
