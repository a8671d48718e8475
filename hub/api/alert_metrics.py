"""`/metrics` for the alert outbox: alerts by state, deliveries by state (from the store, so
they hold across restarts) and delivery attempts by sink and outcome since the hub started."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hub.alerts.outbox import ALERT_STATES, DELIVERY_STATES, Outbox
from hub.api.metrics import PREFIX


class AlertCollector(Collector):
    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        by_alert, by_delivery = self.outbox.counts()
        alerts = GaugeMetricFamily(PREFIX + "alerts", "Alerts by state", labels=["state"])
        for state in ALERT_STATES:
            alerts.add_metric([state], by_alert.get(state, 0))
        deliveries = GaugeMetricFamily(
            PREFIX + "alert_deliveries",
            "Alert deliveries (alert x sink) by state; dead ones wait for a retry by hand",
            labels=["state"],
        )
        for state in DELIVERY_STATES:
            deliveries.add_metric([state], by_delivery.get(state, 0))
        attempts = CounterMetricFamily(
            PREFIX + "alert_attempts",
            "Delivery attempts since the hub started, by sink and outcome (delivered, failed "
            "and to be retried, dead)",
            labels=["sink", "outcome"],
        )
        for (sink, outcome), count in sorted(self.outbox.outcomes().items()):
            attempts.add_metric([sink, outcome], count)
        yield from (alerts, deliveries, attempts)
