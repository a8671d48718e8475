"""`fleet-hub report --json`: the fleet's stored calls, priced and grouped like `node-agent scan`.

Rows come from `pricing.rollup` (the one row shape of both reports), so a consumer reads either
the same way. The top level keeps the scan's keys that mean something on a hub: `group_by`,
`rows`, `total`, `skipped` (here: retracted calls in the range) and `unknown_models`. A scan's
`files`, `bytes` and `problems` describe log reading, which the nodes did; they are left out.

The figures come from the store's roll-ups (`hub._rollup`), not its events: a report reads a
few thousand sums at any store size, and days whose events retention pruned still report.
Each call is priced as it was when stored; the cost class comes from the profile's billing as
the store knows it now. Attribution: machine is the node that sent the call, profile and
account as it filed them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import localcontext
from itertools import chain, islice
from typing import Any, Final

from hub._pricing import billing_of
from hub._rollup import QUARTER_S, Cell, RollupWrites, cost_class
from hub._totals import MONEY
from hub.store import LAST_TIME, Store
from pricing import CostClass, PricedCall
from pricing.rollup import Rollup

RETRACTED = "retracted"  # the `skipped` reason for calls found to copy another one


def _week(day: date) -> str:
    year, week, _ = day.isocalendar()
    return f"{year}-W{week:02d}"


# Each `pricing.rollup.GROUP_KEYS` key: the roll-up key it is read from, and its value in a cell
# (day, week and month all come from the cell's local day).
CELL_KEYS: Final[dict[str, tuple[str, Callable[[Cell], str | None]]]] = {
    "day": ("day", lambda c: c.day.isoformat()),
    "week": ("day", lambda c: _week(c.day)),
    "month": ("day", lambda c: c.day.strftime("%Y-%m")),
    "model": ("model", lambda c: c.model),
    "agent": ("agent", lambda c: c.agent),
    "profile": ("profile", lambda c: c.profile),
    "account": ("account", lambda c: c.account),
    "machine": ("machine", lambda c: c.machine),
    "project": ("project", lambda c: c.project),
    "session": ("session_id", lambda c: c.session_id),
    "role": ("role", lambda c: None if c.role is None else c.role.value),
}


RECENT_QUARTERS: Final = 8  # a cache's cells end 2 h before now: later calls are read afresh
RECUT_QUARTERS: Final = 96  # a day: past it, cells are cut again at 2 h before now
CACHED_CELLS: Final = 50_000  # a read with more cells than this is not kept
CACHED_READS: Final = 16


@dataclass(frozen=True, slots=True)
class _Past:
    split: int  # the first quarter not in `cells`
    generation: int  # of the store's roll-up writes when `cells` were read
    cells: list[Cell]


class ReportCache:
    """The cells of a report's days before the last two hours, kept between reports of the
    same hub (the API's): a report then sums in SQL only the recent quarters (~a day's) and
    adds the kept ones, instead of every quarter of the month (0.3 s at 1,000,000 events).
    A write that touches a kept quarter (a late node's calls, a revision, a re-pricing)
    makes the next report read them again: `writes` are the writing store's
    (`Store.rollup_writes`), so only the process that writes the store may keep one.

    Reports may read from snapshots (`Store.snapshot`) on other threads: `generation` is the
    writes' generation when the snapshot was taken."""

    def __init__(self, writes: RollupWrites) -> None:
        self._writes = writes
        self._reads: OrderedDict[tuple[object, ...], _Past] = OrderedDict()
        self._lock = threading.Lock()

    def cells(
        self,
        store: Store,
        generation: int,
        tz: tzinfo,
        read: list[str],
        start: float | None,
        end: float | None,
    ) -> Iterable[Cell]:
        with self._lock:  # reports run on the API's worker threads
            split = int(time.time() // QUARTER_S) - RECENT_QUARTERS
            edge = split * QUARTER_S
            if (start is not None and start >= edge) or (end is not None and end <= edge):
                return store.rollup(tz, read, start, end)
            key = (tz, tuple(read), start)
            past = self._reads.get(key)
            if (
                past is None
                or split - past.split > RECUT_QUARTERS
                or past.generation > generation  # kept from a newer snapshot than this one
                or self._writes.touched_before(past.generation, past.split)
            ):
                cells = store.rollup(tz, read, start, edge)
                head = list(islice(cells, CACHED_CELLS + 1))
                if len(head) > CACHED_CELLS:  # too many to keep: read on as they come
                    self._reads.pop(key, None)
                    return chain(head, cells, store.rollup(tz, read, edge, end))
                past = self._reads[key] = _Past(split, generation, head)
            self._reads.move_to_end(key)
            while len(self._reads) > CACHED_READS:
                self._reads.popitem(last=False)
            return chain(past.cells, store.rollup(tz, read, past.split * QUARTER_S, end))


def build_hub_report(
    store: Store,
    *,
    by: Sequence[str],
    tz: tzinfo,
    since: date | None = None,
    until: date | None = None,
    cache: tuple[ReportCache, int] | None = None,
    lazy_rows: bool = False,
) -> dict[str, Any]:
    """Every stored call from day `since` to day `until` (inclusive, in `tz`), grouped by `by`
    (any `pricing.rollup.GROUP_KEYS` name; an unknown one raises `UnknownGroupKeyError`).
    `cache`: the writing process's and the generation of `store`'s state, to read past days'
    sums once (see `ReportCache`). `lazy_rows`: `rows` is an iterator that makes each row's
    dict as it is asked for (an encoder's pieces), not a list of them all."""
    rollup = Rollup(tuple(by), tz)
    keys = [CELL_KEYS[k][1] for k in rollup.by]
    # and the model always: unknown-price calls are counted by model
    read = {CELL_KEYS[k][0] for k in rollup.by} | {"model"}
    billing = store.billing()
    unknown_models: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    start = _day_start(since, tz) if since is not None else None
    end = _day_start(until + timedelta(days=1), tz) if until not in (None, date.max) else None
    with localcontext(MONEY):
        cells = (
            store.rollup(tz, sorted(read), start, end)
            if cache is None
            else cache[0].cells(store, cache[1], tz, sorted(read), start, end)
        )
        for cell in cells:
            if cell.retracted:
                skipped[RETRACTED] += cell.retracted
            if not cell.calls:
                continue
            cls = cost_class(
                cell.priced, cell.estimated, billing_of(billing, cell.machine, cell.profile)
            )
            if not cell.priced:
                unknown_models[cell.model or ""] += cell.calls
            priced = PricedCall(cell.amount if cell.priced else None, cls, None, cell.estimated)
            row_key = tuple(key(cell) for key in keys)
            rollup.add_calls(row_key, cell.calls, cell.tokens, priced)
            if cls is CostClass.SUBSCRIPTION_INCLUDED and (cell.overage or cell.untold):
                rollup.rows[row_key].move(cell.overage, cell.untold, estimated=cell.estimated)
    rows = (row.to_json() for row in rollup.sorted_rows())
    return {
        "group_by": list(rollup.by),
        "rows": rows if lazy_rows else list(rows),
        "total": rollup.total.to_json(),
        "skipped": dict(sorted(skipped.items())),
        "unknown_models": dict(sorted(unknown_models.items())),
    }


def _day_start(day: date, tz: tzinfo) -> float:
    # fold=0 gives the day's first instant even where a DST change skips or repeats midnight.
    try:
        return datetime.combine(day, datetime.min.time(), tz).timestamp()
    except (OverflowError, ValueError):  # a day at the calendar's edge: before or after any call
        return 0.0 if day.year < 1970 else LAST_TIME
