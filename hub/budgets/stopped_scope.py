"""Whether a budget's stop still stands: the rule that decides if an agent joining the scope
after the stop (reported by its node's hello, or logging a call) is stopped too.

A hard mark stands while it is the latest of its period, acted on, its limit is the one in
force (an override raised or lifted it: the person's word), its period is the current one (a
new period, or a rolling window with room again, ends it) and no person has resumed one of the
agents it paused (they took the scope over: newcomers are theirs too).
"""

from __future__ import annotations

import sqlite3

from hub._node_news import pause_target
from hub.budgets import records
from hub.budgets.model import CALENDAR, Budget, PeriodKind
from hub.budgets.periods import bucket_at
from hub.budgets.records import Mark

HARD_ACTIONS = ("pause", "kill")


def standing_stops(db: sqlite3.Connection, budget: Budget, now: float) -> list[Mark]:
    """The hard marks of `budget` whose stop stands at `now`: one per period at most (a
    session budget may have several sessions stopped)."""
    latest: dict[str, Mark] = {}
    for mark in records.marks(db, budget.name):
        if mark.action in HARD_ACTIONS:
            latest[mark.bucket] = mark  # oldest first: the last one of a bucket wins
    return [m for m in latest.values() if stands(db, budget, m, now)]


def stands(db: sqlite3.Connection, budget: Budget, mark: Mark, now: float) -> bool:
    """Whether `mark`'s stop still holds its scope at `now` (see the module's note)."""
    if mark.action not in HARD_ACTIONS or mark.state != "done" or mark.resumed_at is not None:
        return False
    override = records.active_overrides(db, now).get(budget.name)
    limit = budget.limit if override is None else override.limit
    if limit is None or mark.limit != limit:
        return False
    later = [
        m for m in records.marks(db, budget.name, bucket=mark.bucket) if m.action in HARD_ACTIONS
    ]
    if later and later[-1].mark != mark.mark:
        return False
    if not _current(db, budget, mark.bucket, now):
        return False
    return not resumed_by_person(db, budget.name, mark)


def _current(db: sqlite3.Connection, budget: Budget, bucket: str, now: float) -> bool:
    kind = budget.period.kind
    if kind in CALENDAR:
        return bucket == bucket_at(budget, now)
    if kind is PeriodKind.WINDOW:
        return float(bucket) > now
    if kind is PeriodKind.ROLLING:
        return records.episode(db, budget.name) == bucket
    return True  # a session's stop lasts as long as the session


def resumed_by_person(db: sqlite3.Connection, budget: str, mark: Mark) -> bool:
    """Whether someone other than the budget resumed an agent it paused under `mark`, after
    that pause (the audit log keeps every command with who sent it)."""
    paused = db.execute(
        "SELECT machine, pid, ctime, at FROM budget_stops WHERE budget = ? AND bucket = ? "
        "AND action = 'pause' AND outcome = 'paused'",
        (budget, mark.bucket),
    ).fetchall()
    if not paused:
        return False
    since = {pause_target(machine, pid, ctime): at for machine, pid, ctime, at in paused}
    # one pass over the resumes after the first pause (the audit log has no index on target)
    resumes = db.execute(
        "SELECT target, ts FROM audit WHERE action = 'resume' AND who != ? AND ts >= ? "
        "AND result LIKE 'resumed%'",
        (f"budget '{budget}'", min(since.values())),
    )
    return any(target in since and ts >= since[target] for target, ts in resumes)
