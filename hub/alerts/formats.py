"""What each kind of sink is sent for an alert: the body bytes and the headers besides the
Standard Webhooks ones. The body is the same on every attempt (only the signature's
timestamp changes), so a receiver sees one message however often it is retried."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import orjson

from hub.alerts.settings import SinkType
from hub.findings import Finding, Severity

SLACK_SECTION_MAX: Final = 3000  # Slack refuses a section block's text beyond this (HTTP 400)
NTFY_PRIORITY: Final = {Severity.INFO: "2", Severity.WARNING: "3", Severity.CRITICAL: "5"}
EVENT_TYPE: Final = "alert.raised"


def webhook_body(finding: Finding, raised: float, hub: str) -> bytes:
    """The Standard Webhooks payload: type, timestamp, data (the finding, exact strings)."""
    return orjson.dumps(
        {
            "type": EVENT_TYPE,
            "timestamp": datetime.fromtimestamp(raised, UTC).isoformat(),
            "data": {
                "id": finding.id,
                "kind": finding.kind,
                "scope": finding.scope,
                "severity": finding.severity.value,
                "start": finding.start,
                "text": finding.text,
                "evidence": dict(finding.evidence),
                "hub": hub,
            },
        }
    )


def parcel(
    kind: SinkType, finding: Finding, raised: float, hub: str
) -> tuple[bytes, dict[str, str]]:
    """(body, extra headers) for a sink of `kind`."""
    if kind is SinkType.SLACK:
        return _slack(finding, hub), {"content-type": "application/json"}
    if kind is SinkType.NTFY:
        return finding.text.encode(), _ntfy_headers(finding, hub)
    return webhook_body(finding, raised, hub), {"content-type": "application/json"}


def _slack(finding: Finding, hub: str) -> bytes:
    head = f"*{finding.severity.value.upper()}* {finding.kind} · {finding.scope}"
    text = f"{head}\n{finding.text}"
    if len(text) > SLACK_SECTION_MAX:
        text = text[: SLACK_SECTION_MAX - 1] + "…"
    context = f"fleetmeter hub {hub} · alert {finding.id}"[:SLACK_SECTION_MAX]
    return orjson.dumps(
        {
            "text": f"[{finding.severity.value}] {finding.text}",  # notifications show this
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": context}]},
            ],
        }
    )


def _ntfy_headers(finding: Finding, hub: str) -> dict[str, str]:
    title = f"fleetmeter {hub}: {finding.kind} ({finding.scope})"
    return {
        "content-type": "text/plain; charset=utf-8",
        # header values travel as latin-1: keep them ASCII (the body carries the full text)
        "x-title": title.encode("ascii", "replace").decode(),
        "x-priority": NTFY_PRIORITY[finding.severity],
        "x-tags": "".join(
            c if c.isascii() and c.isalnum() or c in "_-" else "_" for c in finding.kind
        ),
    }
