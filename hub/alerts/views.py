"""Alerts and silences as JSON rows: what the API answers and `fleet-hub alerts --json` prints
(from the API, or from the store when no hub runs), and the test alert a person raises to check
their sinks."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from hub.alerts.outbox import AlertRecord, Silence
from hub.findings import Finding, Severity

TEST_KIND = "test"


def alert_row(record: AlertRecord) -> dict[str, Any]:
    f = record.finding
    return {
        "id": f.id,
        "kind": f.kind,
        "scope": f.scope,
        "severity": f.severity.value,
        "state": record.state,
        "text": f.text,
        "start": f.start,
        "raised": record.raised,
        "evidence": dict(f.evidence),
        "acked": None
        if record.acked_at is None
        else {
            "who": record.acked_by,
            "when": record.acked_at,
            "until": record.acked_until,  # None: for good
            "lapsed": record.ack_lapsed,  # past `until`: the alert is unacknowledged again
        },
        "silenced_by": record.silenced_by,
        "deliveries": [
            {
                "sink": d.sink,
                "state": d.state,
                "attempts": d.attempts,
                "next_at": d.next_at if d.state == "pending" else None,
                "last_at": d.last_at,
                "last_result": d.last_result,
                "delivered_at": d.delivered_at,
            }
            for d in record.deliveries
        ],
    }


def silence_row(silence: Silence) -> dict[str, Any]:
    return dataclasses.asdict(silence)


def sample_finding(
    now: float, *, severity: Severity, scope: str, text: str | None, alert_id: str | None
) -> Finding:
    """A test alert (`fleet-hub alerts test`): a new id each time unless one is given."""
    return Finding(
        id=alert_id or f"test:{uuid.uuid4().hex}",
        kind=TEST_KIND,
        scope=scope,
        severity=severity,
        start=now,
        text=text or "fleetmeter test alert: if you read this, this sink works",
    )
