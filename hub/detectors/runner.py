"""The runner: every detector, fed each counted call once as the hub stores it.

`attach(service, sink, book)` hooks it to a `FleetService`: the service hands it each batch's
changes after the store committed them (on the receiver thread, before the node's ack). Only a
call's first stored version is judged (a later revision of a call already seen, or a
retraction, is not a new call), so each call is looked at once and nothing is re-scanned: the
work per call is constant and the state per scope bounded (see `_base`). A detector that
fails is logged and skipped for that call; it never costs the batch.

Findings go to the sink once each: the runner remembers the ids it raised (the last
MAX_RAISED), and the sink itself is idempotent on the id. A restarted hub re-seeds the runner
from the store's recent calls (`hub.detectors.seed`): it holds the new batches meanwhile, and
knows the ids its journal already has, so a happening in progress is neither found late nor
raised twice.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Final, Protocol

from hub.detectors._base import Call, Detector, InputRates, ModelRate
from hub.detectors.cache import CacheThrash
from hub.detectors.context import ContextGrowth
from hub.detectors.fanout import SubagentFanout
from hub.detectors.loops import RetryLoop
from hub.detectors.model_swap import ModelSwap
from hub.detectors.peers import PeerOutlier
from hub.detectors.spike import RunRateSpike
from hub.findings import Finding, FindingSink
from hub.model import IngestResult
from pricing import PriceBook
from shared.events import UsageEvent

log = logging.getLogger(__name__)

MAX_RAISED: Final = 100_000


def default_detectors(input_rate: ModelRate) -> list[Detector]:
    return [
        RunRateSpike(),
        PeerOutlier(),
        CacheThrash(input_rate),
        RetryLoop(),
        ModelSwap(input_rate),
        ContextGrowth(),
        SubagentFanout(),
    ]


class DetectorRunner:
    def __init__(self, sink: FindingSink, detectors: Sequence[Detector]) -> None:
        self._sink = sink
        self._detectors = list(detectors)
        self._raised: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        self.calls = 0
        self._held: list[IngestResult] | None = None  # batches held while the runner seeds
        self._hold_lock = threading.Lock()

    def observe(self, event: UsageEvent, cost: Decimal | None) -> list[Finding]:
        """Judge one new counted call; returns (and raises) the findings it completes."""
        call = Call(event, cost)
        new: list[Finding] = []
        with self._lock:
            self.calls += 1
            for detector in self._detectors:
                try:
                    found = detector.observe(call)
                except Exception:
                    log.exception("detector %s failed on %s", detector.kind, event.event_id)
                    continue
                for finding in found:
                    if finding.id not in self._raised:
                        self._remember(finding.id)
                        new.append(finding)
        for finding in new:
            log.info("finding %s: %s", finding.id, finding.text)
            try:
                self._sink.raise_finding(finding)
            except Exception:
                log.exception("the finding sink failed on %s", finding.id)
        return new

    def _remember(self, finding_id: str) -> None:
        self._raised[finding_id] = None
        if len(self._raised) > MAX_RAISED:
            self._raised.popitem(last=False)

    def observe_batch(self, result: IngestResult) -> None:
        """The new calls of one committed batch (the service's hook); held while seeding."""
        if self._held is not None:
            with self._hold_lock:
                if self._held is not None:
                    self._held.append(result)
                    return
        self._observe_new(result)

    def _observe_new(self, result: IngestResult) -> None:
        for (old, new), (_old_price, price) in zip(result.changes, result.prices, strict=True):
            if old is None and new.counts:
                self.observe(new, price[0])

    def hold(self) -> None:
        """Keep the batches that come from now on until `release` (while seeding)."""
        with self._hold_lock:
            if self._held is None:
                self._held = []

    def seed(
        self, calls: Iterable[tuple[UsageEvent, Decimal | None]], raised: Iterable[str]
    ) -> int:
        """Show the detectors `calls` (the store's recent ones, in time order) before any new
        one, the ids in `raised` counting as raised already (the journal's): the windows
        fill as if the hub had not stopped, and only what the journal lacks is raised (what
        a kill -9 lost between a commit and the detectors). Returns the calls shown."""
        with self._lock:
            for finding_id in raised:
                self._remember(finding_id)
        shown = 0
        for event, cost in calls:
            self.observe(event, cost)
            shown += 1
        return shown

    def release(self) -> None:
        """Judge the batches held since `hold`, in order, and stop holding."""
        with self._hold_lock:  # a batch that comes meanwhile waits, then goes after these
            for result in self._held or []:
                self._observe_new(result)
            self._held = None


class _Hooked(Protocol):
    """What `attach` needs of a FleetService."""

    def on_batch(self, listener: Callable[[IngestResult], None]) -> Callable[[], None]: ...


def attach(service: _Hooked, sink: FindingSink, book: PriceBook) -> DetectorRunner:
    """Run the default detectors on every batch `service` commits, raising into `sink`."""
    runner = DetectorRunner(sink, default_detectors(InputRates(book)))
    service.on_batch(runner.observe_batch)
    return runner
