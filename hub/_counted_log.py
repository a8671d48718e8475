"""A problem that can recur thousands of times a second, logged as a count per origin.

One signed frame may carry 60,000 undecodable events: a warning each would flood the hub's log
(and its disk). `CountedLog` counts them per origin (an authenticated node, so the origins are
few) and writes at most one line per origin per `interval`, with the count since its last line.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Final

INTERVAL: Final = 60.0  # seconds between two lines about one origin


class CountedLog:
    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.what = what  # a plural noun phrase: "undecodable events"
        self.interval = interval
        self.counts: Counter[str] = Counter()  # every one ever noted, per origin
        self._logger = logger
        self._clock = clock
        self._unlogged: Counter[str] = Counter()
        self._last_line: dict[str, float] = {}

    def note(self, origin: str, count: int, example: str, *, about: str = "") -> None:
        """Count `count` more from `origin`; log them (and any held back) unless a line about
        (`origin`, `about`) went out less than `interval` ago. `example` shows what one was;
        `about` keeps apart what deserves a line of its own (another node's name, say)."""
        if count <= 0:
            return
        key = f"{origin}\0{about}"
        self.counts[origin] += count
        self._unlogged[key] += count
        now = self._clock()
        last = self._last_line.get(key)
        if last is not None and now - last < self.interval:
            return
        self._last_line[key] = now
        held, self._unlogged[key] = self._unlogged[key], 0
        if last is None:
            since = ""
            after = f"; further ones are logged at most once every {self.interval:g}s"
        else:
            since, after = f" in the last {now - last:.0f}s", ""
        self._logger.warning(
            "%s: dropped %d %s%s (e.g. %s)%s", origin, held, self.what, since, example, after
        )
