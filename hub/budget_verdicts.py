"""The governor's standings as the verdicts a node's agents are gated by (issue 14).

For a node, every budget whose scope can contain its machine, one of its profiles or one of
its sessions: a budget scoped to another machine, to a profile the node does not run or to an
account none of its profiles bills is left out. The node matches the rest against each asking
session itself (`Verdict.applies_to`). An account part is written as the node's profiles of
that account (the node does not know accounts). A session budget is counted per session: one
verdict for each of the node's live or recent sessions that has spend in it.

Built on each ack from `Governor.standings()` (the same read model as the API and the
dashboard), so what the hook says is what `fleet-hub budget list` says.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal
from pathlib import Path
from typing import Final

from hub._sessions import SessionFigures
from hub.budgets.governor import Governor
from hub.budgets.model import Budget, PeriodKind, ScopeKind
from hub.budgets.standing import BudgetStanding, standing_of
from hub.service import FleetService
from hub.store import Store
from shared.verdicts import Verdict, VerdictAction, VerdictState

RECENT_SESSIONS_S: Final = 6 * 3600.0  # a session budget's verdicts: sessions active this recently
MAX_SESSIONS: Final = 32  # per node and session budget (the ack carries at most 64 verdicts)

STATES: Final = {
    "ok": VerdictState.OK,
    "lifted": VerdictState.OK,
    "warning": VerdictState.WARN,
    "breached": VerdictState.EXHAUSTED,
    "stopped": VerdictState.EXHAUSTED,
    "unverified": VerdictState.UNVERIFIED,
}


def override_hint(budget: Budget) -> str:
    return (
        f"an operator runs: fleet-hub budget override {shlex.quote(budget.name)} "
        "--limit AMOUNT --until +2h --why TEXT"
    )


def to_verdict(standing: BudgetStanding, scope: str) -> Verdict:
    """One standing as a verdict over `scope` (`kind:value[,kind:value]` or `fleet`)."""
    budget = standing.budget
    state = STATES.get(standing.state, VerdictState.UNVERIFIED)
    unverified = state is VerdictState.UNVERIFIED
    limit = standing.limit
    share = None
    if limit is not None and limit > 0 and not unverified:
        share = float(standing.spent / limit)
    return Verdict(
        budget=budget.name,
        scope=scope,
        period=budget.period.text,
        basis=budget.basis.value,
        spent=None if unverified else str(standing.spent),  # a partial sum is not the spend
        limit=None if limit is None else str(limit),
        share=share,
        state=state,
        action=VerdictAction(budget.action.value),
        override=override_hint(budget),
        forecast=standing.forecast_at,
    )


def within(scope: str, session: str) -> str:
    """`scope` narrowed to one session."""
    return f"session:{session}" if scope == "fleet" else f"{scope},session:{session}"


class NodeFacts:
    """What the hub knows of one node: its profiles (with their accounts) and sessions."""

    def __init__(self, service: FleetService, node: str, recent: list[SessionFigures]) -> None:
        """`recent`: the fleet's recently active sessions, newest first."""
        self.node = node
        self.accounts = {p.name: p.account for p in service.profiles() if p.node == node}
        live = [p.session_id for _, p in service.processes(node) if p.session_id]
        mine = [s.key for s in recent if s.machine == node]
        self.sessions = list(dict.fromkeys([*live, *mine]))[:MAX_SESSIONS]

    def scopes(self, budget: Budget) -> list[str]:
        """The budget's scope as the node can match it; none when it cannot contain the node."""
        fixed: list[str] = []
        accounts: str | None = None
        for kind, value in budget.scope.parts:
            if kind is ScopeKind.MACHINE and value != self.node:
                return []
            if kind is ScopeKind.PROFILE and value not in self.accounts:
                return []
            if kind is ScopeKind.ACCOUNT:
                accounts = value
            else:
                fixed.append(f"{kind.value}:{value}")
        if accounts is None:
            return [",".join(fixed) or "fleet"]
        billed = [name for name, account in self.accounts.items() if account == accounts]
        return [",".join([*fixed, f"profile:{name}"]) for name in sorted(billed)]


class BudgetVerdicts:
    """`FleetService.verdicts`: node name -> the verdicts concerning it."""

    def __init__(
        self,
        governor: Governor,
        service: FleetService,
        store_path: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._governor = governor
        self._service = service
        self._clock = clock
        self._reader = Store(store_path)  # a session budget's per-session spend
        self._lock = threading.Lock()

    def __call__(self, node: str) -> list[Verdict]:
        return self.for_nodes([node])

    def fleet(self) -> list[Verdict]:
        """Every budget's standing over its own scope (a session budget: its costliest session),
        for whoever sees the whole fleet."""
        return [
            to_verdict(s, ",".join(f"{k.value}:{v}" for k, v in s.budget.scope.parts) or "fleet")
            for s in self._governor.standings()
        ]

    def for_nodes(self, nodes: Iterable[str]) -> list[Verdict]:
        """The verdicts concerning any of `nodes` (the standings read once for all)."""
        standings = self._governor.standings()
        if not standings:
            return []
        now = self._clock()
        recent = sorted(
            self._service.active_sessions(now - RECENT_SESSIONS_S), key=lambda s: -s.last_ts
        )
        out: dict[tuple[str, str], Verdict] = {}
        for node in nodes:
            facts = NodeFacts(self._service, node, recent)
            for standing in standings:
                scopes = facts.scopes(standing.budget)
                if standing.budget.period.kind is PeriodKind.SESSION:
                    found = self._per_session(standing.budget, scopes, facts.sessions, now)
                else:
                    found = [to_verdict(standing, scope) for scope in scopes]
                out.update(((v.budget, v.scope), v) for v in found)
        return list(out.values())

    def _per_session(
        self, budget: Budget, scopes: list[str], sessions: Iterable[str], now: float
    ) -> list[Verdict]:
        out: list[Verdict] = []
        with self._lock:
            db = self._reader.reading()
            for session in sessions:
                standing = standing_of(db, budget, now, Decimal(0), [], bucket=session)
                if standing.spent == 0 and standing.state in ("ok", "lifted"):
                    continue  # nothing in it yet: the node needs no verdict to let it go on
                out += [to_verdict(standing, within(scope, session)) for scope in scopes]
        return out

    def close(self) -> None:
        with self._lock:
            self._reader.close()
