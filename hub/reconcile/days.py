"""Reconciliation per provider and UTC day, as the dashboard's Reconciliation tab shows it:
the fleet's estimate, the billed figure, the drift, the causes, the day's status and the
drift of the days before (the trend), summed exactly from a run's rows (`Outcome.to_json`,
the same in the embedded dashboard and through the API).

`latest_json` is what `GET /api/v1/reconcile/latest` answers: the latest run of the usual
days, or how to set reconciliation up when the hub's config names no provider.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from hub.reconcile.run import Reconciler

HUNDRED: Final = Decimal(100)
TREND_DAYS: Final = 7  # days of drift the trend shows, this one last
SETUP: Final = """Reconciliation is not set up: add this to hub.toml, then restart the hub:
[reconcile]               # interval = 3600.0 s, days = 3 (7: the trend)
[reconcile.anthropic]     # an Admin API key (sk-ant-admin...), mode 600
key_file = "anthropic-admin.key"
# analytics = true        # Enterprise: Claude Code per user (read:analytics)
[[reconcile.keys]]        # which fleet profiles bill to which provider key
provider = "anthropic"    # or "openai" ([reconcile.openai] key_file = ...)
key = "apikey_01AbC"
profiles = ["spark01/claude"]   # globs MACHINE/PROFILE; see README"""

FINAL: Final = "final"
PARTIAL: Final = "partial"  # the provider is still finalising the day
UNREACHABLE: Final = "unreachable"


@dataclass(frozen=True, slots=True)
class ProviderDay:
    provider: str
    day: date | None  # None: a provider that could not be asked (no day of it is known)
    fleet: Decimal  # what the fleet expects to be billed (metered + estimated)
    billed: Decimal
    unknown_calls: int  # fleet calls of no known price: the estimate is short by them
    causes: tuple[str, ...]  # of the rows past the threshold, most dollars first
    status: str  # FINAL, PARTIAL or UNREACHABLE
    error: str | None  # why a provider could not be asked, in one line
    trend: tuple[Decimal | None, ...]  # drift % of the days before and this one (None: no bill)
    rows: tuple[Mapping[str, Any], ...]  # the run's rows of this provider and day

    @property
    def key(self) -> str:
        return f"{self.provider}:{self.day.isoformat() if self.day else '-'}"

    @property
    def drift(self) -> Decimal:
        return self.billed - self.fleet

    @property
    def percent(self) -> Decimal | None:
        """Drift as a percent of the billed figure (None when nothing was billed)."""
        return None if not self.billed else self.drift * HUNDRED / self.billed


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def provider_days(result: Mapping[str, Any], today: date | None = None) -> list[ProviderDay]:
    """One entry per provider that answered and day of the run (a day without a row is $0 on
    both sides), and one per provider that could not be asked; in (provider, day) order."""
    first, last = date.fromisoformat(result["since"]), date.fromisoformat(result["until"])
    today = today or datetime.now(UTC).date()
    by_day: dict[tuple[str, date], list[Mapping[str, Any]]] = defaultdict(list)
    for row in result["rows"]:
        by_day[(str(row["provider"]), date.fromisoformat(row["day"]))].append(row)
    errors: dict[str, str] = {
        p: str(why) for p, why in result["errors"].items() if " " not in p
    }  # "anthropic analytics" is not a provider of its own
    # those asked (a day without a row is $0 both sides) and any other with rows (a bill
    # filed in the store, say)
    asked = {*result.get("providers", ()), *(p for p, _ in by_day)}
    answered = sorted(asked - set(errors))
    out: list[ProviderDay] = []
    for provider in answered:
        drifts: list[Decimal | None] = []
        for day in _days(first, last):
            rows = by_day.get((provider, day), [])
            fleet = sum((Decimal(r["fleet"]["usd"]) for r in rows), Decimal(0))
            billed = sum((Decimal(r["billed"]["usd"]) for r in rows), Decimal(0))
            drifts.append(None if not billed else (billed - fleet) * HUNDRED / billed)
            partial = any(r["partial"] for r in rows) or (not rows and day >= today)
            out.append(
                ProviderDay(
                    provider,
                    day,
                    fleet,
                    billed,
                    sum(int(r["fleet"]["unknown_calls"]) for r in rows),
                    _causes(rows),
                    PARTIAL if partial else FINAL,
                    None,
                    tuple(drifts[-TREND_DAYS:]),
                    tuple(rows),
                )
            )
    for provider, why in sorted(errors.items()):
        out.append(
            ProviderDay(provider, None, Decimal(0), Decimal(0), 0, (), UNREACHABLE, why, (), ())
        )
    return sorted(out, key=lambda d: (d.provider, d.day or date.min))


def _causes(rows: list[Mapping[str, Any]]) -> tuple[str, ...]:
    weight: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if row["cause"]:
            weight[str(row["cause"])] += abs(Decimal(row["drift"]["usd"]))
    return tuple(sorted(weight, key=lambda c: (-weight[c], c)))


def latest_json(reconciler: Reconciler) -> dict[str, Any]:
    """What `GET /api/v1/reconcile/latest` answers (see the module's doc)."""
    settings = reconciler.settings
    latest = reconciler.latest()
    configured = settings.holds_bills
    return {
        "configured": configured,
        "setup": None if configured else SETUP,
        "running": reconciler.running,
        "interval": settings.interval,
        "at": None if latest is None else latest[1],
        "result": None if latest is None else latest[0].to_json(),
    }
