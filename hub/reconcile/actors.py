"""Claude Code's spend per Enterprise user and UTC day: the fleet's estimate beside the
analytics report's (`hub.reconcile.analytics`).

The fleet prices every call at list API rates (its API-equivalent figure), whatever the plan;
the report's `list_amount` is the same usage at list price, so those two are held against each
other (the drift), and `amount` (after the plan's discount) is shown beside them as what is
billed. A fleet profile is a user by `[[reconcile.actors]]` (email or `user_...` id); profiles
no mapping names are not compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Final

from hub.findings import Finding, Severity
from hub.reconcile.analytics import PRODUCT, AnalyticsReport, Spend
from hub.reconcile.fleet import ReportFn
from hub.reconcile.match import HUNDRED, _usd
from hub.reconcile.settings import ReconcileSettings
from shared.events import Agent

FLEET_BY: Final = ("day", "machine", "profile", "agent")
ZERO: Final = Decimal(0)


@dataclass(slots=True)
class FleetSide:
    list_usd: Decimal = ZERO  # at list API rates (the API-equivalent figure)
    unknown_calls: int = 0  # calls of no known price: the estimate is short by them
    profiles: set[str] = field(default_factory=set)


@dataclass(slots=True)
class ActorRow:
    day: date
    actor: str  # the mapping's name for the user, else the report's email or id
    user_id: str | None  # None: no report row (the fleet alone saw this user that day)
    fleet: FleetSide
    billed: Spend
    partial: bool

    @property
    def drift(self) -> Decimal:
        """List price billed less the fleet's list-price estimate: positive when the fleet
        under-counts."""
        return self.billed.list_amount - self.fleet.list_usd

    def drifts(self, percent: Decimal, usd: Decimal) -> bool:
        drift = abs(self.drift)
        larger = max(abs(self.billed.list_amount), abs(self.fleet.list_usd))
        return drift > usd and drift * HUNDRED > percent * larger

    @property
    def cause(self) -> str:
        return "unseen_usage" if self.drift > 0 else "fleet_excess"

    def text(self) -> str:
        where = f"anthropic Claude Code, user {self.actor}, {self.day}"
        listed = f"${self.billed.list_amount.quantize(Decimal('0.01')):,}"
        fleet = f"${self.fleet.list_usd.quantize(Decimal('0.01')):,}"
        if self.drift > 0:
            return (
                f"{where}: the analytics report lists {listed} at list price, the fleet's "
                f"profiles of this user {fleet}: Claude Code use no mapped profile reported"
            )
        return (
            f"{where}: the fleet counted {fleet} at list price, the analytics report lists "
            f"{listed}: calls counted twice or profiles mapped to the wrong user"
        )

    def to_json(self) -> dict[str, Any]:
        listed = self.billed.list_amount
        return {
            "day": self.day.isoformat(),
            "actor": self.actor,
            "user_id": self.user_id,
            "partial": self.partial,
            "fleet": {
                "list_usd": _usd(self.fleet.list_usd),
                "unknown_calls": self.fleet.unknown_calls,
                "profiles": sorted(self.fleet.profiles),
            },
            "billed": {"usd": _usd(self.billed.amount), "list_usd": _usd(listed)},
            "drift": {
                "usd": _usd(self.drift),
                "percent": None if not listed else _usd(self.drift * HUNDRED / listed),
            },
        }

    def finding(self) -> Finding:
        return Finding(
            id=f"reconcile:anthropic:{self.day}:{PRODUCT}:{self.actor}:{self.cause}",
            kind=f"reconcile_{self.cause}",
            scope=f"provider=anthropic,actor={self.actor}",
            severity=Severity.WARNING,
            start=datetime.combine(self.day, time(), UTC).timestamp(),
            text=self.text(),
            evidence={
                "provider": "anthropic",
                "product": PRODUCT,
                "day": self.day.isoformat(),
                "actor": self.actor,
                "fleet_list_usd": str(self.fleet.list_usd),
                "billed_usd": str(self.billed.amount),
                "billed_list_usd": str(self.billed.list_amount),
                "drift_usd": str(self.drift),
            },
        )


def fleet_by_actor(
    report: ReportFn, settings: ReconcileSettings, first: date, last: date
) -> dict[tuple[date, str], FleetSide]:
    """Claude Code's calls of mapped profiles, per (UTC day, actor as the mapping names it)."""
    out: dict[tuple[date, str], FleetSide] = {}
    for row in report(FLEET_BY, UTC, first, last)["rows"]:
        if row["agent"] != Agent.CLAUDE_CODE.value:
            continue
        actor = settings.actor_of(str(row["machine"]), str(row["profile"]))
        if actor is None:
            continue
        side = out.setdefault((date.fromisoformat(row["day"]), actor), FleetSide())
        equivalent = row["cost"]["api_equivalent"]
        side.list_usd += ZERO if equivalent is None else Decimal(str(equivalent))
        side.unknown_calls += int(row["unknown_calls"])
        side.profiles.add(f"{row['machine']}/{row['profile']}")
    return out


def join_actors(
    fleet: dict[tuple[date, str], FleetSide], billed: AnalyticsReport
) -> list[ActorRow]:
    """One row per user and day either side has, in (day, actor) order. A mapping names a
    user by email or id; the report's row is matched on either (emails without case)."""
    names = {actor for _, actor in fleet}
    rows: dict[tuple[date, str], ActorRow] = {}
    for spend in billed.actors:
        actor = _mapped_name(names, spend.user_id, spend.email) or spend.email or spend.user_id
        key = (spend.day, actor)
        row = rows.get(key)
        if row is None:
            row = rows[key] = ActorRow(
                spend.day,
                actor,
                spend.user_id,
                fleet.get(key) or FleetSide(),
                Spend(),
                spend.day in billed.partial_days,
            )
        row.billed = row.billed + spend.spend
    for key, side in fleet.items():
        if key not in rows:
            day, actor = key
            rows[key] = ActorRow(day, actor, None, side, Spend(), day in billed.partial_days)
    return [rows[k] for k in sorted(rows)]


def _mapped_name(names: set[str], user_id: str, email: str | None) -> str | None:
    for name in names:
        if name == user_id or (email is not None and name.lower() == email.lower()):
            return name
    return None


def claude_code_json(billed: AnalyticsReport, rows: list[ActorRow]) -> dict[str, Any]:
    """The analytics part of a reconciliation's JSON: days, models (with what the 100-group
    cap left out), users."""
    return {
        "product": PRODUCT,
        "days": [
            {
                "day": day.isoformat(),
                "usd": _usd(spend.amount),
                "list_usd": _usd(spend.list_amount),
                "partial": day in billed.partial_days,
                "capped": day in billed.capped_days,
            }
            for day, spend in sorted(billed.totals.items())
        ],
        "models": [
            {
                "day": day.isoformat(),
                "model": model,
                "usd": _usd(spend.amount),
                "list_usd": _usd(spend.list_amount),
            }
            for (day, model), spend in sorted(billed.models.items())
        ],
        "actors": [row.to_json() for row in rows],
    }
