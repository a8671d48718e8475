"""Every Claude subscription profile's Agent SDK credit this month, recomputed from the store.

Read on a snapshot of the store (its own connection: ingest never waits for it) and kept for
`KEEP_S`, so that the API, the dashboard and reconciliation asking at once read the month once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Final

from hub.credit import CreditMonth, meter_month, month_bounds
from hub.credit_settings import SubscriptionSettings, credit_terms
from hub.ledger import profile_key
from hub.model import ProfileRecord
from hub.store import Store

KEEP_S: Final = 5.0


class CreditMeters:
    def __init__(
        self,
        snapshot: Callable[[], AbstractContextManager[Store]],
        profiles: Callable[[], list[ProfileRecord]],
        settings: Sequence[SubscriptionSettings] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._snapshot = snapshot
        self._profiles = profiles
        self.settings = tuple(settings)
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: tuple[float, dict[str, CreditMonth]] | None = None

    def months(self, now: float | None = None) -> dict[str, CreditMonth]:
        """MACHINE/PROFILE -> its month so far, for each profile with an Agent SDK credit."""
        at = self._clock() if now is None else now
        with self._lock:
            kept = self._kept
            if now is None and kept is not None and time.monotonic() - kept[0] <= KEEP_S:
                return kept[1]
            found = self._read(at)
            if now is None:
                self._kept = (time.monotonic(), found)
            return found

    def forget(self) -> None:
        """Read afresh at the next ask (the prices changed, say)."""
        with self._lock:
            self._kept = None

    def _read(self, now: float) -> dict[str, CreditMonth]:
        wanted = [(r, t) for r in self._profiles() if (t := credit_terms(r, self.settings))]
        if not wanted:
            return {}
        out = {}
        with self._snapshot() as store:
            for record, terms in wanted:
                start, end, month = month_bounds(now, terms.tz)
                calls = store.profile_calls(record.node, record.name, start, end)
                out[profile_key(record.node, record.name)] = meter_month(calls, terms, month)
        return out
