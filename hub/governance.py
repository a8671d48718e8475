"""Budgets and alerts as the dashboard reads and changes them, embedded or attached alike.

A `Backend` is the one thing that differs between the two: `LocalBackend` calls the embedded
hub's governor and alert outbox (the methods the API's endpoints call), `RemoteBackend`
(`hub.governance_remote`) calls those endpoints. Both read the same rows: a budget as
`GET /api/v1/budgets` gives it (`BudgetStanding.to_json`), an alert as `GET /api/v1/alerts`
does (`hub.alerts.views.alert_row`).

`Governance` keeps the latest rows for the screen, read on a thread of its own (the attached
one waits on the network): when the hub says something changed (spend, a feed line, the
outbox) at most every `MIN_GAP_S`, and every `REFRESH_S` anyway (forecasts, periods and
retry times move with the clock). The screen's tick only compares `version`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol

from hub.alerts.match import kind_problem, scope_problem
from hub.alerts.views import alert_row, silence_row
from hub.budgets.model import BudgetError, parse_budget, parse_limit
from hub.service import Update
from shared.config import ConfigError

if TYPE_CHECKING:
    from hub.alerts.outbox import Outbox
    from hub.budgets.governor import Governor
    from hub.source import FleetSource

log = logging.getLogger(__name__)

MIN_GAP_S: Final = 0.5  # reads at most this often, however often the hub says it changed
REFRESH_S: Final = 5.0  # and at least this often
ALERTS_SHOWN: Final = 200  # the newest alerts the tab lists


class GovernanceError(Exception):
    """A change the hub refused (or could not be asked for): the message says why and what to
    do; `needs_operator` when the token may only look."""

    def __init__(self, message: str, *, needs_operator: bool = False) -> None:
        super().__init__(message)
        self.needs_operator = needs_operator


class Backend(Protocol):
    """Reads and changes, each one the hub's own operation (see the module's doc)."""

    def budgets(self) -> list[dict[str, Any]]: ...

    def alerts(self, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]: ...

    def add_budget(self, table: dict[str, Any], who: str) -> None: ...

    def remove_budget(self, name: str, who: str) -> None: ...

    def override(self, name: str, limit: str | None, until: float, why: str, who: str) -> None: ...

    def ack(self, alert_id: str, who: str, until: float | None = None) -> None: ...

    def silence(self, scope: str, kind: str, minutes: float, why: str, who: str) -> None: ...

    def retry(self, alert_id: str) -> int: ...


class LocalBackend:
    """The embedded hub's governor and outbox (what `fleet-hub serve`'s API calls)."""

    def __init__(self, governor: Governor, outbox: Outbox) -> None:
        self.governor = governor
        self.outbox = outbox

    def budgets(self) -> list[dict[str, Any]]:
        return [s.to_json() for s in self.governor.standings()]

    def alerts(self, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        rows = [alert_row(r) for r in self.outbox.alerts(limit)]
        return rows, [silence_row(s) for s in self.outbox.silences()]

    def add_budget(self, table: dict[str, Any], who: str) -> None:
        try:
            self.governor.add_budget(parse_budget(table), who)
        except (BudgetError, ConfigError) as exc:
            raise GovernanceError(str(exc)) from None

    def remove_budget(self, name: str, who: str) -> None:
        try:
            self.governor.remove_budget(name, who)
        except (BudgetError, ConfigError) as exc:
            raise GovernanceError(str(exc)) from None

    def override(self, name: str, limit: str | None, until: float, why: str, who: str) -> None:
        found = [b for b in self.governor.budgets if b.name == name]
        try:
            if not found:
                raise BudgetError(f"no budget named {name!r}")
            amount = None if limit is None else parse_limit(limit, found[0].basis)
            self.governor.override(name, amount, until, who, why)
        except BudgetError as exc:
            raise GovernanceError(str(exc)) from None

    def ack(self, alert_id: str, who: str, until: float | None = None) -> None:
        try:
            found = self.outbox.ack(alert_id, who, until)
        except ValueError as exc:
            raise GovernanceError(str(exc)) from None
        if found is None:
            raise GovernanceError(f"no alert {alert_id!r}")

    def silence(self, scope: str, kind: str, minutes: float, why: str, who: str) -> None:
        if problem := scope_problem(scope) or kind_problem(kind):
            raise GovernanceError(problem)
        self.outbox.silence(scope, kind, time.time() + minutes * 60, who, why)

    def retry(self, alert_id: str) -> int:
        return self.outbox.retry(alert_id)


# The embedded hubs' backends, by their service (`Hub.start` registers its own), so that a
# dashboard given only the service finds them.
_LOCAL: weakref.WeakKeyDictionary[object, LocalBackend] = weakref.WeakKeyDictionary()


def register(service: object, backend: LocalBackend) -> None:
    _LOCAL[service] = backend


def backend_for(source: FleetSource) -> Backend | None:
    """The attached hub's API, the embedded hub's governor and outbox, or None (a service
    with neither: a test's, say)."""
    if source.connection().remote:
        from hub.governance_remote import RemoteBackend  # the API's client: attached only

        return RemoteBackend(source)
    return _LOCAL.get(source)


@dataclass(frozen=True, slots=True)
class GovernanceView:
    """The rows as last read (`version` moves when they change)."""

    version: int = 0
    budgets: tuple[dict[str, Any], ...] = ()
    alerts: tuple[dict[str, Any], ...] = ()
    silences: tuple[dict[str, Any], ...] = ()
    problem: str | None = None  # why the last read failed (the rows are older then)
    read_at: float | None = field(default=None, compare=False)


class Governance:
    """See the module's doc: `start()` (the first read is the thread's), `close()`."""

    def __init__(self, backend: Backend, source: FleetSource) -> None:
        self.backend = backend
        self._source = source
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._view = GovernanceView()
        self._unsubscribe: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._unsubscribe = self._source.subscribe(self._note)
        self._thread = threading.Thread(target=self._run, name="governance", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def view(self) -> GovernanceView:
        with self._lock:
            return self._view

    def _note(self, update: Update) -> None:
        if update.usage or update.feed or update.alerts or update.nodes_changed:
            self._wake.set()

    def refresh(self) -> None:
        """Read again soon (after a change made from this dashboard)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self._read()
            if self._stop.wait(MIN_GAP_S):
                return
            self._wake.wait(REFRESH_S - MIN_GAP_S)

    def _read(self) -> None:
        try:
            budgets = self.backend.budgets()
            alerts, silences = self.backend.alerts(ALERTS_SHOWN)
        except GovernanceError as exc:
            with self._lock:
                if self._view.problem != str(exc):
                    self._view = _with_problem(self._view, str(exc))
            return
        except Exception:  # noqa: BLE001 (a dead thread would freeze the tabs)
            log.exception("could not read the budgets and alerts")
            return
        with self._lock:
            old = self._view
            new = GovernanceView(
                old.version, tuple(budgets), tuple(alerts), tuple(silences), None, time.time()
            )
            if new != old:
                self._view = GovernanceView(
                    old.version + 1, new.budgets, new.alerts, new.silences, None, new.read_at
                )


def _with_problem(view: GovernanceView, problem: str) -> GovernanceView:
    return GovernanceView(
        view.version + 1, view.budgets, view.alerts, view.silences, problem, view.read_at
    )
