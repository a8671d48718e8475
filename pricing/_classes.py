"""Cost classes: every priced call gets exactly one, by a fixed precedence.

UNKNOWN when no price is known (never shown as $0); else SUBSCRIPTION_INCLUDED when a plan covers
the call (marginal cost zero, but the API-equivalent figure and its `estimated` flag are kept so
the plan's value shows); else ESTIMATED when the figure is approximate; else METERED.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum

import msgspec

# How a profile pays lives with the profile configuration; pricing speaks the same type.
from shared.config import Billing


class CostClass(StrEnum):
    METERED = "metered"
    SUBSCRIPTION_INCLUDED = "subscription_included"
    ESTIMATED = "estimated"
    UNKNOWN = "unknown"


class PricedCall(msgspec.Struct, frozen=True):
    """The price of one usage event.

    `api_equivalent` is what the call costs at list API rates (exact USD, unrounded), or None
    when no price is known. `model_id` is the canonical table id the logged name resolved to.
    `notes` say, in words, why a figure is estimated or missing.
    """

    api_equivalent: Decimal | None
    cost_class: CostClass
    model_id: str | None
    estimated: bool
    notes: tuple[str, ...] = ()


def classify(priced: bool, estimated: bool, billing: Billing) -> CostClass:
    if not priced:
        return CostClass.UNKNOWN
    if billing == Billing.SUBSCRIPTION:
        return CostClass.SUBSCRIPTION_INCLUDED
    if estimated:
        return CostClass.ESTIMATED
    return CostClass.METERED


__all__ = ["Billing", "CostClass", "PricedCall", "classify"]
