"""Budgets and the governor that enforces them on the hub's live totals (see `governor`)."""
