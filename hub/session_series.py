"""A session's API-equivalent spend over its life, in equal bins, on pruned days too.

Raw events older than `retain_days` are pruned; the quarter-hour roll-ups are kept for good.
So the series reads the roll-up cells of the session up to the first whole quarter after the
prune line (a cell holds all its quarter's calls, pruned or not) and the kept events from there
on: each call is counted once, and the part from the roll-ups is known to the quarter-hour.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from decimal import Decimal
from typing import NamedTuple

from hub._rollup import QUARTER_S
from hub._totals import ZERO


class SessionSeries(NamedTuple):
    first_call: float  # 0.0 when the session has no calls
    last_call: float
    bins: list[Decimal]
    # calls before this time come from the quarter-hour roll-ups (their events were pruned);
    # None when every call is from its event
    rolled_up_before: float | None = None


def roll_up_line(pruned_before: float) -> float | None:
    """Where the series switches from roll-ups to events: the first quarter-hour boundary at
    or after `pruned_before`; None when nothing was pruned."""
    if not math.isfinite(pruned_before):
        return None
    return math.ceil(pruned_before / QUARTER_S) * QUARTER_S


class Cell(NamedTuple):
    first_ts: float  # its first and last calls' own times (kept by the roll-up)
    last_ts: float
    amount: Decimal  # API-equivalent


def rolled_up_cells(db: sqlite3.Connection, session: str, before: float) -> list[Cell]:
    """The roll-up cells of the quarters before `before` of the calls logged under session id
    `session` (the calls `Store.session_usage` reads: a Claude subagent's too). Read on the
    store's connection (its owner serialises calls); a scan of the cells, for one detail view."""
    rows = db.execute(
        "SELECT first_ts, last_ts, amount FROM rollup "
        "WHERE session_id = ? AND quarter < ? AND calls > 0",
        (session, int(before // QUARTER_S)),
    )
    return [Cell(first, last, Decimal(amount)) for first, last, amount in rows]


def spend_series(
    cells: list[Cell],
    calls: Iterable[tuple[float, Decimal]],
    bins: int,
    rolled_up_before: float | None,
) -> SessionSeries:
    """The roll-up `cells` (each counted at its calls' mid time) and the kept `calls` (time,
    amount) in `bins` equal bins from the session's first call to its last."""
    timed = [((c.first_ts + c.last_ts) / 2, c.amount) for c in cells]
    timed += calls
    if not timed:
        return SessionSeries(0.0, 0.0, [ZERO] * bins)
    first = min([c.first_ts for c in cells] + [ts for ts, _ in timed])
    last = max([c.last_ts for c in cells] + [ts for ts, _ in timed])
    span = max(last - first, 1.0)
    out = [ZERO] * bins
    for ts, amount in timed:
        out[min(bins - 1, int((ts - first) / span * bins))] += amount
    return SessionSeries(first, last, out, rolled_up_before if cells else None)
