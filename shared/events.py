"""The event types every part of fleetmeter speaks: usage, limit and profile events.

Sources produce them, the wire carries them, the hub prices and rolls them up. They hold
facts as logged (token counts from the provider's usage fields, ids, attribution) and never
money: pricing is the ledger's job.

Revisions: a source may learn more about one call after it first reported it (Claude Code
writes a streaming snapshot per content block; Gemini re-emits a message when it changes).
It then emits the same `event_id` again with a higher `revision`. Every consumer keeps, per
`event_id`, the version with the highest revision and ignores lower or equal ones, so
re-reading a log (any number of times, in any order of files) converges on the same set.
An event found to be a copy of another call is re-emitted with `duplicate_of` set; it
then counts nothing.

The types are msgspec Structs, not dataclasses: a scan imports them at every start, where 27
fields of dataclass code generation cost milliseconds, and builds thousands of events, where a
frozen dataclass sets each field through `object.__setattr__`. They keep the semantics the hub
relies on: frozen, hashable, equal field by field (and only to their own type). Copy one with
a change through `msgspec.structs.replace`; `dataclasses.replace` does not take them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import msgspec

# The highest revision a source emits: Claude's retractions (2**48 + its last snapshot's
# revision, 2 × a call's tokens) stay below 2**49, Gemini's and OpenCode's (2**44 + a line
# number or a time in ms) below 2**45, Codex's are 0..2. The hub refuses a higher one: a node
# must not push one of its events beyond the reach of its own later revisions.
MAX_REVISION: Final = (1 << 50) - 1

# The most tokens of one kind a single call (or a Codex session's running total) can hold: a
# trillion, far beyond any context window. Sources treat a larger count as a bad field and the
# hub refuses it, so one damaged log line or a hostile node cannot overflow msgpack's 64 bits
# (which stopped the node at every restart) nor turn the fleet's totals into nonsense.
MAX_TOKENS: Final = (1 << 40) - 1


class Agent(StrEnum):
    CLAUDE_CODE = "claude-code"
    CODEX = "codex"
    GEMINI = "gemini"
    OPENCODE = "opencode"
    CURSOR = "cursor"


class Role(StrEnum):
    """Who made the call inside a session."""

    MAIN = "main"
    SUBAGENT = "subagent"  # a spawned agent (Task tool, thread_spawn, child session)
    # work on the user's behalf that is not a conversation turn (review, compaction)
    AUXILIARY = "auxiliary"


class Tokens(msgspec.Struct, frozen=True, gc=False):
    """Disjoint token buckets of one call. Each token is in exactly one bucket.

    `input` is uncached input only (for OpenAI/Gemini-style usage, where the prompt count
    includes cached tokens, the source subtracts). `output` excludes reasoning tokens that the
    provider reported separately; `reasoning` holds those, so billed output = output + reasoning.
    Cache writes are split by TTL tier; a write logged without its tier is put in
    `cache_write_5m` and the event is marked `cache_write_unsplit`.
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    web_search_requests: int = 0

    @property
    def prompt(self) -> int:
        """Every input-side token of the request: what long-context thresholds are measured on."""
        return self.input + self.cache_read + self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        return self.prompt + self.output + self.reasoning

    def is_zero(self) -> bool:
        return self.total == 0 and self.web_search_requests == 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write_5m + other.cache_write_5m,
            self.cache_write_1h + other.cache_write_1h,
            self.reasoning + other.reasoning,
            self.web_search_requests + other.web_search_requests,
        )


class UsageEvent(msgspec.Struct, frozen=True, gc=False):
    """One billed model call."""

    event_id: str  # stable, from the source's own identity (same on every re-read)
    ts: float  # epoch seconds, UTC
    agent: Agent
    model: str  # as logged; pricing resolves aliases
    tokens: Tokens
    session_id: str
    revision: int = 0  # see module doc: highest revision per event_id wins
    role: Role = Role.MAIN
    parent_session_id: str | None = None
    subagent_id: str | None = None
    provider: str | None = None  # provider hint from the log (e.g. OpenCode providerID)
    project: str | None = None  # cwd of the session
    git_branch: str | None = None
    git_repo: str | None = None
    service_tier: str | None = None  # standard / batch / flex / priority / default, as logged
    speed: str | None = None  # "fast" for fast mode
    inference_geo: str | None = None
    cache_write_unsplit: bool = False  # the log gave a cache-write total without 5m/1h split
    reported_cost_usd: str | None = (
        None  # the agent's own figure, decimal string; never used as the price
    )
    agent_version: str | None = None
    duplicate_of: str | None = None  # set on a retraction: this id turned out to copy that one
    machine: str = ""
    profile: str | None = None
    account: str | None = None
    origin: str = ""  # file (and line) the event was read from, for diagnostics
    # The call's tool uses, each "name:hash of its input" (12 hex digits of SHA-256 over the
    # input as sorted JSON), joined by ","; None when the log names none (or the source does
    # not read them). Lets the hub see the same tool call repeated (a retry loop) without
    # the input itself leaving the machine. Absent on the wire from older nodes: None.
    tool_calls: str | None = None
    # How the agent was started, as it logs it (Claude Code: "cli" interactive; "sdk-cli",
    # "sdk-ts", "sdk-py" for `claude -p` and the Agent SDK, which draw a subscription's Agent
    # SDK credit); None where the log does not say. Absent on the wire from older nodes: None.
    entrypoint: str | None = None

    @property
    def counts(self) -> bool:
        return self.duplicate_of is None


class LimitKind(StrEnum):
    RATE_LIMIT_HIT = "rate_limit_hit"  # the agent was refused (429 / usage limit)
    QUOTA_SNAPSHOT = "quota_snapshot"  # an official reading of a window's usage


class LimitWindow(StrEnum):
    FIVE_HOUR = "5h"
    WEEKLY = "weekly"
    OTHER = "other"
    UNKNOWN = "unknown"


class LimitEvent(msgspec.Struct, frozen=True, gc=False):
    event_id: str
    ts: float
    agent: Agent
    kind: LimitKind
    window: LimitWindow = LimitWindow.UNKNOWN
    window_minutes: int | None = None
    used_percent: float | None = None
    resets_at: float | None = None  # epoch seconds, UTC, when known
    message: str | None = None  # the agent's own wording, for the operator
    plan_type: str | None = None
    session_id: str | None = None
    machine: str = ""
    profile: str | None = None
    account: str | None = None
    origin: str = ""


class ProfileState(StrEnum):
    ACTIVE = "active"
    IDLE = "idle"
    RATE_LIMITED = "rate_limited"
    SWITCHED_AWAY = "switched_away"


class ProfileEvent(msgspec.Struct, frozen=True, gc=False):
    """A change on a profile's timeline."""

    event_id: str
    ts: float
    machine: str
    profile: str
    agent: Agent
    state: ProfileState
    until: float | None = None  # for RATE_LIMITED: the reset time
    switched_to: str | None = None
    reason: str | None = None
    account: str | None = None
    origin: str = ""


Event = UsageEvent | LimitEvent | ProfileEvent


class EventSet(msgspec.Struct):
    """Events keyed by id, keeping the highest revision of each: the consumer side of revisions."""

    usage: dict[str, UsageEvent] = msgspec.field(default_factory=dict)
    limits: dict[str, LimitEvent] = msgspec.field(default_factory=dict)
    profiles: dict[str, ProfileEvent] = msgspec.field(default_factory=dict)

    def add(self, event: Event) -> bool:
        """Add or supersede; returns True when the set changed."""
        if isinstance(event, UsageEvent):
            old = self.usage.get(event.event_id)
            if old is not None and old.revision >= event.revision:
                return False
            self.usage[event.event_id] = event
            return True
        if isinstance(event, LimitEvent):
            if event.event_id in self.limits:
                return False
            self.limits[event.event_id] = event
            return True
        if event.event_id in self.profiles:
            return False
        self.profiles[event.event_id] = event
        return True

    def counted_usage(self) -> list[UsageEvent]:
        return [e for e in self.usage.values() if e.counts]
