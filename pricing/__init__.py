"""Tokens to money: effective-dated price tables, model matching, the long-context cliff, cost classes.

Public surface (implemented in private modules of this package):

- `Billing`: how a profile pays (`API`, `SUBSCRIPTION`).
- `CostClass`: `METERED`, `SUBSCRIPTION_INCLUDED`, `ESTIMATED`, `UNKNOWN`.
- `PriceBook.default()`: the tables shipped in `pricing/tables/*.toml`; `PriceBook.load(dir)`.
- `PriceBook.price(event, billing=Billing.API) -> PricedCall`: the API-equivalent cost of one
  usage event (exact `Decimal` USD, or None when no price is known) and its one cost class.
"""
