"""Per-session running figures for the live sessions view: who, where, what it cost, how fast.

A session row is keyed by its root session: a subagent's calls (Claude's `subagents/` files,
Codex's spawned threads) carry their parent's id and are summed into the parent's row, split
from the main thread's own spend, so a row answers "what did this piece of work cost, and how
much of it went to subagents". The ledger feeds it the figures it already priced, so nothing is
priced twice; a superseded call is withdrawn the same way the ledger withdraws it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from hub._totals import Totals
from shared.events import Agent, Role, UsageEvent

if TYPE_CHECKING:
    from hub._rollup import Cell  # _rollup files calls by `session_key`

# Tokens per minute are the tokens of the calls made in the last RECENT_S seconds of wall time,
# per minute of that window the session has lived (at least one): a current rate that falls to
# zero RECENT_S after the last call, whatever the process did since.
RECENT_S: Final = 300
_MIN_SPAN_S: Final = 60  # a first call is not a rate per second of its own


def session_key(event: UsageEvent) -> str:
    """The row a call belongs to: its root session (a subagent's parent)."""
    if event.role is not Role.MAIN and event.parent_session_id:
        return event.parent_session_id
    return event.session_id


@dataclass(slots=True)
class SessionFigures:
    key: str
    machine: str
    agent: Agent
    profile: str | None = None
    account: str | None = None
    project: str | None = None
    git_branch: str | None = None
    model: str = ""  # of the main thread's latest call (a subagent's until one is seen)
    model_rank: tuple[bool, float] = (False, 0.0)  # (from the main thread, time) of `model`
    first_ts: float = 0.0
    last_ts: float = 0.0
    main: Totals = field(default_factory=Totals)
    subagents: Totals = field(default_factory=Totals)  # subagent and auxiliary calls
    label: str = ""  # the short id the dashboard shows (`SessionNames`), set on snapshots
    # epoch second -> tokens, for the last RECENT_S seconds only (pruned as the clock moves)
    recent: dict[int, int] = field(default_factory=dict)

    def take(
        self,
        main: bool,
        who: tuple[str | None, str | None, str | None, str | None],
        first_ts: float,
        last_ts: float,
        model: str | None,
    ) -> None:
        """Note calls made between `first_ts` and `last_ts` (the latest with `model`) by the
        main thread or not, and who (profile, account, project, git branch) made them."""
        if main or self.first_ts == 0.0:
            # the main thread names the session; a subagent fills in until it is seen
            profile, account, project, git_branch = who
            self.profile = profile or self.profile
            self.account = account or self.account
            self.project = project or self.project
            self.git_branch = git_branch or self.git_branch
        if last_ts >= self.last_ts:
            self.last_ts = last_ts
        rank = (main, last_ts)
        if (
            model and rank >= self.model_rank
        ):  # a subagent's own model (often Haiku) is not the session's
            self.model, self.model_rank = model, rank
        if self.first_ts == 0.0 or first_ts < self.first_ts:
            self.first_ts = first_ts

    @property
    def total(self) -> Totals:
        out = self.main.copy()
        out.add(self.subagents)
        return out

    def tokens_per_minute(self, now: float) -> float:
        """Tokens a minute over the last RECENT_S seconds (see RECENT_S)."""
        start = now - RECENT_S
        tokens = sum(t for second, t in self.recent.items() if second > start)
        if not tokens:
            return 0.0
        span = max(_MIN_SPAN_S, min(RECENT_S, now - self.first_ts))
        return tokens * 60 / span


SHORT_ID: Final = 8  # characters of a session id shown, more only where two would look alike
# A random (version 4) UUID, as Claude Code's: its first characters tell sessions apart. Any
# other id may start with a timestamp (Codex's UUIDv7 thread ids, OpenCode's `ses_…`, Cursor's
# dated ids), so its end is shown instead.
_RANDOM_UUID: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)


def short_id(key: str, length: int = SHORT_ID) -> str:
    """`key` in about `length` characters: its head for a random UUID, else "…" and its tail."""
    if len(key) <= length + 1:
        return key
    if _RANDOM_UUID.fullmatch(key):
        return key[:length]
    return "…" + key[-length:]


class SessionNames:
    """Short ids that no two sessions share: a session keeps the name it was first given; one
    whose short id another already has gets a longer one. Not thread-safe (the service's lock)."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}  # key -> name
        self._taken: set[str] = set()

    def name(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            length = SHORT_ID
            name = short_id(key, length)
            while name in self._taken and name != key:
                length += 4
                name = short_id(key, length)
            self._names[key] = name
            self._taken.add(name)
        return name


# Cache thrash: paying to write prompts that are never read back. Flagged when less than this
# share of the prompt came from the cache while at least this many tokens were written to it.
THRASH_BELOW: Final = 0.2
THRASH_WRITES: Final = 50_000


def cache_ratio(input_: int, cache_read: int, writes: int) -> float | None:
    """Share of prompt tokens served from the cache (None: no prompt tokens yet)."""
    prompt = input_ + cache_read + writes
    return cache_read / prompt if prompt else None


def cache_read_ratio(t: Totals) -> float | None:
    return cache_ratio(t.input, t.cache_read, t.cache_write_5m + t.cache_write_1h)


def is_thrash(ratio: float | None, writes: int) -> bool:
    return ratio is not None and ratio < THRASH_BELOW and writes >= THRASH_WRITES


class SessionBook:
    """Not thread-safe: the ledger's owner calls it."""

    def __init__(self) -> None:
        self._sessions: dict[str, SessionFigures] = {}

    def clear(self) -> None:
        self._sessions.clear()

    def note(self, event: UsageEvent, tokens: int, *, negate: bool, now_minute: int) -> str | None:
        """Note a call (`negate`: withdraw it) in its row: `tokens` (negative when withdrawn)
        for the rate, and who and where; its money follows with `add`, summed with the other
        calls of the batch. Returns the row's key (None: a withdrawal from no row)."""
        key = session_key(event)
        row = self._sessions.get(key)
        if row is None:
            if negate:
                return None
            row = self._sessions[key] = SessionFigures(key, event.machine, event.agent)
        second = int(event.ts)
        if second > now_minute * 60 - RECENT_S:
            row.recent[second] = row.recent.get(second, 0) + tokens
        if negate:
            return key
        who = (event.profile, event.account, event.project, event.git_branch)
        row.take(event.role is Role.MAIN, who, event.ts, event.ts, event.model)
        return key

    def restore(self, cell: Cell) -> str:
        """Make or fill the row of a roll-up cell's calls (their money follows with `add`);
        returns the row's key. A main-thread cell names the session, as in `note`."""
        key, agent = cell.session_row, cell.agent
        assert key is not None and agent is not None, "a cell read with every key"
        row = self._sessions.get(key)
        if row is None:
            row = self._sessions[key] = SessionFigures(key, cell.machine, Agent(agent))
        who = (cell.profile, cell.account, cell.project, cell.git_branch)
        row.take(cell.role is Role.MAIN, who, cell.first_ts, cell.last_ts, cell.model)
        return key

    def note_recent(self, event: UsageEvent, now_minute: int) -> None:
        """Count a stored call's tokens in its row's recent rate (the rows come from
        `restore`; the roll-ups do not hold seconds)."""
        row = self._sessions.get(session_key(event))
        second = int(event.ts)
        if row is not None and second > now_minute * 60 - RECENT_S:
            row.recent[second] = row.recent.get(second, 0) + event.tokens.total

    def add(self, key: str, calls: Totals, *, main: bool) -> None:
        """Add calls `note`d in row `key` to its main-thread or its subagent spend."""
        row = self._sessions.get(key)
        if row is not None:
            (row.main if main else row.subagents).add(calls)

    def prune(self, now_minute: int) -> None:
        oldest = now_minute * 60 - RECENT_S
        for row in self._sessions.values():
            if row.recent and min(row.recent) <= oldest:
                row.recent = {s: t for s, t in row.recent.items() if s > oldest}

    def get(self, key: str) -> SessionFigures | None:
        return self._sessions.get(key)

    def keys(self) -> list[str]:
        return list(self._sessions)

    def active_since(self, ts: float) -> list[SessionFigures]:
        return [row for row in self._sessions.values() if row.last_ts >= ts]

    def drop_before(self, ts: float) -> None:
        """Forget sessions whose last call is older than `ts` (no current period covers them)."""
        self._sessions = {k: row for k, row in self._sessions.items() if row.last_ts >= ts}
