"""A large made-up fleet fed straight into a real `FleetService` (store on disk, ledger, board):
for the dashboard's tests and the TUI benchmark, where hundreds of node processes would be
too slow. Events are real `UsageEvent`s with real model names, so they are priced for real.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from hub.service import FleetService
from hub.store import Store
from pricing import PriceBook
from shared.config import Billing
from shared.events import (
    Agent,
    LimitEvent,
    LimitKind,
    LimitWindow,
    ProfileEvent,
    ProfileState,
    Role,
    Tokens,
    UsageEvent,
)
from shared.hello import NodeHello, ProcessInfo, ProfileInfo

MODELS = {Agent.CLAUDE_CODE: "claude-sonnet-4-5-20250929", Agent.CODEX: "gpt-5-codex"}


@dataclass
class SyntheticFleet:
    service: FleetService
    machines: list[str]
    profiles: dict[str, list[ProfileInfo]]  # machine -> its profiles
    sessions: dict[str, list[tuple[str, ProfileInfo]]]  # machine -> (session id, profile)
    rng: random.Random
    seq: dict[str, int] = field(default_factory=dict)
    counter: int = 0

    def hello(self, machine: str, paused: frozenset[str] = frozenset()) -> NodeHello:
        procs = tuple(
            ProcessInfo(
                pid=10_000 + i,
                create_time=1_700_000_000.0 + i,
                agent=p.agent,
                state="paused" if sid in paused else "running",
                profile=p.name,
                session_id=sid,
                cwd=f"/work/{machine}/proj{i % 7}",
            )
            for i, (sid, p) in enumerate(self.sessions[machine])
        )
        return NodeHello(
            machine, "test", time.time() - 3600, "linux", 8, tuple(self.profiles[machine]), procs
        )

    def usage(self, machine: str, session: str, profile: ProfileInfo, ts: float) -> UsageEvent:
        self.counter += 1
        r = self.rng
        sub = r.random() < 0.2
        return UsageEvent(
            event_id=f"syn-{self.counter}",
            ts=ts,
            agent=profile.agent,
            model=MODELS[profile.agent],
            tokens=Tokens(
                input=r.randint(10, 3000),
                output=r.randint(50, 2000),
                cache_read=r.randint(0, 80_000),
                cache_write_5m=r.randint(0, 8000),
                cache_write_1h=r.randint(0, 2000) if profile.agent is Agent.CLAUDE_CODE else 0,
            ),
            session_id=f"{session}-sub" if sub else session,
            role=Role.SUBAGENT if sub else Role.MAIN,
            parent_session_id=session if sub else None,
            project=f"/work/{machine}/proj{hash(session) % 7}",
            git_branch="main",
            machine=machine,
            profile=profile.name,
            # as Claude Code logs it: interactive, but for a tenth of calls that do not say (an
            # older Claude Code), which a subscription's Agent SDK credit counts as estimated
            entrypoint=(
                "cli" if profile.agent is Agent.CLAUDE_CODE and self.counter % 10 else None
            ),
        )

    def send(self, machine: str, events: list[UsageEvent | LimitEvent | ProfileEvent]) -> None:
        seq = self.seq.get(machine, 0)
        self.seq[machine] = seq + 1
        self.service.ingest(machine, "s1", seq + 1, seq + 1, list(events), self.hello(machine))

    def second_of_updates(self, calls: int, now: float | None = None) -> int:
        """One second of fleet traffic: `calls` calls spread over random sessions, one batch
        per machine that has any (as nodes send them). Returns the calls sent."""
        now = now or time.time()
        batches: dict[str, list[UsageEvent | LimitEvent | ProfileEvent]] = {}
        for _ in range(calls):
            machine = self.rng.choice(self.machines)
            session, profile = self.rng.choice(self.sessions[machine])
            batches.setdefault(machine, []).append(self.usage(machine, session, profile, now))
        for machine, events in batches.items():
            self.send(machine, events)
        return calls

    def limit(self, machine: str, profile: str, resets_in: float, now: float | None = None) -> None:
        now = now or time.time()
        self.counter += 1
        events: list[UsageEvent | LimitEvent | ProfileEvent] = [
            LimitEvent(
                f"lim-{self.counter}",
                now,
                Agent.CLAUDE_CODE,
                LimitKind.RATE_LIMIT_HIT,
                LimitWindow.FIVE_HOUR,
                resets_at=now + resets_in,
                message="5-hour limit reached",
                machine=machine,
                profile=profile,
            ),
            ProfileEvent(
                f"pe-{self.counter}",
                now,
                machine,
                profile,
                Agent.CLAUDE_CODE,
                ProfileState.RATE_LIMITED,
                until=now + resets_in,
                reason="5h window",
            ),
        ]
        self.send(machine, events)


def build(
    data_dir: Path,
    *,
    machines: int,
    profiles_per_machine: int,
    sessions_per_machine: int,
    seed: int = 7,
    book: PriceBook | None = None,
    history_calls: int = 0,
) -> SyntheticFleet:
    """A FleetService over a fresh store in `data_dir`, every machine announced with its
    profiles and agent processes, and `history_calls` calls spread over the last hour."""
    service = FleetService(Store.in_dir(data_dir), book or PriceBook.default(), stale_after=30.0)
    rng = random.Random(seed)
    names = [f"spark{i:03d}" for i in range(1, machines + 1)]
    profiles: dict[str, list[ProfileInfo]] = {}
    sessions: dict[str, list[tuple[str, ProfileInfo]]] = {}
    for m in names:
        profiles[m] = [
            ProfileInfo(
                f"p{j:02d}",
                Agent.CLAUDE_CODE if j % 3 else Agent.CODEX,
                Billing.SUBSCRIPTION if j % 2 else Billing.API,
                account=f"acct{j % 5}@example.com",
                plan="max_20x" if j % 2 else None,
            )
            for j in range(profiles_per_machine)
        ]
        sessions[m] = [
            (f"{m}-s{k:04d}", profiles[m][k % profiles_per_machine])
            for k in range(sessions_per_machine)
        ]
    fleet = SyntheticFleet(service, names, profiles, sessions, rng)
    now = time.time()
    for m in names:
        # Announce every machine before any call: a new subscription profile makes the ledger
        # rebuild from the store, which is cheap while the store is still empty.
        service.ingest(m, "s1", 1, 0, [], fleet.hello(m))
    for m in names:
        events: list[UsageEvent | LimitEvent | ProfileEvent] = [
            fleet.usage(m, sid, p, now - rng.uniform(0, 3600)) for sid, p in sessions[m]
        ]
        fleet.send(m, events)
    for _ in range(history_calls // 1000):
        fleet.second_of_updates(1000, now - rng.uniform(0, 3600))
    # The subscription profiles made the figures reload on a thread; until it ends readers see
    # the figures from before the calls (a loaded CI machine showed it: no session row).
    if not service.wait_settled(timeout=60):
        raise RuntimeError("the synthetic fleet's figures did not settle within 60 s")
    return fleet
