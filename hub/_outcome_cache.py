"""An outcome view read off the caller's thread: a report of every call of a period is read
from the store (an embedded hub) or the API (an attached dashboard), too slow for a UI thread.
`OutcomeRowsCache` answers at once with the report it has and reads again on a thread of its
own when it is older than `FRESH_S`, or than 10 times what the last read took (a month of a
large fleet takes seconds to read: a dashboard left on an outcome view must not keep the hub
busy). And the session detail's outcome line in words."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, tzinfo
from typing import Any, Final

from hub._format import count
from hub.ledger import Period
from shared.outcomes import SessionOutcome

log = logging.getLogger(__name__)

FRESH_S: Final = 10.0
REST_FACTOR: Final = 10  # a read may take at most a tenth of the time

Read = Callable[[str, date], dict[str, Any]]  # (view, first day) -> the report's JSON


def first_day(period: Period, now: float, tz: tzinfo) -> date:
    """The first day of `period` around `now` (the week starts on Monday, as the ledger's)."""
    today = datetime.fromtimestamp(now, tz).date()
    if period is Period.WEEK:
        return today - timedelta(days=today.weekday())
    if period is Period.MONTH:
        return today.replace(day=1)
    return today


class OutcomeRowsCache:
    def __init__(self, read: Read, clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._clock = clock
        self._lock = threading.Lock()
        self._got: dict[tuple[str, date], tuple[float, dict[str, Any]]] = {}  # until, report
        self._reading: set[tuple[str, date]] = set()

    def get(self, view: str, since: date) -> dict[str, Any] | None:
        """The latest report of `view` since `since`, or None before the first; reads again
        in the background when it is older than FRESH_S."""
        key = (view, since)
        with self._lock:
            got = self._got.get(key)
            stale = got is None or self._clock() >= got[0]
            if stale and key not in self._reading:
                self._reading.add(key)
                threading.Thread(target=self._fill, args=(key,), daemon=True).start()
        return got[1] if got is not None else None

    def _fill(self, key: tuple[str, date]) -> None:
        began = self._clock()
        try:
            report = self._read(*key)
        except Exception as exc:  # the hub went away, a store error: the old rows stay
            log.warning("reading the %s outcome view failed: %s", key[0], exc)
            report = None
        with self._lock:
            self._reading.discard(key)
            if report is not None:
                now = self._clock()
                self._got[key] = (now + max(FRESH_S, REST_FACTOR * (now - began)), report)


def outcome_words(outcome: SessionOutcome | None) -> str:
    """The session detail's outcome line."""
    if outcome is None:
        return "not read yet (the node reads git once it has seen the session's calls)"
    if outcome.status != "ok":
        return f"no repository facts: {outcome.detail or outcome.status}"
    commits = outcome.commits
    added = sum(c.lines_added for c in commits)
    deleted = sum(c.lines_deleted for c in commits)
    parts = [outcome.repo or "?", outcome.branch or "detached HEAD"]
    parts.append(
        f"{count(len(commits), 'commit')} +{added:,}/-{deleted:,}" if commits else "no commit"
    )
    if outcome.pr is not None:
        state = "merged" if outcome.pr.merged else outcome.pr.state
        parts.append(f"PR #{outcome.pr.number} {state}")
    elif outcome.pr_status:
        parts.append(f"PR: {outcome.pr_status}")
    return " · ".join(parts)
