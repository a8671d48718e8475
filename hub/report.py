"""`fleet-hub report --json`: the fleet's stored calls, priced and grouped like `node-agent scan`.

Rows come from `pricing.rollup` (the one row shape of both reports), so a consumer reads either
the same way. The top level keeps the scan's keys that mean something on a hub: `group_by`,
`rows`, `total`, `skipped` (here: retracted calls in the range) and `unknown_models`. A scan's
`files`, `bytes` and `problems` describe log reading, which the nodes did; they are left out.

Attribution comes from the store: machine is the node that sent the call, profile and account
as it filed them. The cost class comes from the profile's billing as the store knows it now.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date, datetime, timedelta, tzinfo
from typing import Any

from hub._pricing import billing_of, safe_price
from hub.store import Store
from pricing import CostClass, PriceBook
from pricing.rollup import Attribution, Rollup

RETRACTED = "retracted"  # the `skipped` reason for calls found to copy another one
NO_EXTRA = Attribution()  # stored events carry their own attribution, filed at ingest


def build_hub_report(
    store: Store,
    book: PriceBook,
    *,
    by: Sequence[str],
    tz: tzinfo,
    since: date | None = None,
    until: date | None = None,
) -> dict[str, Any]:
    """Every kept call from day `since` to day `until` (inclusive, in `tz`), grouped by `by`
    (any `pricing.rollup.GROUP_KEYS` name; an unknown one raises `UnknownGroupKeyError`)."""
    rollup = Rollup(tuple(by), tz)
    billing = store.billing()
    unknown_models: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    start = _day_start(since, tz) if since is not None else None
    end = _day_start(until + timedelta(days=1), tz) if until is not None else None
    for event in store.usage_events(start, end):
        if not event.counts:
            skipped[RETRACTED] += 1
            continue
        priced, _ = safe_price(book, event, billing_of(billing, event.machine, event.profile))
        if priced.cost_class is CostClass.UNKNOWN:
            unknown_models[event.model] += 1
        rollup.add(event, priced, NO_EXTRA)
    return {
        "group_by": list(rollup.by),
        "rows": [row.to_json() for row in rollup.sorted_rows()],
        "total": rollup.total.to_json(),
        "skipped": dict(sorted(skipped.items())),
        "unknown_models": dict(sorted(unknown_models.items())),
    }


def _day_start(day: date, tz: tzinfo) -> float:
    # fold=0 gives the day's first instant even where a DST change skips or repeats midnight.
    return datetime.combine(day, datetime.min.time(), tz).timestamp()
