"""Why a row drifts, worked out from its figures, in the order that tells causes apart:

1. `overage`: the fleet priced the usage as subscription-included, the provider billed it
   (extra usage): a class error for that profile and day (the Agent SDK overage the fleet does
   know of, `hub.credit`, is already held against the bill as paid);
2. `cache_tier`: the cache writes agree in sum but are split differently between the 5-minute
   and the 1-hour tier: a tier misread;
3. `price`: every token class agrees, the dollars do not: a rate in the tables is wrong or
   outdated (which rate, since when, and the rate the provider's figures imply);
4. `unseen_usage`: the provider has more tokens: usage no node saw (a machine or a key
   outside the fleet);
5. `fleet_excess`: the fleet has more: calls counted twice or filed under the wrong key;
6. `unexplained`: none of these fits (say so, never guess).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from hub.reconcile.model import CLASSES, billed_tokens
from pricing import PriceBook

if TYPE_CHECKING:
    from hub.reconcile.match import Row

TOKEN_TOLERANCE: Final = Decimal("0.001")  # a token count agrees within 0.1 %
RATE_TOLERANCE: Final = Decimal("0.005")  # an implied rate agrees within 0.5 %
MTOK: Final = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Cause:
    name: str
    text: str
    evidence: dict[str, str] = field(default_factory=dict)


def _agree(a: int, b: int) -> bool:
    return abs(a - b) <= max(Decimal(1), TOKEN_TOLERANCE * max(a, b))


def _money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01')):,}"


def _rate(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.0001')).normalize():f}/MTok"


def name_cause(row: Row, book: PriceBook | None) -> Cause:
    fleet = billed_tokens(row.fleet.tokens)
    billed = billed_tokens(row.billed.tokens)
    where = f"{row.provider} key {row.key}, {row.model}, {row.day}"
    same = {c: _agree(fleet[c], billed[c]) for c in CLASSES}
    fleet_total, billed_total = sum(fleet.values()), sum(billed.values())
    profiles = ", ".join(sorted(row.fleet.profiles)) or "no fleet profile"
    if row.fleet.subscription and row.drift > 0 and all(same.values()):
        return Cause(
            "overage",
            f"{where}: the fleet priced {_money(row.fleet.subscription)} of {profiles} as "
            f"subscription-included, the provider billed {_money(row.billed.usd)}: extra usage "
            "(overage) classed as included (Agent SDK calls past the monthly credit are billed "
            "when extra usage is on: say so with extra_usage = true in [[subscriptions]])",
            {
                "subscription_included_usd": str(row.fleet.subscription),
                "overage_usd": str(row.fleet.overage),
            },
        )
    writes = ("cache_write_5m", "cache_write_1h")
    others = [c for c in CLASSES if c not in writes]
    if (
        all(same[c] for c in others)
        and _agree(sum(fleet[c] for c in writes), sum(billed[c] for c in writes))
        and not all(same[c] for c in writes)
    ):
        moved = abs(fleet["cache_write_1h"] - billed["cache_write_1h"])
        return Cause(
            "cache_tier",
            f"{where}: cache writes agree in sum but the fleet read 5m {fleet['cache_write_5m']:,}"
            f" / 1h {fleet['cache_write_1h']:,} where the provider billed 5m "
            f"{billed['cache_write_5m']:,} / 1h {billed['cache_write_1h']:,}: {moved:,} tokens "
            "in the wrong tier",
            {"tokens_in_wrong_tier": str(moved)},
        )
    if all(same.values()):
        return _price_cause(row, book, where, fleet)
    if billed_total > fleet_total:
        extra = billed_total - fleet_total
        unmapped = "" if row.fleet.profiles else " (no node reported a call on this key)"
        return Cause(
            "unseen_usage",
            f"{where}: the provider billed {extra:,} tokens more than any node reported"
            f"{unmapped}: usage from a machine or key outside the fleet, "
            f"{_money(row.drift)} of it",
            {"tokens": str(extra), "usd": str(row.drift)},
        )
    if fleet_total > billed_total:
        extra = fleet_total - billed_total
        return Cause(
            "fleet_excess",
            f"{where}: the fleet counted {extra:,} tokens more than the provider billed "
            f"({profiles}): calls counted twice or filed under the wrong key",
            {"tokens": str(extra)},
        )
    return Cause("unexplained", f"{where}: tokens agree in total but not per class", {})


def _price_cause(row: Row, book: PriceBook | None, where: str, tokens: dict[str, int]) -> Cause:
    period = None
    if book is not None:
        noon = datetime.combine(row.day, time(12), UTC)
        period = book.lookup(row.model, noon, row.provider)
    wrong: list[str] = []
    evidence: dict[str, str] = {}
    for cls in CLASSES:
        amount = row.billed.by_class.get(cls)
        if amount is None or not tokens[cls]:
            continue
        implied = amount * MTOK / tokens[cls]
        table = period.rates.get(cls) if period is not None else None
        evidence[f"implied_{cls}_per_mtok"] = str(implied.quantize(Decimal("0.000001")))
        if table is None:
            continue
        evidence[f"table_{cls}_per_mtok"] = str(table)
        if abs(implied - table) > RATE_TOLERANCE * table:
            wrong.append(
                f"{cls} {_rate(table)} in the tables, the provider's figures imply {_rate(implied)}"
            )
    if wrong and period is not None:
        since = period.start.date().isoformat()
        return Cause(
            "price",
            f"{where}: tokens agree, dollars do not: {'; '.join(wrong)} (table period from "
            f"{since}{', ' + period.file if period.file else ''})",
            {**evidence, "table_from": since},
        )
    # a bill that does not split its dollars by class (an imported total) names no rate: say
    # which dated prices the fleet used, so that a price change is found
    since = f" (the tables' period from {period.start.date()})" if period is not None else ""
    return Cause(
        "price",
        f"{where}: tokens agree, dollars differ by {_money(row.drift)}: the fleet's prices "
        f"for this model differ from the provider's{since}",
        {**evidence, "table_from": str(period.start.date())} if period is not None else evidence,
    )
