"""Who runs where in the demo: machines, their profiles (plans, accounts, models), the projects
the agents work in, and how fast they call.

The cast, for the default three machines (accounts are ops-X@example.com for subscriptions,
platform@example.com for the API keys):

    spark01  max-a       Claude Max 20x   Opus    hits its 5-hour limit after 20-40 s
             max-b       Claude Max 20x   Opus    idle until the scheduler switches to it
             codex-plus  ChatGPT Plus     gpt-5-codex
             claude-api  Claude API key   Sonnet  metered
    spark02  max-c       Claude Max 5x    Sonnet
             claude-api  Claude API key   Sonnet  THE RUNAWAY: a loop writing a large prompt to
                                                  the cache every second and reading none back
             codex-pro   ChatGPT Pro      gpt-5-codex
    spark03  pro-d       Claude Pro       Sonnet
             codex-plus  ChatGPT Plus     gpt-5
             codex-api   OpenAI API key   gpt-5-codex  metered

More machines repeat the spark02 / spark03 shapes with new accounts; with one machine the
runaway runs on spark01. Each agent calls every 2-6 s (jittered per agent; `pace` scales every
interval: 0.3 runs the demo about three times faster); a normal Claude Code agent also runs a
subagent (Haiku) about every 70 s (every 3rd call at least), so its session has subagent spend
and yet no more than 10 new subagents in 10 minutes at pace 1 (the hub's fan-out detector
would otherwise call every normal session a fan-out).
"""

from __future__ import annotations

import math
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

from shared.config import Billing
from shared.events import Agent

OPUS: Final = "claude-opus-4-6"
SONNET: Final = "claude-sonnet-4-5-20250929"
GPT5: Final = "gpt-5"
GPT5_CODEX: Final = "gpt-5-codex"
PROJECTS: Final = (
    "payments-api",
    "web-frontend",
    "infra-terraform",
    "ml-pipeline",
    "mobile-app",
    "docs-site",
    "billing-service",
    "search-indexer",
    "auth-gateway",
    "data-etl",
    "k8s-operators",
    "design-system",
)

# Seconds; every one of them is scaled by `pace`.
CALL_EVERY: Final = (2.0, 6.0)  # a normal agent's time between calls, drawn per agent
RUNAWAY_EVERY: Final = 1.0
SUBAGENT_EVERY: Final = 3  # a normal Claude agent runs a Task subagent every 3rd call at most
SUBAGENT_GAP: Final = 70.0  # ... and about this often
COMMIT_GAP: Final = 45.0  # a normal agent commits about this often (seconds of calls)
LIMIT_AFTER: Final = (20.0, 40.0)  # when max-a's limit hits

STORY_MACHINE: Final = "spark01"  # where the rate-limit story plays
LIMITED: Final = "max-a"  # the profile that hits its limit
SPARE: Final = "max-b"  # the profile the scheduler switches to
API_ACCOUNT: Final = "platform@example.com"


@dataclass(frozen=True, slots=True)
class CastProfile:
    name: str
    agent: Agent
    billing: Billing
    plan: str | None
    account: str
    model: str
    mode: str = "normal"  # the fake agent's --mode: normal | runaway | ratelimit
    starts: bool = True  # an agent runs on it from the start (max-b waits for the switch)


@dataclass(frozen=True, slots=True)
class CastMachine:
    name: str
    profiles: tuple[CastProfile, ...]

    def profile(self, name: str) -> CastProfile:
        return next(p for p in self.profiles if p.name == name)


def _sub(name: str, agent: Agent, plan: str, letter: str, model: str) -> CastProfile:
    return CastProfile(name, agent, Billing.SUBSCRIPTION, plan, f"ops-{letter}@example.com", model)


def _api(name: str, agent: Agent, model: str) -> CastProfile:
    return CastProfile(name, agent, Billing.API, None, API_ACCOUNT, model)


def build_cast(machines: int) -> tuple[CastMachine, ...]:
    """The machines and their profiles (see the module docstring), runaway included."""
    story = (
        replace(_sub(LIMITED, Agent.CLAUDE_CODE, "max_20x", "a", OPUS), mode="ratelimit"),
        replace(_sub(SPARE, Agent.CLAUDE_CODE, "max_20x", "b", OPUS), starts=False),
        _sub("codex-plus", Agent.CODEX, "plus", "a", GPT5_CODEX),
        _api("claude-api", Agent.CLAUDE_CODE, SONNET),
    )
    cast = [CastMachine(STORY_MACHINE, story)]
    for index in range(1, machines):
        letter = string.ascii_lowercase[(index + 1) % 26]
        if index % 2:
            profiles = (
                _sub(f"max-{letter}", Agent.CLAUDE_CODE, "max_5x", letter, SONNET),
                _api("claude-api", Agent.CLAUDE_CODE, SONNET),
                _sub("codex-pro", Agent.CODEX, "pro", letter, GPT5_CODEX),
            )
        else:
            profiles = (
                _sub(f"pro-{letter}", Agent.CLAUDE_CODE, "pro", letter, SONNET),
                _sub("codex-plus", Agent.CODEX, "plus", letter, GPT5),
                _api("codex-api", Agent.CODEX, GPT5_CODEX),
            )
        cast.append(CastMachine(f"spark{index + 1:02d}", profiles))
    # One runaway, on an API key (metered: it burns real money): spark02's, or spark01's alone.
    host = cast[min(1, machines - 1)]
    runaway = [replace(p, mode="runaway") if p.name == "claude-api" else p for p in host.profiles]
    cast[cast.index(host)] = CastMachine(host.name, tuple(runaway))
    return tuple(cast)


def project_names() -> Iterator[str]:
    """Distinct project names, however many agents there are."""
    round_ = 1
    while True:
        for name in PROJECTS:
            yield name if round_ == 1 else f"{name}-{round_}"
        round_ += 1


def pace_options(profile: CastProfile, rng: random.Random, pace: float) -> list[str]:
    """The fake agent's --pace (jittered per agent, scaled), for a normal Claude agent
    --subagents (every how many calls), for a normal agent --commit-every (calls) and, for the
    rate-limited one, --calls: how many calls before its limit hits."""
    every = RUNAWAY_EVERY if profile.mode == "runaway" else rng.uniform(*CALL_EVERY)
    options = ["--pace", f"{every * pace:.3f}"]
    if profile.agent is Agent.CLAUDE_CODE and profile.mode == "normal":
        options += ["--subagents", str(max(SUBAGENT_EVERY, math.ceil(SUBAGENT_GAP / every)))]
    if profile.mode == "ratelimit":
        calls = max(3, round(rng.uniform(*LIMIT_AFTER) / every))
        options += ["--calls", str(calls)]
    if profile.mode == "normal":  # commits, so the Spend-by tab's `o` has something to show
        options += ["--commit-every", str(max(2, math.ceil(COMMIT_GAP / every)))]
    return options
