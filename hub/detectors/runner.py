"""The runner: every detector, fed each counted call once as the hub stores it.

`attach(service, sink, book)` hooks it to a `FleetService`: the service hands it each batch's
changes after the store committed them (on the receiver thread, before the node's ack). Only a
call's first stored version is judged (a later revision of a call already seen, or a
retraction, is not a new call), so each call is looked at once and nothing is re-scanned: the
work per call is constant and the state per scope bounded (see `_base`). A detector that
fails is logged and skipped for that call; it never costs the batch.

Findings go to the sink once each: the runner remembers the ids it raised (the last
MAX_RAISED), and the sink itself is idempotent on the id (a restart may raise one again).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
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
                        self._raised[finding.id] = None
                        if len(self._raised) > MAX_RAISED:
                            self._raised.popitem(last=False)
                        new.append(finding)
        for finding in new:
            log.info("finding %s: %s", finding.id, finding.text)
            try:
                self._sink.raise_finding(finding)
            except Exception:
                log.exception("the finding sink failed on %s", finding.id)
        return new

    def observe_batch(self, result: IngestResult) -> None:
        """The new calls of one committed batch (the service's hook)."""
        for (old, new), (_old_price, price) in zip(result.changes, result.prices, strict=True):
            if old is None and new.counts:
                self.observe(new, price[0])


class _Hooked(Protocol):
    """What `attach` needs of a FleetService."""

    def on_batch(self, listener: Callable[[IngestResult], None]) -> Callable[[], None]: ...


def attach(service: _Hooked, sink: FindingSink, book: PriceBook) -> DetectorRunner:
    """Run the default detectors on every batch `service` commits, raising into `sink`."""
    runner = DetectorRunner(sink, default_detectors(InputRates(book)))
    service.on_batch(runner.observe_batch)
    return runner
