"""Reconciliation as the dashboard reads it, embedded or attached alike.

A `ReconcileBackend` is what differs between the two: `LocalReconcile` reads the embedded
hub's `Reconciler` (what `GET /api/v1/reconcile/latest` answers), `RemoteReconcile` asks that
endpoint of the hub the dashboard is attached to. Both give `latest_json`'s shape. Neither
asks the providers to show the tab: `run_now` does, through the reconciler's shared answer
(`GET /api/v1/reconcile`: readers within a minute share one run), on a worker thread.

`ReconcileWatch` keeps the latest answer for the screen, read on a thread of its own every
`REFRESH_S` (or at once after `run_now`); the screen's tick only compares `version`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

if TYPE_CHECKING:
    from hub.reconcile.run import Reconciler
    from hub.source import FleetSource

log = logging.getLogger(__name__)

REFRESH_S: Final = 5.0  # the latest answer changes once an interval: a cheap read
SHARE_S: Final = 60.0  # as the API: a run this recent is the answer to "reconcile now"
RUN_TIMEOUT_S: Final = 300.0  # a run asks each provider, with retries


class ReconcileError(Exception):
    """The hub could not be asked: the message says why."""


class ReconcileBackend(Protocol):
    def latest(self) -> dict[str, Any]: ...

    def run_now(self) -> None: ...


class LocalReconcile:
    """The embedded hub's reconciler (the one its API and schedule use)."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    def latest(self) -> dict[str, Any]:
        from hub.reconcile.days import latest_json

        return latest_json(self.reconciler)

    def run_now(self) -> None:
        if not self.reconciler.settings.holds_bills:
            raise ReconcileError("the hub's config names no provider to ask or import")
        self.reconciler.run(max_age=SHARE_S)


class RemoteReconcile:
    """The attached hub's API, with the dashboard's token (a viewer's will do)."""

    def __init__(self, source: FleetSource) -> None:
        from hub.remote import RemoteFleet

        self.remote = cast(RemoteFleet, source)

    def _get(self, path: str, timeout: float | None = None) -> Any:
        from hub.remote import HubUnavailable

        try:
            return self.remote.call("GET", path, timeout=timeout)
        except HubUnavailable as exc:
            raise ReconcileError(str(exc)) from None

    def latest(self) -> dict[str, Any]:
        answer: dict[str, Any] = self._get("/reconcile/latest")
        return answer

    def run_now(self) -> None:
        self._get("/reconcile", timeout=RUN_TIMEOUT_S)


# The embedded hubs' reconcilers, by their service (`HubFront.start` registers its own).
_LOCAL: weakref.WeakKeyDictionary[object, LocalReconcile] = weakref.WeakKeyDictionary()


def register(service: object, backend: LocalReconcile) -> None:
    _LOCAL[service] = backend


def backend_for(source: FleetSource) -> ReconcileBackend | None:
    """The attached hub's API, the embedded hub's reconciler, or None (a hub serving no API)."""
    if source.connection().remote:
        return RemoteReconcile(source)
    return _LOCAL.get(source)


@dataclass(frozen=True, slots=True)
class ReconcileView:
    version: int = 0
    latest: dict[str, Any] | None = None  # `latest_json`'s shape; None before the first read
    problem: str | None = None  # why the last read (or run) failed


class ReconcileWatch:
    """See the module's doc: `start()`, `run_now()` (blocking: call it off the UI thread),
    `close()`."""

    def __init__(self, backend: ReconcileBackend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._view = ReconcileView()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reconcile-view", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def view(self) -> ReconcileView:
        with self._lock:
            return self._view

    def run_now(self) -> None:
        """Reconcile now through the shared answer, then read it; ReconcileError says why not."""
        try:
            self.backend.run_now()
        finally:
            self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self._read()
            self._wake.wait(REFRESH_S)

    def _read(self) -> None:
        try:
            latest = self.backend.latest()
            problem = None
        except ReconcileError as exc:
            latest, problem = None, str(exc)
        except Exception:  # noqa: BLE001 (a dead thread would freeze the tab)
            log.exception("could not read the latest reconciliation")
            return
        with self._lock:
            old = self._view
            keep = latest if latest is not None else old.latest  # older rows, said so
            if keep != old.latest or problem != old.problem:
                self._view = ReconcileView(old.version + 1, keep, problem)
