"""Where a call falls in a budget's period: calendar periods cut in the budget's zone (a week
starts on Monday), a rolling window kept as 60 slots, a session, or a provider's quota window.

Each period is a *bucket* (text): the period's start (epoch seconds) for calendar periods, the
slot number for a rolling window, the session key for a session, the reset time for a quota
window. A bucket is part of every state key, so a new period is a new row, never a reset.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

from hub.budgets.model import Budget, PeriodKind

ROLLING_SLOTS: Final = 60  # a rolling window is summed over this many slots
QUOTA_WINDOW_S: Final = {"5h": 5 * 3600, "weekly": 7 * 86400}


def calendar_bounds(kind: PeriodKind, zone: ZoneInfo, ts: float) -> tuple[float, float]:
    """The [start, end) of the hour, day, week (from Monday) or month holding `ts`, in `zone`."""
    local = datetime.fromtimestamp(ts, zone)
    if kind is PeriodKind.HOUR:
        start = local.replace(minute=0, second=0, microsecond=0)
        # an hour is 3600 s in any zone (a 30-minute DST shift is rare enough to ignore)
        return start.timestamp(), start.timestamp() + 3600.0
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if kind is PeriodKind.DAY:
        first, after = day, day + timedelta(days=1)
    elif kind is PeriodKind.WEEK:
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(days=7)
    elif kind is PeriodKind.MONTH:
        first = day.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"{kind} is not a calendar period")
    # wall-clock midnights made aware in the zone: a DST day is 23 or 25 hours long
    return first.replace(tzinfo=zone).timestamp(), after.replace(tzinfo=zone).timestamp()


def slot_seconds(budget: Budget) -> float:
    return budget.period.seconds / ROLLING_SLOTS


def bucket_at(budget: Budget, ts: float) -> str:
    """The bucket of a call at `ts` (calendar and rolling periods)."""
    kind = budget.period.kind
    if kind is PeriodKind.ROLLING:
        return str(int(ts // slot_seconds(budget)))
    start, _ = calendar_bounds(kind, budget.zone, ts)
    return str(int(start))


def window_slots(budget: Budget, now: float) -> tuple[int, int]:
    """The slots a rolling window sums at `now`: first and last, inclusive."""
    slot = slot_seconds(budget)
    last = int(now // slot)
    return last - ROLLING_SLOTS + 1, last


def bounds(budget: Budget, bucket: str, now: float) -> tuple[float | None, float | None]:
    """The [start, end) of a bucket, where it has one (None for a session)."""
    kind = budget.period.kind
    if kind in (PeriodKind.HOUR, PeriodKind.DAY, PeriodKind.WEEK, PeriodKind.MONTH):
        return calendar_bounds(kind, budget.zone, float(bucket))
    if kind is PeriodKind.ROLLING:
        return now - budget.period.seconds, now
    if kind is PeriodKind.WINDOW:
        end = float(bucket)
        return end - QUOTA_WINDOW_S[budget.period.window], end
    return None, None


def quota_bucket(window: str, ts: float, resets_at: float | None) -> str:
    """A quota reading's window: its reset time, or (when the agent did not log one) the
    window of that length holding `ts`."""
    if resets_at is not None:
        return str(int(resets_at))
    length = QUOTA_WINDOW_S[window]
    return str(int((ts // length + 1) * length))
