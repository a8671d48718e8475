"""Tokens to money: effective-dated price tables, model matching, long-context cliffs, cost classes.

Public surface (implemented in private modules of this package):

- `Billing`: how a profile pays (`API`, `SUBSCRIPTION`); the same type as `shared.config.Billing`.
- `CostClass`: `METERED`, `SUBSCRIPTION_INCLUDED`, `ESTIMATED`, `UNKNOWN`.
- `PriceBook.default()`: the tables shipped in `pricing/tables/*.toml`; `PriceBook.load(dir)`.
- `PriceBook.price(event, billing=Billing.API) -> PricedCall`: the API-equivalent cost of one
  usage event (exact `Decimal` USD, or None when no price is known) and its one cost class.
- `PriceBook.terms(event) -> Terms | PricedCall`: what fixes the event's price apart from its
  counts (or its unknown `PricedCall`); `CallBatch(book)` prices many calls per group as exact
  sums of their counts, which is how a report prices thousands of calls cheaply.
- `PriceBook.lookup(model, at, provider=None) -> PricePeriod | None`: the prices that apply to a
  model name at an instant, for diagnostics.
- `PriceTableError`: a broken table; its message names the file and the key.

Modules: `_tables` reads and checks the TOML, `_match` resolves logged model names, `_engine`
does the arithmetic, `_classes` the cost classes, `_book` ties them together.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pricing._book import CallBatch, PriceBook, Terms
    from pricing._classes import Billing, CostClass, PricedCall, classify
    from pricing._match import normalise
    from pricing._tables import PriceTableError
    from pricing._types import Modifier, PricePeriod, RateSet, Source, Tier

# Each name is imported from its module when first asked for: what only reads cost classes or
# rolls figures up (a report with nothing to price) does not load the tables and the engine.
_HOMES: Final = {
    "CallBatch": "_book",
    "PriceBook": "_book",
    "Terms": "_book",
    "Billing": "_classes",
    "CostClass": "_classes",
    "PricedCall": "_classes",
    "classify": "_classes",
    "normalise": "_match",
    "PriceTableError": "_tables",
    "Modifier": "_types",
    "PricePeriod": "_types",
    "RateSet": "_types",
    "Source": "_types",
    "Tier": "_types",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'pricing' has no attribute {name!r}")
    value = getattr(import_module(f"pricing.{home}"), name)
    globals()[name] = value  # once found, an ordinary attribute
    return value


__all__ = [
    "Billing",
    "CallBatch",
    "CostClass",
    "Modifier",
    "PriceBook",
    "PricePeriod",
    "PriceTableError",
    "PricedCall",
    "RateSet",
    "Source",
    "Terms",
    "Tier",
    "classify",
    "normalise",
]
