"""Every Claude subscription profile's Agent SDK credit this month, recomputed from the store.

Read on a snapshot of the store (its own connection: ingest never waits for it) and kept until
calls arrive (`touch`), then read again at most every `MIN_S` (and at least every `KEEP_S`, for
the month's turn): the API, the dashboard and reconciliation asking at once read the month once.
A read takes each such profile's month as the store drew it (`hub._credit_store`: its SDK and
untold calls' stored rows, no call decoded; it was 0.8 s of CPU for a profile with 50,000 calls
when each read decoded the month, `bench/credit.py`); still at most one read every `MIN_S`
while calls flow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import date
from typing import Final

from hub.credit import ZERO, CreditMonth, month_bounds
from hub.credit_settings import SubscriptionSettings, credit_terms
from hub.ledger import profile_key
from hub.model import ProfileRecord
from hub.store import Store
from pricing.sdk_credit import NOTHING, Moved

MIN_S: Final = 10.0
KEEP_S: Final = 60.0
OverageKey = tuple[str, date, str]  # MACHINE/PROFILE, UTC day, model as logged


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
        self._dirty = False  # calls arrived since the kept figures were read
        self.min_s = MIN_S  # the least time between two reads while calls flow

    def months(self, now: float | None = None) -> dict[str, CreditMonth]:
        """MACHINE/PROFILE -> its month so far, for each profile with an Agent SDK credit."""
        at = self._clock() if now is None else now
        with self._lock:
            kept = self._kept
            if now is None and kept is not None:
                age = time.monotonic() - kept[0]
                if age < (self.min_s if self._dirty else KEEP_S):
                    return kept[1]
            if now is None:
                self._dirty = False  # before reading: calls stored meanwhile mark it again
            found = self._read(at)
            if now is None:
                self._kept = (time.monotonic(), found)
            return found

    def touch(self) -> None:
        """Calls were stored: the next ask (from `min_s` after the last read) reads afresh."""
        self._dirty = True

    def overage_between(self, first: date, last: date) -> dict[OverageKey, Moved]:
        """Overage (Agent SDK spend past the credit, extra usage on) per (MACHINE/PROFILE, UTC
        day, model as logged) on the UTC days `first` to `last`, each month metered whole."""
        found: dict[OverageKey, Moved] = {}
        wanted = [(r, t) for r in self._profiles() if (t := credit_terms(r, self.settings))]
        if not wanted:
            return found
        with self._snapshot() as store:
            for record, terms in wanted:
                name = profile_key(record.node, record.name)
                for month in store.credit_months_between(record.node, record.name, first, last):
                    meter = store.credit_month(record.node, record.name, month, terms)
                    days = meter.overage_by_day.keys() | meter.untold_by_day.keys()
                    for day, model in days:
                        if first <= day <= last:
                            got = found.get((name, day, model), NOTHING)
                            found[(name, day, model)] = Moved(
                                got.overage + meter.overage_by_day.get((day, model), ZERO),
                                got.untold + meter.untold_by_day.get((day, model), ZERO),
                            )
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
                month = month_bounds(now, terms.tz)[2]
                key = profile_key(record.node, record.name)
                out[key] = store.credit_month(record.node, record.name, month, terms)
        return out
