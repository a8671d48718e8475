"""Peer outlier: one machine, profile or account spending many times what comparable ones do.

Comparable: machines with machines, accounts with accounts, profiles with profiles of the same
agent kind. Each is measured by its API-equivalent spend per *active minute* (a minute with at
least one call) over the last hour, so a machine that started late or idled is not mistaken
for a cheap one. An entity is an outlier when, with ACTIVE_MIN active minutes of its own,

    its rate >= RATIO x the median rate of its peers (at least MIN_PEERS of them, each with
    ACTIVE_MIN active minutes in the hour), and its hour's spend >= FLOOR.

The group's median is computed at most once a minute (a pass over its members), and each
entity is checked against it at most once a minute, so the work per call stays constant
however many peers there are. The median is over the whole group (the entity too: with at
least MIN_PEERS others it hardly moves). One finding per happening: it ends when the entity
falls below RATIO / 2 of the median. (One account at ten times its peers is a leak, not a
power user.)
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from hub.detectors._base import MAX_SCOPES, Call, Recent, dollars, money
from hub.findings import Finding, Severity
from shared.events import Agent, UsageEvent

KIND: Final = "peer_outlier"
HOUR_S: Final = 3600
RATIO: Final = Decimal(10)
MIN_PEERS: Final = 4
ACTIVE_MIN: Final = 10
FLOOR: Final = Decimal(10)


@dataclass(slots=True)
class _Entity:
    minutes: deque[tuple[int, Decimal]] = field(default_factory=deque)  # (minute, spend)
    spent: Decimal = Decimal(0)  # the sum over `minutes`
    checked: int = -1  # the minute of the last check
    happening: bool = False

    def add(self, minute: int, cost: Decimal) -> None:
        if self.minutes and self.minutes[-1][0] == minute:
            self.minutes[-1] = (minute, self.minutes[-1][1] + cost)
        elif not self.minutes or minute > self.minutes[-1][0]:
            self.minutes.append((minute, cost))
        else:
            return  # a late call: the hour has moved on
        self.spent += cost

    def expire(self, now_minute: int) -> None:
        while self.minutes and self.minutes[0][0] <= now_minute - HOUR_S // 60:
            self.spent -= self.minutes.popleft()[1]

    def rate(self) -> Decimal | None:
        """Spend per active minute, None below ACTIVE_MIN active minutes."""
        if len(self.minutes) < ACTIVE_MIN:
            return None
        return self.spent / len(self.minutes)


@dataclass(slots=True)
class _Group:
    members: Recent[_Entity] = field(default_factory=lambda: Recent(_Entity, MAX_SCOPES))
    minute: int = -1  # when `median` was computed
    median: Decimal | None = None  # of the members' rates (None: fewer than MIN_PEERS + 1)
    rated: int = 0  # members with a rate

    def median_at(self, minute: int) -> Decimal | None:
        if minute != self.minute:
            self.minute = minute
            rates = []
            for _key, member in self.members.items():
                member.expire(minute)
                if (rate := member.rate()) is not None:
                    rates.append(rate)
            self.rated = len(rates)
            self.median = statistics.median(rates) if len(rates) > MIN_PEERS else None
        return self.median


class PeerOutlier:
    kind = KIND

    def __init__(self) -> None:
        self._groups: dict[str, _Group] = {}
        self._entities: dict[tuple[str, str | None, str | None, Agent], list[tuple[str, str]]]
        self._entities = {}

    def observe(self, call: Call) -> list[Finding]:
        if call.cost is None or call.cost <= 0:
            return []
        e = call.event
        where = (e.machine, e.account, e.profile, e.agent)
        entities = self._entities.get(where)
        if entities is None:  # made once per place, not per call: the hot path of ingest
            if len(self._entities) >= MAX_SCOPES:
                self._entities.clear()
            entities = self._entities[where] = _entities_of(e)
        minute = int(e.ts // 60)
        out = []
        for name, scope in entities:
            group = self._groups.get(name)
            if group is None:
                group = self._groups[name] = _Group()
            entity = group.members.get(scope)
            entity.add(minute, call.cost)
            if entity.checked != minute:
                entity.checked = minute
                finding = self._check(name, scope, entity, group, minute)
                if finding is not None:
                    out.append(finding)
        return out

    def _check(
        self, name: str, scope: str, entity: _Entity, group: _Group, minute: int
    ) -> Finding | None:
        entity.expire(minute)
        rate = entity.rate()
        median = group.median_at(minute)
        if rate is None or median is None or median <= 0:
            return None
        peers = group.rated - 1
        if entity.happening:
            entity.happening = rate >= median * RATIO / 2
            return None
        if rate < median * RATIO or entity.spent < FLOOR:
            return None
        entity.happening = True
        times = (rate / median).quantize(Decimal("0.1"))
        return Finding(
            id=f"{KIND}:{scope}:{minute * 60}",
            kind=KIND,
            scope=scope,
            severity=Severity.WARNING,
            start=float(entity.minutes[0][0] * 60),
            text=(
                f"{scope.replace(',', ' ')} spends {times}x the median of its group "
                f"({name}, {peers} others): {dollars(rate)} per active minute against "
                f"{dollars(median)}, {dollars(entity.spent)} in the last hour"
            ),
            evidence={
                "rate_usd_per_active_minute": money(rate),
                "group_median_usd_per_active_minute": money(median),
                "peers": str(peers),
                "hour_spend_usd": money(entity.spent),
                "ratio": str(times),
            },
        )


def _entities_of(e: UsageEvent) -> list[tuple[str, str]]:
    """(group, scope) of each entity a call of `e`'s place counts for."""
    entities = [("machines", f"machine={e.machine}")]
    if e.account is not None:
        entities.append(("accounts", f"account={e.account}"))
    if e.profile is not None:
        entities.append(
            (f"profiles of {e.agent.value}", f"machine={e.machine},profile={e.profile}")
        )
    return entities
