"""`fleet-hub serve` reconciles on its own: soon after it starts, then every `interval`.

Each run re-checks the last `days` UTC days (providers finalise late); its findings are
idempotent, so re-checking a drift already raised raises nothing new. A failed run is logged
and the next one tries again.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from hub.reconcile.run import Reconciler

log = logging.getLogger(__name__)

FIRST_RUN_AFTER: Final = 5.0  # seconds: let the nodes' backlogs land before the first look


class Schedule:
    def __init__(
        self, reconciler: Reconciler, interval: float, first_after: float = FIRST_RUN_AFTER
    ) -> None:
        self.reconciler = reconciler
        self.interval = interval
        self.first_after = min(first_after, interval)
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reconcile", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        wait = self.first_after
        while not self._stop.wait(wait):
            wait = self.interval
            try:
                outcome = self.reconciler.run()
            except Exception:  # a bug in one run must not end the schedule
                log.exception("reconciliation failed")
                continue
            self.runs += 1
            log.info(
                "reconciled %s to %s: %d rows, %d drifts past the threshold%s",
                outcome.first,
                outcome.last,
                len(outcome.rows),
                len(outcome.findings),
                "".join(f"; {p}: {why}" for p, why in outcome.errors.items()),
            )

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)  # a run waiting on a provider is a daemon: not awaited
