"""One reconciliation: fetch each configured provider's reports, join them with the fleet's
figures, name each drift's cause, and hand the drifts of finalised days to a FindingSink.

A finding's id is (provider, day, model, key, cause): the same drift found by every later run
(and after a restart) is the same alert. A day the provider has not finalised is shown but not
alerted on; so is a row under the threshold.
"""

from __future__ import annotations

import logging
import threading
import time as clock
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from hub.findings import Finding, FindingSink, Severity
from hub.reconcile import analytics, anthropic, openai
from hub.reconcile.actors import claude_code_json, fleet_by_actor, join_actors
from hub.reconcile.billed import BilledFigure, billed_figures
from hub.reconcile.causes import name_cause
from hub.reconcile.fleet import ReportFn, RowKey, fleet_figures
from hub.reconcile.local import LOCAL_PROVIDERS, LocalSource
from hub.reconcile.match import Row, join
from hub.reconcile.model import ConnectorError, ProviderReport
from hub.reconcile.settings import ProviderSettings, ReconcileSettings
from hub.reconcile.transport import Transport
from pricing import PriceBook
from pricing.sdk_credit import Moved
from shared.config import ConfigError

log = logging.getLogger(__name__)

# (provider settings, first day, last day) -> the provider's reports
Fetch = Callable[[ProviderSettings, date, date], ProviderReport]
# (first day, last day) -> Agent SDK overage and untold calls per (MACHINE/PROFILE, UTC day,
# model as logged)
OverageFn = Callable[[date, date], Mapping[tuple[str, date, str], Moved]]
# (Anthropic's settings, first day, last day) -> Claude Code's spend from the analytics report
AnalyticsFetch = Callable[[ProviderSettings, date, date], analytics.AnalyticsReport]
CONNECTORS = {"anthropic": anthropic.fetch, "openai": openai.fetch}
ANALYTICS: Final = "anthropic analytics"  # its key in Outcome.errors


def http_fetch(transport: Transport) -> Fetch:
    def fetch(settings: ProviderSettings, first: date, last: date) -> ProviderReport:
        return CONNECTORS[settings.name](settings, transport, first, last)

    return fetch


def http_analytics(transport: Transport) -> AnalyticsFetch:
    def fetch(settings: ProviderSettings, first: date, last: date) -> analytics.AnalyticsReport:
        return analytics.fetch(settings, transport, first, last)

    return fetch


@dataclass(slots=True)
class Outcome:
    first: date
    last: date
    fleet_tz: str
    rows: list[Row] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # provider -> why it has no rows
    unmapped: list[str] = field(default_factory=list)  # fleet profiles no key mapping names
    claude_code: dict[str, Any] | None = None  # the analytics report's part, when asked
    providers: list[str] = field(default_factory=list)  # those asked

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.first.isoformat(),
            "until": self.last.isoformat(),
            "buckets": "UTC days",
            "fleet_tz": self.fleet_tz,
            "rows": [row.to_json() for row in self.rows],
            "findings": [_finding_json(f) for f in self.findings],
            "errors": dict(sorted(self.errors.items())),
            "unmapped_profiles": self.unmapped,
            "claude_code": self.claude_code,
            "providers": self.providers,
        }


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {**asdict(finding), "severity": finding.severity.value}


def resolve_days(
    settings: ReconcileSettings, since: date | None, until: date | None
) -> tuple[date, date]:
    """`since` to `until`, by default the last `days` UTC days up to today (providers finalise
    a day late); `until` given alone ends that span there."""
    last = until or datetime.now(UTC).date()
    return since or last - timedelta(days=settings.days - 1), last


def reconcile(
    settings: ReconcileSettings,
    report: ReportFn,
    fetch: Fetch,
    first: date,
    last: date,
    *,
    book: PriceBook | None = None,
    providers: tuple[str, ...] | None = None,
    sink: FindingSink | None = None,
    local: LocalSource | None = None,
    overage: OverageFn | None = None,
    analytics_fetch: AnalyticsFetch | None = None,
) -> Outcome:
    outcome = Outcome(first, last, settings.fleet_tz)
    wanted = [p for p in settings.providers if providers is None or p in providers]
    outcome.providers = sorted(wanted)
    billed: dict[RowKey, BilledFigure] = {}
    partial: dict[str, set[date]] = {}
    # imported bills and Cursor's dollars: compared on the days they cover
    local_wanted = [p for p in LOCAL_PROVIDERS if providers is None or p in providers]
    side = local(first, last, local_wanted) if local is not None and local_wanted else None
    if side is not None:  # and the providers whose bills the store holds for these days
        outcome.providers = sorted({*wanted, *side.covered})
    for name in wanted:
        try:
            provider_report = fetch(settings.providers[name], first, last)
        except (ConnectorError, ConfigError) as exc:  # a key file's fault is this provider's
            outcome.errors[name] = str(exc)
            log.warning("reconcile: %s", exc)
            continue
        billed.update(billed_figures(provider_report))
        partial[name] = provider_report.partial_days
    answered = set(partial)
    if side is not None:
        billed.update(side.billed)
        for name, days in side.partial.items():
            partial.setdefault(name, set()).update(days)
    past = overage(first, last) if overage is not None else None
    fleet, unmapped = fleet_figures(report, settings, first, last, past)
    outcome.unmapped = sorted(unmapped)
    covered = side.covered if side is not None else {}
    fetched = {  # providers that answered, and the days a local bill covers
        k: v for k, v in fleet.items() if k[0] in answered or k[1] in covered.get(k[0], ())
    }
    if side is not None:
        fetched.update(side.fleet)
    for row in join(fetched, billed, partial):
        if row.drifts(settings.threshold_percent, settings.threshold_usd):
            row.cause = name_cause(row, book)
            if not row.partial:
                outcome.findings.append(_finding(row))
        outcome.rows.append(row)
    anthropic_settings = settings.providers.get("anthropic")
    if (
        analytics_fetch is not None
        and anthropic_settings is not None
        and anthropic_settings.analytics
        and "anthropic" in wanted
    ):
        _claude_code(outcome, settings, report, analytics_fetch, anthropic_settings)
    if sink is not None:
        for finding in outcome.findings:
            sink.raise_finding(finding)  # idempotent on the id: a drift found again adds nothing
    return outcome


def _claude_code(
    outcome: Outcome,
    settings: ReconcileSettings,
    report: ReportFn,
    fetch: AnalyticsFetch,
    anthropic_settings: ProviderSettings,
) -> None:
    """Claude Code's spend per user against the fleet's; a key without the read:analytics
    scope is one line in `errors` and costs nothing else."""
    try:
        billed = fetch(anthropic_settings, outcome.first, outcome.last)
    except (ConnectorError, ConfigError) as exc:
        outcome.errors[ANALYTICS] = str(exc)
        log.warning("reconcile: %s", exc)
        return
    rows = join_actors(fleet_by_actor(report, settings, outcome.first, outcome.last), billed)
    for row in rows:
        if not row.partial and row.drifts(settings.threshold_percent, settings.threshold_usd):
            outcome.findings.append(row.finding())
    outcome.claude_code = claude_code_json(billed, rows)


def _finding(row: Row) -> Finding:
    assert row.cause is not None
    return Finding(
        id=f"reconcile:{row.provider}:{row.day}:{row.model}:{row.key}:{row.cause.name}",
        kind=f"reconcile_{row.cause.name}",
        scope=f"provider={row.provider},key={row.key}",
        severity=Severity.WARNING,
        start=datetime.combine(row.day, time(), UTC).timestamp(),
        text=row.cause.text,
        evidence=_evidence(row, row.cause.evidence),
    )


def _evidence(row: Row, extra: Mapping[str, str]) -> dict[str, str]:
    return {
        "provider": row.provider,
        "day": row.day.isoformat(),
        "model": row.model,
        "key": row.key,
        "fleet_usd": str(row.fleet.paid),
        "billed_usd": str(row.billed.usd),
        "drift_usd": str(row.drift),
        **extra,
    }


class Reconciler:
    """What `fleet-hub serve` and `fleet-hub reconcile` run: settings, the fleet's report, the
    providers over `transport` (its owner closes it) and the outbox, bound once."""

    def __init__(
        self,
        settings: ReconcileSettings,
        report: ReportFn,
        sink: FindingSink | None,
        transport: Transport,
        *,
        book: PriceBook | None = None,
        local: LocalSource | None = None,
        overage: OverageFn | None = None,
    ) -> None:
        self.settings = settings
        self.overage = overage
        self.report = report
        self.sink = sink
        self.book = book
        self.local = local  # imported bills and Cursor's dollars, from the store
        self.fetch = http_fetch(transport)
        self.fetch_analytics = http_analytics(transport)
        # One run at a time, and the latest answer kept: API readers asking at once, or again
        # within `max_age`, share one round of the providers' rate-limited admin APIs.
        self._lock = threading.Lock()
        self._latest: tuple[tuple[object, ...], float, Outcome] | None = None
        # the latest run of the usual days and every provider (the schedule's), and when it
        # ended: what the dashboard shows without asking the providers again
        self._usual: tuple[Outcome, float] | None = None

    def latest(self) -> tuple[Outcome, float] | None:
        """The latest run of the last `days` for every provider and its end (epoch seconds),
        or None before the first; never asks the providers."""
        return self._usual

    @property
    def running(self) -> bool:
        return self._lock.locked()

    def forget(self) -> None:
        """Drop the latest answer: the store's billed figures changed (a bill was imported)."""
        with self._lock:
            self._latest = None

    def use_prices(self, book: PriceBook) -> None:
        """Name price causes against `book` (tables installed while the hub serves)."""
        with self._lock:
            self.book = book
            self._latest = None

    def run(
        self,
        first: date | None = None,
        last: date | None = None,
        providers: tuple[str, ...] | None = None,
        *,
        max_age: float = 0.0,
    ) -> Outcome:
        """Reconcile now, or give the latest answer for the same days and providers when it is
        at most `max_age` seconds old."""
        usual = first is None and last is None and providers is None
        first, last = resolve_days(self.settings, first, last)
        asked = (first, last, providers)
        with self._lock:
            latest = self._latest
            fresh = latest is not None and clock.monotonic() - latest[1] <= max_age
            if latest is not None and fresh and latest[0] == asked:
                return latest[2]
            outcome = reconcile(
                self.settings,
                self.report,
                self.fetch,
                first,
                last,
                book=self.book,
                providers=providers,
                sink=self.sink,
                local=self.local,
                overage=self.overage,
                analytics_fetch=self.fetch_analytics,
            )
            self._latest = (asked, clock.monotonic(), outcome)
            if usual:
                self._usual = (outcome, clock.time())
            return outcome
