"""The fleet's side: what the hub's store says each provider key spent, per UTC day and model.

Read through the same report the hub serves (`fleet-hub report`), grouped by UTC day, machine,
profile and model; each (machine, profile) goes to the provider key its `[[reconcile.keys]]`
mapping names. Profiles no mapping names are not compared (they are counted in `unmapped`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, tzinfo
from decimal import Decimal
from typing import Any, Final

from hub.reconcile.settings import ReconcileSettings
from pricing.sdk_credit import NOTHING, Moved
from shared.events import Tokens

# (by, tz, since, until) -> the rows of `fleet-hub report --json`
ReportFn = Callable[[Sequence[str], tzinfo, date | None, date | None], dict[str, Any]]
FLEET_BY: Final = ("day", "machine", "profile", "model")
RowKey = tuple[str, date, str, str]  # provider, UTC day, model, key
ZERO: Final = Decimal(0)


@dataclass(slots=True)
class FleetFigure:
    tokens: Tokens = field(default_factory=Tokens)
    paid: Decimal = ZERO  # metered + estimated: what the fleet expects to be billed
    subscription: Decimal = ZERO  # priced as subscription-included (at API rates)
    overage: Decimal = ZERO  # of `paid`: Agent SDK spend past a subscription's credit
    api_equivalent: Decimal = ZERO
    unknown_calls: int = 0
    profiles: set[str] = field(default_factory=set)  # MACHINE/PROFILE


def _money(value: object) -> Decimal:
    return ZERO if value is None else Decimal(str(value))


def fleet_figures(
    report: ReportFn,
    settings: ReconcileSettings,
    first: date,
    last: date,
    overage: Mapping[tuple[str, date, str], Moved] | None = None,
) -> tuple[dict[RowKey, FleetFigure], set[str]]:
    """The fleet's figures per (provider, day, model, key) from `first` to `last` (UTC days),
    and the MACHINE/PROFILE names of calls no mapping names. `overage` (per MACHINE/PROFILE,
    UTC day and model): subscription spend past the Agent SDK credit, which the provider bills
    like any metered spend: the report counts it as metered, so it is held against the bill as
    paid; this tells how much of that is overage."""
    figures: dict[RowKey, FleetFigure] = {}
    unmapped: set[str] = set()
    for row in report(FLEET_BY, UTC, first, last)["rows"]:
        name = f"{row['machine']}/{row['profile']}"
        mapping = settings.mapping_of(str(row["machine"]), str(row["profile"]))
        if mapping is None:
            unmapped.add(name)
            continue
        key = (mapping.provider, date.fromisoformat(row["day"]), str(row["model"]), mapping.key)
        figure = figures.setdefault(key, FleetFigure())
        figure.tokens = figure.tokens + Tokens(
            **row["tokens"], web_search_requests=row["web_search_requests"]
        )
        cost = row["cost"]
        # The report counts the overage as metered (`pricing.sdk_credit`), and calls whose
        # log does not say how Claude Code was started as estimated: those are not expected on
        # the bill (most are interactive), so they are held as subscription, not as paid.
        moved = (overage or {}).get((name, key[1], key[2]), NOTHING)
        estimated = _money(cost["estimated"])
        untold = min(moved.untold, estimated)
        figure.paid += _money(cost["metered"]) + estimated - untold
        figure.overage += moved.overage
        figure.subscription += _money(cost["subscription_included"]) + untold
        figure.api_equivalent += _money(cost["api_equivalent"])
        figure.unknown_calls += int(row["unknown_calls"])
        figure.profiles.add(name)
    return figures, unmapped
