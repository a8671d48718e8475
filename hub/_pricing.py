"""Pricing one stored call for the hub: its billing from the profile table, and a price that a
broken table can never turn into an exception (the call is then unknown, never $0)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from pricing import Billing, CostClass, PriceBook, PricedCall
from shared.events import UsageEvent

log = logging.getLogger(__name__)


def billing_of(
    table: Mapping[tuple[str, str], Billing], machine: str, profile: str | None
) -> Billing:
    """A profile's billing; a call with no profile, or an unannounced one, is API (metered)."""
    if profile is None:
        return Billing.API
    return table.get((machine, profile), Billing.API)


def safe_price(book: PriceBook, event: UsageEvent, billing: Billing) -> tuple[PricedCall, bool]:
    """The call's price and whether pricing failed (it is then UNKNOWN with the reason)."""
    try:
        return book.price(event, billing), False
    except Exception as exc:  # a broken table must never stop the hub
        log.warning("could not price %s (%s): %s", event.event_id, event.model, exc)
        return PricedCall(None, CostClass.UNKNOWN, None, False, (f"pricing failed: {exc}",)), True
