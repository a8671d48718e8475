"""Pure judgements: which calls and processes a budget's scope takes in, what a call counts on a
basis, and which marks a spend reaches. No I/O: the governor feeds them and acts."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Final

from hub._sessions import session_key
from hub.budgets.model import Basis, Budget, Scope, ScopeKind
from hub.model import Price
from pricing import Billing, CostClass, classify
from pricing.sdk_credit import Moved
from shared.events import LimitEvent, UsageEvent
from shared.hello import ProcessInfo

ZERO: Final = Decimal(0)
PAID: Final = (CostClass.METERED, CostClass.ESTIMATED)


def call_matches(scope: Scope, event: UsageEvent) -> bool:
    for kind, value in scope.parts:
        if kind is ScopeKind.MACHINE:
            got: str | None = event.machine
        elif kind is ScopeKind.PROFILE:
            got = event.profile
        elif kind is ScopeKind.ACCOUNT:
            got = event.account
        elif kind is ScopeKind.AGENT:
            got = event.agent.value
        elif kind is ScopeKind.PROJECT:
            got = event.project
        elif kind is ScopeKind.SESSION:
            got = session_key(event)  # a subagent's calls count toward its parent session
        else:
            got = event.model
        if got != value:
            return False
    return True


def reading_matches(scope: Scope, reading: LimitEvent) -> bool:
    values = {
        ScopeKind.MACHINE: reading.machine,
        ScopeKind.PROFILE: reading.profile,
        ScopeKind.ACCOUNT: reading.account,
        ScopeKind.AGENT: reading.agent.value,
    }
    return all(values.get(kind) == value for kind, value in scope.parts)


def counted(basis: Basis, price: Price, billing: Billing) -> Decimal | None:
    """What one call adds on `basis`: None when its price is unknown (the scope is then
    unverified, never silently allowed); zero for a subscription's call on the paid basis."""
    amount, estimated = price
    if amount is None:
        return None
    if basis is Basis.API:
        return amount
    return amount if classify(True, estimated, billing) in PAID else ZERO


def counted_move(basis: Basis, moved: Moved, billing: Billing) -> Decimal:
    """What the Agent SDK credit moving part of a subscription's call out of
    subscription_included (or back: negative) adds on `basis` (`pricing.sdk_credit`): its
    overage is metered and its untold part estimated, both paid; the API-equivalent basis and
    other billings count the whole call already."""
    if basis is Basis.API or billing is not Billing.SUBSCRIPTION:
        return ZERO
    return moved.overage + moved.untold


def p95(amounts: Collection[Decimal]) -> Decimal:
    """The 95th percentile (nearest rank) of recent call costs: one typical large call."""
    if not amounts:
        return ZERO
    ordered = sorted(amounts)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def limit_marks(
    budget: Budget, spent: Decimal, limit: Decimal, headroom: Decimal
) -> list[tuple[str, str]]:
    """(mark, action) of every threshold `spent` has reached against `limit`. A hard action
    fires once less than `headroom` (about one call) is left, so the stop lands near the limit
    rather than a call past it; warnings fire at the exact amount (a limit met exactly is
    100 %)."""
    out: list[tuple[str, str]] = []
    for pct in budget.thresholds:
        level = limit * pct / 100
        action = budget.action.value if pct == 100 else "alert"
        reached = spent >= level or (pct == 100 and budget.hard and spent + headroom >= level)
        if reached:
            out.append((f"{pct}@{limit}", action))
    return out


def forecast_due(
    budget: Budget, spent: Decimal, limit: Decimal, rate_per_s: Decimal
) -> float | None:
    """Seconds until the limit at the current run rate, when that is within the budget's
    forecast horizon (and the limit not reached yet); else None."""
    if budget.forecast_minutes <= 0 or rate_per_s <= 0 or spent >= limit:
        return None
    seconds = float((limit - spent) / rate_per_s)
    return seconds if seconds <= budget.forecast_minutes * 60 else None


def process_matches(
    scope: Scope,
    node: str,
    process: ProcessInfo,
    account_of: Callable[[str, str | None], str | None],
    sessions: Collection[tuple[str, str]],
) -> bool:
    """Whether an agent process is in the scope. Its machine, profile, account, agent, session
    and project (cwd) come from the node's inventory; a model scope takes the processes whose
    session spent in it (`sessions`: (machine, session id) pairs the scope's calls named)."""
    for kind, value in scope.parts:
        if kind is ScopeKind.MACHINE:
            ok = node == value
        elif kind is ScopeKind.PROFILE:
            ok = process.profile == value
        elif kind is ScopeKind.ACCOUNT:
            ok = account_of(node, process.profile) == value
        elif kind is ScopeKind.AGENT:
            ok = process.agent.value == value
        elif kind is ScopeKind.SESSION:
            ok = process.session_id == value
        elif kind is ScopeKind.PROJECT:
            ok = process.cwd == value or (node, process.session_id or "") in sessions
        else:
            ok = (node, process.session_id or "") in sessions
        if not ok:
            return False
    return True


class RunRate:
    """Dollars per second over the last `window` seconds of calls, kept as a running sum so
    that every batch reads it in constant time."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._calls: deque[tuple[float, Decimal]] = deque()
        self._total = ZERO

    def add(self, ts: float, amount: Decimal) -> None:
        self._calls.append((ts, amount))
        self._total += amount

    def per_second(self, now: float) -> Decimal:
        calls = self._calls
        while calls and calls[0][0] < now - self.window:
            self._total -= calls.popleft()[1]
        if not calls:
            return ZERO
        # over the part of the window the calls cover, at least a minute
        span = max(60.0, min(self.window, now - calls[0][0]))
        return self._total / Decimal(str(span))
