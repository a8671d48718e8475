"""`GET /metrics`: the hub's figures in the Prometheus text format, read at each scrape.

A custom collector on a registry of its own (not the process-global one): every scrape reads
the service's running totals, so the figures are those the dashboard and reports show. Money
is exported as a float (all Prometheus has); the API's JSON keeps it exact.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub._totals import Totals
from hub.ledger import Dimension, Period
from hub.model import NodeState
from hub.service import FleetService
from pricing.rollup import TOKEN_KEYS

PREFIX: Final = "fleetmeter_"
CLASSES: Final = ("metered", "subscription_included", "estimated", "api_equivalent")
BUCKETS: Final = TOKEN_KEYS
DIMENSIONS: Final = (Dimension.MACHINE, Dimension.PROFILE, Dimension.AGENT, Dimension.MODEL)
# Every metric name this module exports (the Grafana dashboard is checked against them).
NAMES: Final = tuple(
    PREFIX + n
    for n in (
        "spend_today_usd",
        "unknown_calls_today",
        "tokens_today",
        "node_state",
        "node_last_seen_timestamp_seconds",
        "node_outbox_backlog",
        "events_ingested_total",
        "batches_total",
        "frames_rejected_total",
        "commands_total",
        "alerts",  # hub.api.alert_metrics
        "alert_deliveries",
        "alert_attempts_total",
    )
)


class CommandCounts:
    """Commands sent through this hub, by action and outcome (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def note(self, action: str, outcome: str) -> None:
        with self._lock:
            self._counts[(action, outcome)] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


class HubCollector(Collector):
    def __init__(
        self,
        service: FleetService,
        rejects: Callable[[], Mapping[str, int]],
        commands: CommandCounts,
    ) -> None:
        self.service = service
        self.rejects = rejects
        self.commands = commands

    def collect(self) -> Iterator[Metric]:
        yield from self._spend()
        yield from self._nodes()
        s = self.service
        yield CounterMetricFamily(
            PREFIX + "events_ingested", "Usage events stored or superseded", value=s.events_in
        )
        yield CounterMetricFamily(PREFIX + "batches", "Node batches committed", value=s.batches)
        rejected = CounterMetricFamily(
            PREFIX + "frames_rejected", "Frames dropped by the receiver", labels=["reason"]
        )
        for reason, count in sorted(self.rejects().items()):
            rejected.add_metric([reason], count)
        yield rejected
        commands = CounterMetricFamily(
            PREFIX + "commands", "Commands sent, by outcome", labels=["action", "outcome"]
        )
        for (action, outcome), count in sorted(self.commands.snapshot().items()):
            commands.add_metric([action, outcome], count)
        yield commands

    def _spend(self) -> Iterator[Metric]:
        spend = GaugeMetricFamily(
            PREFIX + "spend_today_usd",
            "Today's spend in USD by cost class, per machine / profile / agent / model",
            labels=["dimension", "key", "class"],
        )
        unknown = GaugeMetricFamily(
            PREFIX + "unknown_calls_today",
            "Today's calls with no known price (never counted as $0)",
            labels=["dimension", "key"],
        )
        tokens = GaugeMetricFamily(
            PREFIX + "tokens_today",
            "Today's tokens by bucket, per machine / profile / agent / model",
            labels=["dimension", "key", "bucket"],
        )
        fleet = self.service.fleet(Period.TODAY)
        scopes: list[tuple[str, str, Totals]] = [("fleet", "fleet", fleet)]
        for dimension in DIMENSIONS:
            for key, t in self.service.totals(dimension, Period.TODAY).items():
                scopes.append((dimension.value, key or "(none)", t))
        for dimension_name, key, t in scopes:
            for cls in CLASSES:
                spend.add_metric([dimension_name, key, cls], float(getattr(t, cls)))
            unknown.add_metric([dimension_name, key], t.unknown_calls)
            for bucket in BUCKETS:
                tokens.add_metric([dimension_name, key, bucket], getattr(t, bucket))
        yield from (spend, unknown, tokens)

    def _nodes(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            PREFIX + "node_state", "1 for the state each node is in", labels=["machine", "state"]
        )
        seen = GaugeMetricFamily(
            PREFIX + "node_last_seen_timestamp_seconds",
            "When each node was last heard from",
            labels=["machine"],
        )
        backlog = GaugeMetricFamily(
            PREFIX + "node_outbox_backlog",
            "Events waiting in each node's outbox, as its last hello said",
            labels=["machine"],
        )
        for view in self.service.nodes():
            name = view.record.node
            for s in NodeState:
                state.add_metric([name, s.value], 1 if view.state is s else 0)
            if view.record.last_seen is not None:
                seen.add_metric([name], view.record.last_seen)
            if view.hello is not None:
                backlog.add_metric([name], view.hello.reader.pending)
        yield from (state, seen, backlog)


def registry_for(collector: HubCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
