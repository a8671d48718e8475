"""A small running total per session, kept by the node from every usage event it reads, so
that an agent's own gates (hooks, status line, MCP) are answered from memory.

Revisions: the latest revision of a call replaces what its earlier one added (a retraction,
`duplicate_of` set, takes it out). Money is exact: calls with no known price are counted
apart (`unpriced`) and never add zero to the spend.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from pricing import Billing, PriceBook
from shared.events import (
    Event,
    LimitEvent,
    LimitKind,
    ProfileEvent,
    ProfileState,
    Role,
    Tokens,
    UsageEvent,
)
from shared.session_rates import RUN_RATE_WINDOW, cache_read_ratio, run_rate_per_hour

MAX_SESSIONS: Final = 2000  # the least recently active are dropped past this
ZERO: Final = Decimal(0)


@dataclass(frozen=True, slots=True)
class _Call:
    revision: int
    ts: float
    tokens: Tokens
    cost: Decimal | None
    cost_class: str
    role: Role
    model: str


@dataclass(slots=True)
class SessionUsage:
    session: str
    agent: str
    profile: str | None = None
    project: str | None = None
    first: float = 0.0
    last: float = 0.0
    calls: dict[str, _Call] = field(default_factory=dict)
    models: set[str] = field(default_factory=set)  # every model it called (model budgets)

    def summary(self, now: float) -> dict[str, Any]:
        by_class: dict[str, Decimal] = {}
        by_role: dict[str, Decimal] = {}
        tokens = Tokens()
        unpriced = 0
        models: dict[str, int] = {}
        by_model: dict[str, Decimal] = {}
        recent = ZERO
        for call in self.calls.values():
            tokens = tokens + call.tokens
            models[call.model] = models.get(call.model, 0) + 1
            if call.cost is None:
                unpriced += 1
                continue
            by_model[call.model] = by_model.get(call.model, ZERO) + call.cost
            by_class[call.cost_class] = by_class.get(call.cost_class, ZERO) + call.cost
            by_role[call.role.value] = by_role.get(call.role.value, ZERO) + call.cost
            if call.ts >= now - RUN_RATE_WINDOW:
                recent += call.cost
        spend = sum(by_class.values(), ZERO)
        return {
            "session": self.session,
            "agent": self.agent,
            "profile": self.profile,
            "project": self.project,
            "first": self.first,
            "last": self.last,
            "calls": len(self.calls),
            "unpriced_calls": unpriced,
            "spend": str(spend),
            "spend_known": unpriced == 0,
            "spend_by_class": {k: str(v) for k, v in sorted(by_class.items())},
            "spend_by_role": {k: str(v) for k, v in sorted(by_role.items())},
            "tokens": {
                "input": tokens.input,
                "output": tokens.output,
                "cache_read": tokens.cache_read,
                "cache_write_5m": tokens.cache_write_5m,
                "cache_write_1h": tokens.cache_write_1h,
                "reasoning": tokens.reasoning,
            },
            "cache_read_ratio": cache_read_ratio(tokens),
            "run_rate_per_hour": str(run_rate_per_hour(recent, self.first, now)),
            "models": models,
            "spend_by_model": {k: str(v) for k, v in sorted(by_model.items())},
            **_shape(sorted(self.calls.values(), key=lambda c: c.ts)),
        }


def _shape(calls: list[_Call]) -> dict[str, Any]:
    """What `explain_spend` reasons from: how the context grew (mean prompt of the first and
    the last five calls) and likely repeats (a call with the same prompt and output counts as
    the one before it within a minute: a retry of the same request)."""
    if not calls:
        return {"prompt_first": None, "prompt_last": None, "repeats": 0}
    head, tail = calls[:5], calls[-5:]
    repeats = sum(
        1
        for a, b in zip(calls, calls[1:], strict=False)
        if b.ts - a.ts < 60 and a.tokens == b.tokens and a.model == b.model
    )
    return {
        "prompt_first": sum(c.tokens.prompt for c in head) // len(head),
        "prompt_last": sum(c.tokens.prompt for c in tail) // len(tail),
        "repeats": repeats,
    }


@dataclass(frozen=True, slots=True)
class QuotaReading:
    window: str
    used_percent: float | None
    resets_at: float | None
    ts: float
    profile: str | None
    agent: str


class SessionTally:
    """Thread-safe: the ingest thread adds, the query service reads."""

    def __init__(self, book: PriceBook, billing: Mapping[str, Billing]) -> None:
        self._book = book
        self._billing = billing  # profile name -> how it pays
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, SessionUsage] = OrderedDict()
        self._quota: dict[tuple[str, str], QuotaReading] = {}  # (profile or agent, window)
        self._standing: dict[str, ProfileEvent] = {}  # profile -> its latest timeline event

    def use_prices(self, book: PriceBook) -> None:
        """Price the calls added from now on with `book` (tables installed meanwhile)."""
        with self._lock:
            self._book = book

    def add(self, events: Iterable[Event]) -> None:
        with self._lock:
            for event in events:
                if isinstance(event, UsageEvent):
                    self._add_usage(event)
                elif isinstance(event, LimitEvent) and event.kind is LimitKind.QUOTA_SNAPSHOT:
                    self._add_quota(event)
                elif isinstance(event, ProfileEvent):
                    known = self._standing.get(event.profile)
                    if known is None or known.ts <= event.ts:
                        self._standing[event.profile] = event

    def _add_usage(self, event: UsageEvent) -> None:
        usage = self._sessions.get(event.session_id)
        if usage is None:
            usage = SessionUsage(event.session_id, event.agent.value, first=event.ts)
            self._sessions[event.session_id] = usage
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(event.session_id)
        old = usage.calls.get(event.event_id)
        if old is not None and old.revision >= event.revision:
            return
        if not event.counts:
            usage.calls.pop(event.event_id, None)
            return
        billing = self._billing.get(event.profile or "", Billing.API)
        priced = self._book.price(event, billing)
        usage.calls[event.event_id] = _Call(
            event.revision,
            event.ts,
            event.tokens,
            priced.api_equivalent,
            priced.cost_class.value,
            event.role,
            event.model,
        )
        usage.models.add(event.model)
        usage.profile = event.profile or usage.profile
        usage.project = event.project or usage.project
        usage.first = min(usage.first, event.ts)
        usage.last = max(usage.last, event.ts)

    def _add_quota(self, event: LimitEvent) -> None:
        owner = event.profile or event.agent.value
        key = (owner, event.window.value)
        known = self._quota.get(key)
        if known is None or known.ts <= event.ts:
            self._quota[key] = QuotaReading(
                event.window.value,
                event.used_percent,
                event.resets_at,
                event.ts,
                event.profile,
                event.agent.value,
            )

    def session(self, session: str, now: float) -> dict[str, Any] | None:
        with self._lock:
            usage = self._sessions.get(session)
            return usage.summary(now) if usage is not None else None

    def owner(self, session: str) -> tuple[str | None, str, str | None] | None:
        """The session's profile, agent and project, when the node has read a call of it."""
        with self._lock:
            usage = self._sessions.get(session)
            return None if usage is None else (usage.profile, usage.agent, usage.project)

    def models(self, session: str) -> frozenset[str]:
        with self._lock:
            usage = self._sessions.get(session)
            return frozenset() if usage is None else frozenset(usage.models)

    def latest_in(self, project: str) -> str | None:
        """The most recently active session whose working directory is `project`."""
        with self._lock:
            for usage in reversed(self._sessions.values()):
                if usage.project == project:
                    return usage.session
        return None

    def quota(self, profile: str | None, agent: str | None) -> list[dict[str, Any]]:
        owners = {o for o in (profile, agent) if o}
        with self._lock:
            readings = [r for (owner, _), r in self._quota.items() if owner in owners]
            standing = self._standing.get(profile) if profile else None
        limited = standing is not None and standing.state is ProfileState.RATE_LIMITED
        heard = (
            []
            if standing is None
            else [
                {
                    # The status file's (or a limit hit's) word on the profile: rate-limited until.
                    "window": "limit" if limited else "profile",
                    "used_percent": 100.0 if limited else None,
                    "resets_at": standing.until if limited else None,
                    "read_at": standing.ts,
                    "profile": standing.profile,
                    "state": standing.state.value,
                    "reason": standing.reason,
                }
            ]
        )
        return heard + [
            {
                "window": r.window,
                "used_percent": r.used_percent,
                "resets_at": r.resets_at,
                "read_at": r.ts,
                "profile": r.profile,
            }
            for r in sorted(readings, key=lambda r: r.window)
        ]
