"""What the hub has to tell a person: one finding per happening, whoever noticed it.

Budgets (the governor's thresholds and stops), detectors (spikes, outliers, cache thrash,
retry loops, ...) and the hub itself (a node gone quiet) make findings; the alert outbox
delivers them, the dashboard and the API show them. A finding's `id` is stable: the same
happening noticed twice (after a restart, say) has the same id, so delivery can use it as the
idempotency key and a sink that sees it twice knows it is the same alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Finding:
    id: str  # stable for the happening, e.g. "budget:spark02-day:2026-12-05:100"
    kind: str  # "budget", "forecast", "run_rate_spike", "cache_thrash", "retry_loop", ...
    scope: str  # what it concerns, as KIND=VALUE[,KIND=VALUE]: "machine=spark02", "fleet"
    severity: Severity
    start: float  # epoch seconds: when the happening began (the onset, the crossing)
    text: str  # one sentence a person understands, with the figures that matter
    # the figures behind it, as exact text (money as decimal strings, never floats)
    evidence: Mapping[str, str] = field(default_factory=dict)


class FindingSink(Protocol):
    """Where findings go (the alert outbox; a list in a test). Must be idempotent on `id`:
    raising the same finding twice delivers it once."""

    def raise_finding(self, finding: Finding) -> None: ...


class EverySink:
    """Hands each finding to several sinks in turn (a detector's journal and the outbox)."""

    def __init__(self, *sinks: FindingSink) -> None:
        self._sinks = sinks

    def raise_finding(self, finding: Finding) -> None:
        for sink in self._sinks:
            sink.raise_finding(finding)
