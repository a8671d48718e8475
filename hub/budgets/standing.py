"""Where a budget stands now: the read model of the dashboard's Budgets tab, the API and
`fleet-hub budget list` (spent / limit, forecast, state, last action, overshoot)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hub.budgets import records
from hub.budgets.evaluation import ZERO
from hub.budgets.model import CALENDAR, Budget, PeriodKind
from hub.budgets.periods import bounds, bucket_at, window_slots
from hub.budgets.records import PASSED, Mark, Override


@dataclass(frozen=True, slots=True)
class BudgetStanding:
    budget: Budget
    bucket: str | None  # the period shown (for a session budget: its costliest live session)
    start: float | None
    end: float | None
    spent: Decimal
    limit: Decimal | None  # in force: an override's, None when lifted
    percent: Decimal | None
    state: str  # ok | warning | breached | stopped | unverified | lifted
    unverified: str | None  # why the spend cannot be verified, when it cannot
    forecast_at: float | None  # when the run rate reaches the limit, if it does this period
    last_action: str | None
    last_action_at: float | None
    overshoot: Decimal | None  # of the latest hard stop: spend at quiescence minus the limit
    override: Override | None

    def to_json(self) -> dict[str, Any]:
        b = self.budget
        return {
            **b.to_table(),
            "bucket": self.bucket,
            "start": self.start,
            "end": self.end,
            "spent": str(self.spent),
            "limit_in_force": None if self.limit is None else str(self.limit),
            "percent": None if self.percent is None else str(self.percent),
            "state": self.state,
            "hard": b.hard,
            "unverified": self.unverified,
            "forecast_at": self.forecast_at,
            "last_action": self.last_action,
            "last_action_at": self.last_action_at,
            "overshoot": None if self.overshoot is None else str(self.overshoot),
            "override": None
            if self.override is None
            else {
                "limit": None if self.override.limit is None else str(self.override.limit),
                "until": self.override.until,
                "who": self.override.who,
                "why": self.override.why,
            },
        }


def _current(db: sqlite3.Connection, budget: Budget, now: float) -> tuple[str | None, Decimal, int]:
    kind = budget.period.kind
    if kind is PeriodKind.ROLLING:
        low, high = window_slots(budget, now)
        spent, unknown = records.spend_between(db, budget.name, low, high)
        return records.episode(db, budget.name) or str(high), spent, unknown
    if kind in CALENDAR:
        bucket = bucket_at(budget, now)
        spent, unknown = records.spend(db, budget.name, bucket)
        return bucket, spent, unknown
    rows = list(records.buckets(db, budget.name))
    if kind is PeriodKind.WINDOW:
        rows = [r for r in rows if float(r[0]) > now]
    if not rows:
        return None, ZERO, 0
    bucket, spent, unknown, _ = max(rows, key=lambda r: (r[1], r[3]))
    return bucket, spent, unknown


def standing_of(
    db: sqlite3.Connection,
    budget: Budget,
    now: float,
    rate_per_s: Decimal,
    quiet: list[str],
    bucket: str | None = None,
) -> BudgetStanding:
    """`bucket`: the period to show (one session of a session budget); default the current."""
    if bucket is None:
        bucket, spent, unknown = _current(db, budget, now)
    else:
        spent, unknown = records.spend(db, budget.name, bucket)
    override = records.active_overrides(db, now).get(budget.name)
    limit = budget.limit if override is None else override.limit
    start, end = bounds(budget, bucket, now) if bucket is not None else (None, None)
    marks: list[Mark] = records.marks(db, budget.name, bucket=bucket) if bucket else []
    percent = None if limit is None else (spent * 100 / limit).quantize(Decimal("0.1"))
    why = []
    if unknown:
        why.append(f"{unknown} call{'s' * (unknown != 1)} of unknown price")
    why += [f"{node} has gone quiet" for node in quiet]
    stops = [m for m in marks if m.action in ("pause", "kill") and m.state == "done"]
    if limit is None:
        state = "lifted"
    elif stops and stops[-1].limit == limit and stops[-1].resumed_at is None:
        state = "stopped"  # (the reasons it may be unverified too stay in `unverified`)
    elif why:
        state = "unverified"
    elif spent >= limit:
        state = "breached"
    elif any(spent >= limit * p / 100 for p in budget.thresholds if p < 100):
        state = "warning"
    else:
        state = "ok"
    forecast_at = None
    if limit is not None and rate_per_s > 0 and spent < limit:
        at = now + float((limit - spent) / rate_per_s)
        if end is None or at < end:
            forecast_at = at
    acted = [
        m
        for m in records.marks(db, budget.name)
        if m.state == "done" and m.outcome and not m.outcome.startswith(PASSED)
    ]
    # the latest; a stop before an alert of the same evaluation (a forecast noted with the
    # crossing that stopped the work is not what the budget did)
    last = max(reversed(acted), key=_weight) if acted else None
    last_action, last_at = _last_action(db, last) if last is not None else (None, None)
    hard = [m for m in records.marks(db, budget.name) if m.action in ("pause", "kill")]
    overshoot = None
    if hard and hard[-1].spent_after is not None:
        overshoot = hard[-1].spent_after - hard[-1].limit
    return BudgetStanding(
        budget,
        bucket,
        start,
        end,
        spent,
        limit,
        percent,
        state,
        "; ".join(why) or None,
        forecast_at,
        last_action,
        last_at,
        overshoot,
        override,
    )


def stop_summary(action: str, outcomes: Mapping[str, int]) -> str:
    """ "paused 3 agents, 1 already paused", or "no agent to pause in scope"."""
    if not outcomes:
        return f"no agent to {action} in scope"
    rest = dict(outcomes)
    verb = "paused" if action == "pause" else "killed"
    done = rest.pop(verb, 0)
    words = [f"{verb} {done} agent{'s' * (done != 1)}"]
    words += [f"{n} {what}" for what, n in sorted(rest.items())]
    return ", ".join(words)


def _last_action(db: sqlite3.Connection, mark: Mark) -> tuple[str, float]:
    """What the budget last did and when. A hard mark's stops speak for it, those of its
    first action and any later (an agent its node had not reported yet at the crossing, one
    that joined the stopped scope): each stop is noted as it is made, so this reads right
    after a kill -9 too."""
    hard = mark.action in ("pause", "kill")
    stops = records.stops_since(db, mark.budget, mark.bucket, mark.action, mark.at) if hard else []
    # stops not confirmed yet, to be tried again (`records.Retry`)
    retries = records.retries(db, mark.budget, mark.bucket, mark.action) if hard else {}
    if not stops and not retries:
        return f"{_label(mark)}: {mark.outcome}", mark.at
    counts = Counter(outcome for outcome, _ in stops)
    counts.update(f"retrying after {r.outcome}" for r in retries.values())
    times = [at for _, at in stops] + [r.first_at for r in retries.values()]
    return f"{_label(mark)}: {stop_summary(mark.action, counts)}", max(times)


def _weight(mark: Mark) -> tuple[float, bool]:
    return mark.at, mark.action in ("pause", "kill")


def _label(mark: Mark) -> str:
    """ "100 %", "forecast", "unverified", "unverified:spark02"."""
    return f"{mark.percent} %" if mark.percent is not None else mark.mark.partition("@")[0]
