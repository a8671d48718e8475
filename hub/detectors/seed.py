"""Re-seeding the detectors when the hub starts, from the store's recent calls.

The detectors keep their windows in memory. Started empty, a restarted hub would find a
happening in progress late (a retry loop's first repeats, a spike's baseline are gone) or twice
(a fan-out whose finding id carries its start would start over under a new id). So the runner
is shown the calls of the last SEED_S (the spike baseline's day; at most MAX_SEED_CALLS, the
latest) before any new batch, knowing the ids its journal already holds.

It reads a snapshot taken before the receiver starts, on a thread of its own: the receiver acks
at once, the runner holds the new batches meanwhile and judges them after the seed, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from decimal import Decimal
from typing import Final

from hub._pricing import safe_price
from hub.detectors.journal import FindingJournal
from hub.detectors.runner import DetectorRunner
from hub.store import Store
from pricing import Billing, PriceBook
from shared.events import UsageEvent

log = logging.getLogger(__name__)

SEED_S: Final = 24 * 3600.0
MAX_SEED_CALLS: Final = 100_000


def seeding_thread(
    runner: DetectorRunner,
    store: Store,
    journal: FindingJournal,
    book: PriceBook,
    clock: Callable[[], float] = time.time,
) -> threading.Thread:
    """A thread (not started) that seeds `runner` from `store`'s calls of the last SEED_S; make
    it before the receiver starts (the snapshot is taken here: the calls after it are the held
    batches), start it once the receiver listens (a hub that cannot listen says only that)."""
    snapshot = ExitStack()
    reader = snapshot.enter_context(store.snapshot())
    runner.hold()
    since = clock() - SEED_S

    def price(event: UsageEvent) -> Decimal | None:
        return safe_price(book, event, Billing.API)[0].api_equivalent

    def run() -> None:
        started = time.monotonic()
        try:
            raised = journal.ids()
            with snapshot:  # streamed from the snapshot: the calls are never all in memory
                start = reader.start_of_latest_calls(since, MAX_SEED_CALLS)
                calls = reader.usage_events(start, counted_only=True)
                shown = runner.seed(((e, price(e)) for e in calls), raised)
            log.info(
                "detectors seeded with %d calls of the last %.0f h in %.1f s (%d findings known)",
                shown,
                SEED_S / 3600,
                time.monotonic() - started,
                len(raised),
            )
        except Exception:  # the detectors then start from what comes in, as before
            log.exception("could not seed the detectors from the store")
        finally:
            runner.release()

    return threading.Thread(target=run, name="detector-seed", daemon=True)
