"""A fleet's week as a stream of usage events, with anomalies injected: the detectors' test bed.

`simulate(machines, days, seed, injections_per_kind)` returns every call of a simulated fleet
in time order (real `UsageEvent`s with real model names, so they price for real) and the list
of what was injected, where and when (`Injection`), so a bench can score recall and time to
detect, and the same fleet without injections can count false alerts.

The normal fleet (what a clean run holds):
- Each machine runs 1-3 agent slots. 70 % of machines work office hours (a start between 06
  and 10 UTC, 8-10 hours, weekends at 30 %); 30 % run agents around the clock.
- A slot runs sessions back to back (20-150 calls, 1-20 minutes apart), a call every 3-180 s
  (log-normal, median 30 s).
- Claude Code sessions (Sonnet; a subscription profile writing the 1-hour cache tier, an API
  profile the 5-minute tier): a growing cached context as the fake agent writes it (reads of
  the whole prefix, writes of the last turn, an occasional large file read, a compaction near
  160k), tool uses named by signature (a call repeats the previous one at most once, 5 % of
  calls: re-running a flaky test), a subagent (Haiku, 1-6 calls) for 8 % of calls.
- Codex sessions (gpt-5-codex): uncached input, a growing cached context, reasoning, no tool
  signatures (the node does not read Codex's tool calls).

Injected (each its own session on a random machine, from the second day on, when the machine's
figures have a day of history):
- `runaway`: a call every 2-5 s on a 100-150k context with large writes: ~20x a session's
  normal pace of spend, for 30 minutes.
- `cache_thrash`: every call writes 60-180k tokens to the cache (half at the 1-hour tier, half
  at the 5-minute tier) and reads none back, at a normal pace.
- `retry_loop`: the same tool call again and again every 4-10 s (Claude: the same signature;
  Codex, a third of them: similar small calls, no signature).
- `model_swap`: Sonnet, then mid-session Opus 4.1 (5x the input price).
- `context_climb`: the prompt grows by 12-25k tokens a call.
- `fanout`: 2-3 new subagents every call, a call every 10-30 s.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from shared.events import Agent, Role, Tokens, UsageEvent

START: Final = datetime(2026, 11, 2, tzinfo=UTC).timestamp()  # a Monday
DAY: Final = 86400.0
SONNET: Final = "claude-sonnet-4-5-20250929"
OPUS_41: Final = "claude-opus-4-1-20250805"
HAIKU: Final = "claude-haiku-4-5-20251001"
CODEX: Final = "gpt-5-codex"
KINDS: Final = ("runaway", "cache_thrash", "retry_loop", "model_swap", "context_climb", "fanout")
# the finding kinds that name each injected kind (a runaway is seen by its spend rate)
FINDING_KINDS: Final = {
    "runaway": ("run_rate_spike", "peer_outlier"),
    "cache_thrash": ("cache_thrash",),
    "retry_loop": ("retry_loop",),
    "model_swap": ("model_swap",),
    "context_climb": ("context_growth",),
    "fanout": ("subagent_fanout",),
}
ACCOUNTS: Final = 6
COMPACT_AT: Final = 160_000


@dataclass(frozen=True, slots=True)
class Injection:
    kind: str
    machine: str
    profile: str
    session_id: str
    onset: float  # the first anomalous call's time
    account: str = ""
    variant: str = ""  # "1h" / "5m" (cache thrash), "signature" / "burst" (retry loop)

    def named_by(self, scope: str) -> bool:
        """Whether a finding's scope ("kind=value,...") names this scenario: its session, or
        for a runaway (seen by its spend) its machine, its profile there, or its account."""
        parts = scope.split(",")
        if self.kind == "runaway":
            if f"account={self.account}" in parts:
                return True
            profile = next((p for p in parts if p.startswith("profile=")), None)
            return f"machine={self.machine}" in parts and profile in (
                None,
                f"profile={self.profile}",
            )
        return f"session={self.session_id}" in parts

    def concerns(self, scope: str, at: float) -> bool:
        """Whether a finding raised at `at` is about this scenario at all: its session, or its
        machine, profile or account while it ran (a thrashing session's spend is a spike of
        its machine too)."""
        parts = scope.split(",")
        if f"session={self.session_id}" in parts:
            return True
        if not self.onset - 600 <= at <= self.onset + 3600:
            return False
        return f"machine={self.machine}" in parts or f"account={self.account}" in parts


@dataclass(slots=True)
class Week:
    machines: int
    days: int
    events: list[UsageEvent]
    injections: list[Injection] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Profile:
    name: str
    agent: Agent
    account: str
    one_hour_cache: bool  # a subscription: Claude Code writes the 1-hour tier


@dataclass(slots=True)
class _Context:
    """A Claude thread's prompt cache as the fake agent models it."""

    cached: int
    pending: int

    def next(self, rng: random.Random, output: int, grow: int) -> tuple[int, int]:
        """(cache read, cache write) of the next call; then the context grows by `grow`."""
        read, write = self.cached, self.pending
        self.cached += self.pending
        self.pending = output + grow
        if self.cached + self.pending > COMPACT_AT:
            self.cached = rng.randrange(14_000, 22_000)
            self.pending = rng.randrange(6_000, 16_000)
        return read, write


class _Writer:
    """Builds one machine's events."""

    def __init__(self, machine: str, rng: random.Random) -> None:
        self.machine = machine
        self.rng = rng
        self.events: list[UsageEvent] = []
        self.sessions = 0

    def session_id(self) -> str:
        self.sessions += 1
        digest = hashlib.sha256(f"{self.machine}/{self.sessions}".encode()).hexdigest()
        return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"

    def call(
        self,
        profile: _Profile,
        session: str,
        ts: float,
        model: str,
        tokens: Tokens,
        *,
        tool: str | None = None,
        subagent: str | None = None,
    ) -> None:
        n = len(self.events)
        self.events.append(
            UsageEvent(
                event_id=f"sim:{self.machine}:{n}",
                ts=ts,
                agent=profile.agent,
                model=model,
                tokens=tokens,
                session_id=session,
                role=Role.SUBAGENT if subagent else Role.MAIN,
                parent_session_id=session if subagent else None,
                subagent_id=subagent,
                project=f"/work/{self.machine}/app",
                machine=self.machine,
                profile=profile.name,
                account=profile.account,
                tool_calls=tool,
            )
        )

    def pace(self) -> float:
        return min(180.0, max(3.0, self.rng.lognormvariate(math.log(30.0), 0.6)))

    def output(self, median: float = 300.0) -> int:
        return min(8_000, int(self.rng.lognormvariate(math.log(median), 0.9)) + 20)

    def tool(self) -> str:
        name = self.rng.choice(("Bash", "Read", "Edit", "Grep", "Write", "Glob"))
        return f"{name}:{self.rng.getrandbits(48):012x}"

    # -- normal sessions --------------------------------------------------------------------

    def claude_session(self, profile: _Profile, ts: float, calls: int, until: float) -> float:
        rng, session = self.rng, self.session_id()
        ctx = _Context(0, rng.randrange(14_000, 22_000))
        previous: str | None = None
        repeated = False
        for _ in range(calls):
            if ts >= until:
                break
            out = self.output()
            grow = rng.randrange(200, 4_000)
            if rng.random() < 0.05:
                grow += rng.randrange(10_000, 30_000)  # a large file read
            read, write = ctx.next(rng, out, grow)
            if rng.random() < 0.3:
                tool = None  # a text reply ends the turn
            elif previous is not None and not repeated and rng.random() < 0.05:
                tool, repeated = previous, True
            else:
                tool, repeated = self.tool(), False
            previous = tool
            self.call(profile, session, ts, SONNET, _claude_tokens(rng, out, read, write, profile))
            if rng.random() < 0.08:
                self.subagent(profile, session, ts)
            ts += self.pace()
        return ts

    def subagent(self, profile: _Profile, session: str, ts: float) -> None:
        rng = self.rng
        child = f"a{rng.getrandbits(40):010x}"
        ctx = _Context(0, rng.randrange(8_000, 14_000))
        for _ in range(rng.randrange(1, 7)):
            ts += rng.uniform(2.0, 15.0)
            out = self.output(400)
            read, write = ctx.next(rng, out, rng.randrange(500, 6_000))
            tokens = _claude_tokens(rng, out, read, write, profile)
            self.call(profile, session, ts, HAIKU, tokens, tool=self.tool(), subagent=child)

    def codex_session(self, profile: _Profile, ts: float, calls: int, until: float) -> float:
        rng, session = self.rng, self.session_id()
        context = rng.randrange(8_000, 15_000)
        for _ in range(calls):
            if ts >= until:
                break
            fresh = rng.randrange(500, 6_000)
            out = self.output(400)
            reasoning = int(rng.lognormvariate(math.log(200.0), 1.0))
            self.call(profile, session, ts, CODEX, Tokens(fresh, out, context, 0, 0, reasoning))
            context += fresh + out
            if context > 200_000:
                context = rng.randrange(20_000, 40_000)  # compaction
            ts += self.pace()
        return ts

    def slot(self, profiles: list[_Profile], start: float, until: float) -> None:
        ts = start + self.rng.uniform(0, 1200)
        while ts < until:
            profile = self.rng.choice(profiles)
            calls = self.rng.randrange(20, 151)
            if profile.agent is Agent.CODEX:
                ts = self.codex_session(profile, ts, calls, until)
            else:
                ts = self.claude_session(profile, ts, calls, until)
            ts += self.rng.uniform(60, 1200)

    # -- injected sessions ------------------------------------------------------------------

    def inject(self, kind: str, profile: _Profile, ts: float) -> Injection:
        rng, session = self.rng, self.session_id()
        ctx = _Context(0, rng.randrange(14_000, 22_000))
        warmup = rng.randrange(3, 8)
        for _ in range(warmup):  # a normal start: the anomaly begins mid-session
            out = self.output()
            read, write = ctx.next(rng, out, rng.randrange(200, 4_000))
            tokens = _claude_tokens(rng, out, read, write, profile)
            self.call(profile, session, ts, SONNET, tokens, tool=self.tool())
            ts += self.pace()
        variant = ""
        onset = ts
        if kind == "runaway":
            while ts < onset + 1800:
                out = rng.randrange(1_000, 4_000)
                read = rng.randrange(100_000, 150_000)
                tokens = _claude_tokens(rng, out, read, rng.randrange(5_000, 20_000), profile)
                self.call(profile, session, ts, SONNET, tokens, tool=self.tool())
                ts += rng.uniform(2.0, 5.0)
        elif kind == "cache_thrash":
            variant = rng.choice(("1h", "5m"))
            for _ in range(20):
                write = rng.randrange(60_000, 180_000)
                w5, w1 = (0, write) if variant == "1h" else (write, 0)
                tokens = Tokens(rng.randrange(3, 13), self.output(), 0, w5, w1)
                self.call(profile, session, ts, SONNET, tokens, tool=self.tool())
                ts += self.pace()
        elif kind == "retry_loop":
            variant = "signature" if rng.random() < 2 / 3 else "burst"
            tool = self.tool() if variant == "signature" else None
            out = rng.randrange(40, 200)
            step = rng.randrange(150, 1_500)
            for _ in range(12):
                read, write = ctx.next(rng, out, step - out if step > out else 1)
                tokens = _claude_tokens(rng, out, read, write, profile)
                self.call(profile, session, ts, SONNET, tokens, tool=tool)
                ts += rng.uniform(4.0, 10.0)
        elif kind == "model_swap":
            ctx = _Context(0, ctx.cached + ctx.pending)  # caches are per model: all written again
            for _ in range(10):
                out = self.output()
                read, write = ctx.next(rng, out, rng.randrange(200, 4_000))
                tokens = _claude_tokens(rng, out, read, write, profile)
                self.call(profile, session, ts, OPUS_41, tokens, tool=self.tool())
                ts += self.pace()
        elif kind == "context_climb":
            for _ in range(12):
                out = self.output()
                grow = rng.randrange(12_000, 25_000)
                read, write = ctx.cached, ctx.pending
                ctx.cached, ctx.pending = read + write, out + grow  # no compaction: it climbs
                tokens = _claude_tokens(rng, out, read, write, profile)
                self.call(profile, session, ts, SONNET, tokens, tool=self.tool())
                ts += self.pace()
        elif kind == "fanout":
            for _ in range(8):
                out = self.output()
                read, write = ctx.next(rng, out, rng.randrange(200, 4_000))
                tokens = _claude_tokens(rng, out, read, write, profile)
                self.call(profile, session, ts, SONNET, tokens, tool=self.tool())
                for _child in range(rng.randrange(2, 4)):
                    self.subagent(profile, session, ts)
                ts += rng.uniform(10.0, 30.0)
        else:
            raise ValueError(f"unknown scenario {kind!r} (known: {', '.join(KINDS)})")
        return Injection(kind, self.machine, profile.name, session, onset, profile.account, variant)


def _claude_tokens(
    rng: random.Random, out: int, read: int, write: int, profile: _Profile
) -> Tokens:
    w5, w1 = (0, write) if profile.one_hour_cache else (write, 0)
    return Tokens(rng.randrange(3, 13), out, read, w5, w1)


def _profiles(index: int, rng: random.Random) -> list[_Profile]:
    account = f"acct-{index % ACCOUNTS}@example.com"
    out = [_Profile("max-a", Agent.CLAUDE_CODE, account, True)]
    if rng.random() < 0.6:
        out.append(_Profile("api", Agent.CLAUDE_CODE, f"api-{index % 3}@example.com", False))
    if rng.random() < 0.5:
        out.append(_Profile("codex", Agent.CODEX, f"api-{index % 3}@example.com", False))
    return out


def _active_spans(rng: random.Random, days: int) -> Iterator[tuple[float, float]]:
    """The machine's working periods: office hours (weekends at 30 %) or all day."""
    if rng.random() < 0.3:
        yield START, START + days * DAY
        return
    begin = rng.uniform(6, 10) * 3600
    length = rng.uniform(8, 10) * 3600
    for day in range(days):
        weekday = (day % 7) < 5  # START is a Monday
        if weekday or rng.random() < 0.3:
            yield START + day * DAY + begin, START + day * DAY + begin + length


def simulate(machines: int = 50, days: int = 7, seed: int = 1, per_kind: int = 0) -> Week:
    """The fleet's calls in time order, with `per_kind` injections of each kind (0: clean).
    The normal traffic is the same for a seed whatever `per_kind` is."""
    week = Week(machines, days, [])
    writers: list[tuple[_Writer, list[_Profile]]] = []
    for index in range(machines):
        name = f"spark{index + 1:02d}"
        rng = random.Random(f"{seed}/{name}")
        writer = _Writer(name, rng)
        profiles = _profiles(index, rng)
        for span_start, span_end in _active_spans(rng, days):
            for _slot in range(rng.randrange(1, 4)):
                writer.slot(profiles, span_start, span_end)
        writers.append((writer, profiles))
    if per_kind:
        chooser = random.Random(f"{seed}/injections")
        for kind in KINDS:
            for _ in range(per_kind):
                writer, profiles = chooser.choice(writers)
                claude = [p for p in profiles if p.agent is Agent.CLAUDE_CODE]
                onset = START + chooser.uniform(DAY, days * DAY - 3600)
                week.injections.append(writer.inject(kind, chooser.choice(claude), onset))
    week.events = sorted((e for w, _ in writers for e in w.events), key=lambda e: e.ts)
    return week
