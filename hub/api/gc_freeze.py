"""Keep the start-up's objects out of the cyclic collector's full passes (`fleet-hub serve`).

At 1,000,000 stored events the figures, sessions and the detectors' seed are ~150,000 objects
that live as long as the hub. Each full (generation 2) collection walked them all: 60-75 ms,
which a report request that happened to trigger it waited for (the report endpoint's p99).
`gc.freeze` once they are built moves them to the permanent generation, so a full pass walks
only what came after: ~10 ms.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def freeze_after(*waits: Callable[[], object]) -> threading.Thread:
    """On a thread: call each of `waits` (each returns once a part of the start-up is built),
    then collect what the start-up left as garbage and freeze the rest."""

    def run() -> None:
        for wait in waits:
            wait()
        gc.collect()
        gc.freeze()
        log.info("start-up objects frozen out of the collector: %d", gc.get_freeze_count())

    thread = threading.Thread(target=run, name="gc-freeze", daemon=True)
    thread.start()
    return thread
