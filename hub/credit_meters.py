"""Every Claude subscription profile's Agent SDK credit this month, recomputed from the store.

Read on a snapshot of the store (its own connection: ingest never waits for it) and kept until
calls arrive (`touch`), then read again at most every `MIN_S` (and at least every `KEEP_S`, for
the month's turn): the API, the dashboard and reconciliation asking at once read the month once.
A read decodes the month's calls of each such profile (`bench/credit.py`: about 16 µs a call on
the 2-core CI machine, so 0.8 s of CPU for a profile with 50,000 calls this month): hence at
most one read every `MIN_S` while calls flow.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime, timedelta
from datetime import time as dt_time
from decimal import Decimal
from typing import Final

from hub.credit import ZERO, CreditMonth, meter_month, month_bounds
from hub.credit_settings import SubscriptionSettings, credit_terms
from hub.ledger import profile_key
from hub.model import ProfileRecord
from hub.store import Store

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

    def overage_between(self, first: date, last: date) -> dict[OverageKey, Decimal]:
        """Overage (Agent SDK spend past the credit, extra usage on) per (MACHINE/PROFILE, UTC
        day, model as logged) on the UTC days `first` to `last`, each month metered whole."""
        since = datetime.combine(first, dt_time(), UTC).timestamp()
        until = datetime.combine(last + timedelta(days=1), dt_time(), UTC).timestamp()
        found: dict[OverageKey, Decimal] = {}
        wanted = [(r, t) for r in self._profiles() if (t := credit_terms(r, self.settings))]
        if not wanted:
            return found
        with self._snapshot() as store:
            for record, terms in wanted:
                at = since
                while at < until:
                    start, end, month = month_bounds(at, terms.tz)
                    calls = store.profile_calls(record.node, record.name, start, end)
                    meter = meter_month(calls, terms, month)
                    name = profile_key(record.node, record.name)
                    for (day, model), amount in meter.overage_by_day.items():
                        if first <= day <= last:
                            found[(name, day, model)] = found.get((name, day, model), ZERO) + amount
                    at = end
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
