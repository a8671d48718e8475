"""One row per provider, UTC day, model and key: the fleet's figure beside the billed one.

A row drifts when its dollars differ by more than `threshold_percent` of the larger figure
and by more than `threshold_usd` (both, so that neither a cent on a tiny row nor a tenth of a
percent on a huge one is news). Its cause is named by `causes.name_cause`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from hub.reconcile.billed import BilledFigure
from hub.reconcile.causes import Cause
from hub.reconcile.fleet import FleetFigure, RowKey
from hub.reconcile.model import billed_tokens

HUNDRED = Decimal(100)


def _usd(value: Decimal) -> str:
    """Exact to the micro-dollar (a shared-out amount can have many places)."""
    return format(value.quantize(Decimal("0.000001")).normalize(), "f")


@dataclass(slots=True)
class Row:
    provider: str
    day: date
    model: str
    key: str
    fleet: FleetFigure
    billed: BilledFigure
    partial: bool  # the provider has not finalised this day yet
    cause: Cause | None = None

    @property
    def drift(self) -> Decimal:
        """Billed minus the fleet's paid figure: positive when the fleet under-estimates."""
        return self.billed.usd - self.fleet.paid

    def drifts(self, percent: Decimal, usd: Decimal) -> bool:
        drift = abs(self.drift)
        larger = max(abs(self.billed.usd), abs(self.fleet.paid))
        return drift > usd and drift * HUNDRED > percent * larger

    def key_tuple(self) -> RowKey:
        return (self.provider, self.day, self.model, self.key)

    def to_json(self) -> dict[str, Any]:
        billed = self.billed.usd
        return {
            "provider": self.provider,
            "day": self.day.isoformat(),
            "model": self.model,
            "key": self.key,
            "partial": self.partial,
            "fleet": {
                "usd": _usd(self.fleet.paid),
                "subscription_included_usd": _usd(self.fleet.subscription),
                "overage_usd": _usd(self.fleet.overage),
                "api_equivalent_usd": _usd(self.fleet.api_equivalent),
                "unknown_calls": self.fleet.unknown_calls,
                "tokens": billed_tokens(self.fleet.tokens),
                "web_search_requests": self.fleet.tokens.web_search_requests,
                "profiles": sorted(self.fleet.profiles),
            },
            "billed": {
                "usd": _usd(billed),
                "usd_by_class": {k: _usd(v) for k, v in sorted(self.billed.by_class.items())},
                "tokens": billed_tokens(self.billed.tokens),
                "web_search_requests": self.billed.tokens.web_search_requests,
                "other": sorted(set(self.billed.other)),
                "original": {k: _usd(v) for k, v in sorted(self.billed.original.items())},
                "rates": sorted(self.billed.rates),
            },
            "drift": {
                "usd": _usd(self.drift),
                "percent": None if not billed else _usd(self.drift * HUNDRED / billed),
            },
            "cause": None if self.cause is None else self.cause.name,
            "explanation": None if self.cause is None else self.cause.text,
        }


def join(
    fleet: dict[RowKey, FleetFigure],
    billed: dict[RowKey, BilledFigure],
    partial: dict[str, set[date]],
) -> list[Row]:
    """Every key either side has, in (provider, day, model, key) order."""
    rows = []
    for key in sorted(set(fleet) | set(billed)):
        provider, day, model, api_key = key
        rows.append(
            Row(
                provider,
                day,
                model,
                api_key,
                fleet.get(key) or FleetFigure(),
                billed.get(key) or BilledFigure(),
                partial=day in partial.get(provider, set()),
            )
        )
    return rows
