"""Codex CLI: JSONL rollouts under `$CODEX_HOME/sessions/` and `archived_sessions/`.

Rules (research/log-formats.md §2 and §6, with ccusage, tokscale and openai/codex as evidence).

Per-call usage
- `token_usage_record` (newer builds) is one record per completed Responses API response.
- Otherwise usage comes from `event_msg`/`token_count` as the delta of the cumulative
  `info.total_token_usage`. Rows whose cumulative vector was already seen in this file are
  skipped: rate-limit refreshes repeat an unchanged total, and out-of-order snapshots repeat an
  older one. On a decrease (reset/compaction) the row falls back to `last_token_usage`; so does
  the first row of a file, whose total may include earlier pages or a parent's history.
  `info: null` rows carry only rate limits. Synthetic context-window fills (upstream
  `fill_to_context_window`: a total of the window size with zero input/output) are skipped and
  do not move the baseline.
- Token buckets: `cached_input_tokens` and `cache_write_input_tokens` sit inside
  `input_tokens`, `reasoning_output_tokens` inside `output_tokens`; they are split into the
  disjoint `Tokens` buckets (cache writes in `cache_write_5m`: OpenAI has one write rate).

Event ids and revisions (the REVISION contract of `shared.events`)
- A call is identified by its thread and the thread's cumulative usage after it:
  `codex:<thread>:cum:<in>-<cached>-<out>-<reasoning>-<total>`, from `total_token_usage` for a
  token_count row (revision 0) and from `thread_token_usage` for a record (revision 2), so the
  record of a response supersedes the token_count of the same response. A record without
  thread totals is `codex:<thread>:resp:<response_id>` (else `:at:<completed_at_ms>:<usage>`).
  Limit events: `codex:<thread>:quota:<limit_id>:<window minutes>:<line timestamp>` and
  `codex:<thread>:limit-hit:<line timestamp>`.
- Both kinds are also paired within a file by per-call usage: if they did not get the same id,
  the token_count is skipped (record first) or retracted with `duplicate_of` at revision 1
  (token_count first). A record's id never depends on pairing, so every copy of it agrees.
- The ids depend only on file content, so re-reading a file, its `.zst` twin or its archived
  copy yields the same ids.

Fork and subagent replays
A forked or spawned thread's rollout starts with its own `session_meta`, usually the parent's
`session_meta`, then a copy of the parent's history, `token_count`s included, re-stamped at fork
time (sometimes thousands of rows, spanning several seconds; some builds keep the original
timestamps). Sibling forks copy it again. ccusage matched parent prefixes or same-second bursts
(#1349, #1370, #1460, PR #1457); tokscale and agentsview PR #657 gate on UUIDv7 turn ids;
openai/codex writes `ordinal` + `subagent_history_start_ordinal` on paginated rollouts. The rule
here needs no other file, so it holds when the parent's rollout is absent or read later:
1. Explicit: when the file's own `session_meta` gives `subagent_history_start_ordinal` (or
   `history_base.end_ordinal_exclusive`), a line with an `ordinal` below it is copied history,
   at or above it is the thread's own. Nothing else is consulted for such lines.
2. Otherwise a copied region starts at the own `session_meta` when it names a parent
   (`forked_from_id`, `parent_thread_id`, `source.subagent.thread_spawn.parent_thread_id`) and at
   any later `session_meta` of another thread. It ends at the first line proven to be the
   thread's own: a `turn_context`/`task_started` whose `turn_id` is a UUIDv7 minted at or after
   the thread's creation (its own UUIDv7 id, else the meta timestamp), a `task_started` whose
   `started_at` is not before it, or a `token_usage_record` of this thread. Copied turns were
   minted before the fork, so they never end it.
   A thread whose own id is a UUIDv7 is presumed to be from such a build: its region is
   structural from the start, so a copy burst with no copied turn_context in it is skipped
   whole; a turn_context without a turn id disproves that and hands over to rule 3.
3. Builds without such turn ids fall back to timing: inside the region a token row is a copy
   while it is within 2.5 s of the thread's creation or within 1 s of the previous copied row
   (the copy is written in one burst), or older than the creation (kept original timestamps).
4. Copied rows never count in the child; their totals become the child's baseline (the child
   inherits the parent's counters) and enter the seen set, so a stray copy after the region
   is still recognised. Copied rate limits and limit hits are the parent's and are dropped.
5. A copied `token_usage_record` names its thread: it is emitted as that thread's call
   (same content id) at revision 1, so the parent's own record (revision 2) wins when its
   file is read, and the call still counts once when the parent's file is gone. Copied legacy
   token_counts cannot be attributed that way (nested copies do not say which ancestor wrote
   each row, and a partial copy loses the per-call size), so with the parent's file absent
   the parent's pre-fork token_count usage is not recovered: under-count, never double count.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar, Final, NamedTuple

import msgspec
import orjson

from node_agent.sources._codex_limits import LimitTracker, parse_rate_limits, usage_limit_message
from node_agent.sources._values import count as _int
from node_agent.sources._values import iso_time, token_count
from node_agent.sources._values import number as _num
from node_agent.sources._values import text as _text
from node_agent.sources.base import FileKind, ParseProblem, Sink, Source, SourceFile
from shared.events import MAX_TOKENS, Agent, Role, Tokens, UsageEvent

REV_TOKEN_COUNT: Final = 0
REV_RETRACTED: Final = 1  # a token_count found to be the same response as a record
REV_RECORD_COPY: Final = 1  # a record copied into another thread's rollout
REV_RECORD: Final = 2

UNKNOWN_MODEL: Final = "codex-unknown-model"  # pricing will not find it: shown as unknown
EARLY_FALLBACK_MODEL: Final = "gpt-5"
# Builds around Sept 2025 wrote token events without turn_context; ccusage assumes gpt-5.
EARLY_FALLBACK_UNTIL: Final = datetime(2025, 10, 1, tzinfo=UTC).timestamp()

FORK_BURST_WINDOW_MS: Final = 2500.0
FORK_BURST_GAP_MS: Final = 1000.0
_PAIR_WINDOW: Final = 8  # a record sits next to its token_count; a few rows of slack

_AUXILIARY_SOURCES: Final = frozenset({"review", "compact", "memory_consolidation"})
_AUXILIARY_THREAD_SOURCES: Final = frozenset(
    {"memory_consolidation", "guardian_review", "review", "compact"}
)

_ROLLOUT_RE: Final = re.compile(
    r"rollout-.*?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})"
)

# Byte-level prefilter on the line head. Serde writes `{"timestamp":..,"type":<kind>,
# "payload":{"type":<event>,..` so both kinds sit in the first bytes; response_item and
# compacted lines (nearly all the bytes) and chatty event_msgs are never JSON-parsed.
_HEAD: Final = 512
_TYPE_KEY: Final = b'"type":"'
_PARSE_KINDS: Final = frozenset({b"session_meta", b"turn_context", b"token_usage_record"})
_SKIP_KINDS: Final = frozenset({b"compacted", b"world_state"})
# response items are skipped but for the model's tool calls (the hub's retry-loop signature)
_TOOL_ITEMS: Final = frozenset({b"function_call", b"custom_tool_call", b"local_shell_call"})
_PARSE_EVENTS: Final = frozenset(
    {b"token_count", b"task_complete", b"error", b"task_started", b"thread_settings_applied"}
)


def _wanted(data: bytes, start: int = 0, stop: int | None = None) -> bool:
    """False only for lines (`data[start:stop]`) that cannot matter; anything unrecognised is
    parsed. Searches in place: most lines are never copied out of the read buffer."""
    head_end = start + _HEAD if stop is None else min(start + _HEAD, stop)
    find = data.find
    i = find(_TYPE_KEY, start, head_end)
    if i < 0:
        return True
    begin = i + len(_TYPE_KEY)
    end = find(b'"', begin, head_end)
    if end < 0:
        return True
    kind = data[begin:end]
    if kind in _PARSE_KINDS:
        return True
    if kind in _SKIP_KINDS:
        return False
    if kind not in (b"event_msg", b"response_item"):
        return True
    j = find(_TYPE_KEY, end, head_end)
    if j < 0:
        return kind == b"event_msg"
    begin = j + len(_TYPE_KEY)
    end = find(b'"', begin, head_end)
    if kind == b"response_item":
        return end >= 0 and data[begin:end] in _TOOL_ITEMS
    return end < 0 or data[begin:end] in _PARSE_EVENTS


# --- JSON accessors (orjson gives untyped values) ---------------------------------------------


def _obj(value: object) -> dict[str, object] | None:
    return value if isinstance(value, dict) else None


def _parse_ts(value: object) -> float | None:
    if isinstance(value, str):
        return iso_time(value)  # rollout timestamps are UTC
    number = _num(value)
    if number is None:
        return None
    return number / 1000.0 if number > 1e11 else number  # epoch ms or s


def _uuid7_ms(value: str | None) -> float | None:
    """Creation time (epoch ms) of a UUIDv7: Codex thread and turn ids are UUIDv7."""
    if value is None or len(value) != 36 or value[8] != "-" or value[14] != "7":
        return None
    try:
        return float(int(value[:8] + value[9:13], 16))
    except ValueError:
        return None


class _Usage(NamedTuple):
    """One Codex `TokenUsage` object, as logged (subsets not yet split out)."""

    input: int
    cached: int
    cache_write: int
    output: int
    reasoning: int
    total: int

    @classmethod
    def parse(cls, value: object) -> _Usage | None:
        raw = _obj(value)
        if raw is None:
            return None
        # Fast path for the shape current rollouts write (non-negative ints): every token_count.
        get = raw.get
        inp, cached, out = get("input_tokens"), get("cached_input_tokens"), get("output_tokens")
        reasoning, total = get("reasoning_output_tokens"), get("total_tokens")
        write = get("cache_write_input_tokens", 0)
        if (
            type(inp) is int
            and type(cached) is int
            and type(out) is int
            and type(reasoning) is int
            and type(total) is int
            and type(write) is int
            and min(inp, cached, out, reasoning, total, write) >= 0
            and max(inp, cached, out, reasoning, total, write) <= MAX_TOKENS
        ):
            return cls(inp, cached, write, out, reasoning, total)
        nums = [
            token_count(raw.get(k))
            for k in (
                "input_tokens",
                "cached_input_tokens",
                "cache_write_input_tokens",
                "output_tokens",
                "reasoning_output_tokens",
                "total_tokens",
            )
        ]
        if all(n is None for n in nums):
            return None
        inp, cached, cache_write, out, reasoning, total = (max(n or 0, 0) for n in nums)
        if nums[5] is None:
            total = inp + out  # reasoning is inside output: never add it again (ccusage #1460)
        return cls(inp, cached, cache_write, out, reasoning, total)

    def key(self) -> tuple[int, int, int, int, int]:
        # cache writes are left out: older token_count totals lack the field while records have it
        return (self.input, self.cached, self.output, self.reasoning, self.total)

    def call_key(self) -> tuple[int, int, int, int]:
        return (self.input, self.cached, self.output, self.reasoning)

    def is_fill(self) -> bool:
        """Upstream `fill_to_context_window`: only total_tokens set. Not a model call."""
        return self.total > 0 and not (self.input or self.cached or self.output or self.reasoning)

    def is_zero(self) -> bool:
        return not (self.input or self.cached or self.cache_write or self.output or self.reasoning)

    def covers(self, other: _Usage) -> bool:
        return all(a >= b for a, b in zip(self, other, strict=True))

    def minus(self, other: _Usage) -> _Usage:
        return _Usage(*(a - b for a, b in zip(self, other, strict=True)))

    def plus(self, other: _Usage) -> _Usage:
        return _Usage(*(a + b for a, b in zip(self, other, strict=True)))

    def tokens(self) -> Tokens:
        cached = min(self.cached, self.input)
        cache_write = min(self.cache_write, self.input - cached)
        reasoning = min(self.reasoning, self.output)
        return Tokens(
            input=self.input - cached - cache_write,
            output=self.output - reasoning,
            cache_read=cached,
            cache_write_5m=cache_write,
            reasoning=reasoning,
        )


def _cum_id(thread: str, usage: _Usage) -> str:
    return f"codex:{thread}:cum:" + "-".join(str(n) for n in usage.key())


# --- session metadata -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Meta:
    thread: str
    role: Role = Role.MAIN
    parent: str | None = None  # spawning thread, else the thread it was forked from
    lineage: bool = False  # forked or spawned: the rollout may start with copied history
    subagent_id: str | None = None
    cwd: str | None = None
    git_branch: str | None = None
    git_repo: str | None = None
    version: str | None = None
    provider: str | None = None
    created_ms: float | None = None
    boundary: int | None = None  # first ordinal that is the thread's own


def _role(source: object, thread_source: str | None) -> Role:
    src = _obj(source)
    if src is not None:
        sub = src.get("subagent")
        if sub is not None:
            if isinstance(sub, str):
                return Role.AUXILIARY if sub in _AUXILIARY_SOURCES else Role.SUBAGENT
            sub_obj = _obj(sub)
            if sub_obj is not None and "thread_spawn" in sub_obj:
                return Role.SUBAGENT
            if sub_obj is not None and sub_obj.get("other") == "guardian":
                return Role.AUXILIARY  # guardian review of the same user turn
            return Role.SUBAGENT
        if "internal" in src:
            return Role.AUXILIARY  # e.g. {"internal": "memory_consolidation"}
    if thread_source == "subagent":
        return Role.SUBAGENT
    if thread_source in _AUXILIARY_THREAD_SOURCES:
        return Role.AUXILIARY
    return Role.MAIN  # "user", or a plain string source ("cli", "vscode", "exec", ...)


def _parse_meta(payload: Mapping[str, object], line: Mapping[str, object]) -> _Meta | None:
    # `id` is this thread; on spawned threads `session_id` names the root thread.
    thread = _text(payload.get("id")) or _text(payload.get("session_id"))
    if thread is None:
        return None
    source = payload.get("source")
    spawn: dict[str, object] | None = None
    src = _obj(source)
    if src is not None:
        sub = _obj(src.get("subagent"))
        if sub is not None:
            spawn = _obj(sub.get("thread_spawn"))
    parent = _text(payload.get("parent_thread_id"))
    if parent is None and spawn is not None:
        parent = _text(spawn.get("parent_thread_id"))
    forked = _text(payload.get("forked_from_id"))
    role = _role(source, _text(payload.get("thread_source")))
    subagent_id = None
    if role is Role.SUBAGENT:
        holder = spawn or payload
        subagent_id = (
            _text(holder.get("agent_path"))
            or _text(holder.get("agent_nickname"))
            or _text(payload.get("agent_path"))
            or _text(payload.get("agent_nickname"))
        )
    git = _obj(payload.get("git")) or _obj(line.get("git")) or {}
    created = _uuid7_ms(thread)
    if created is None:
        stamp = _parse_ts(payload.get("timestamp"))
        if stamp is None:
            stamp = _parse_ts(line.get("timestamp"))
        created = stamp * 1000.0 if stamp is not None else None
    bounds = [_int(payload.get("subagent_history_start_ordinal"))]
    base = _obj(payload.get("history_base"))
    if base is not None:
        bounds.append(_int(base.get("end_ordinal_exclusive")))
    known = [b for b in bounds if b is not None]
    return _Meta(
        thread=thread,
        role=role,
        parent=parent or forked,
        lineage=(parent or forked) not in (None, thread),
        subagent_id=subagent_id,
        cwd=_text(payload.get("cwd")),
        git_branch=_text(git.get("branch")),
        git_repo=_text(git.get("repository_url")),
        version=_text(payload.get("cli_version")),
        provider=_text(payload.get("model_provider")),
        created_ms=created,
        boundary=max(known) if known else None,
    )


# --- per-file state ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    call_key: tuple[int, int, int, int]
    event_id: str
    event: UsageEvent | None  # the emitted token_count event, to retract it


@dataclass(slots=True)
class _Line:
    path: str
    lineno: int
    ts: float | None
    ts_key: str
    ordinal: int | None

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.lineno}"


@dataclass(slots=True)
class _File:
    path: str
    thread: str  # own thread id: the filename's until the first session_meta says otherwise
    name_thread: str | None
    meta: _Meta | None = None
    metas: dict[str, _Meta] = field(default_factory=dict)
    region: bool = False  # inside copied history (heuristic rule)
    region_structural: bool = False  # turn ids seen in the region: only they may end it
    region_assumed: bool = False  # structural only because the thread id is a UUIDv7
    last_copy_ms: float | None = None
    model: str | None = None
    copy_model: str | None = None
    cwd: str | None = None
    thread_tier: str | None = None
    prev: _Usage | None = None
    seen: set[tuple[int, int, int, int, int]] = field(default_factory=set)
    counts: deque[_Pending] = field(default_factory=lambda: deque(maxlen=_PAIR_WINDOW))
    records: deque[_Pending] = field(default_factory=lambda: deque(maxlen=_PAIR_WINDOW))
    limits: LimitTracker = field(default_factory=LimitTracker)
    last_ts: float | None = None
    model_noted: bool = False
    tools: list[str] = field(default_factory=list)  # tool calls since the last usage line


class CodexSource(Source):
    agent: ClassVar[Agent] = Agent.CODEX
    home_kind: ClassVar[str] = "a Codex home (~/.codex, $CODEX_HOME)"
    usage_files: ClassVar[str] = "rollouts (sessions/YYYY/MM/DD/rollout-*.jsonl[.zst])"

    def __init__(self) -> None:
        self._files: dict[str, _File] = {}

    # --- layout -------------------------------------------------------------------------------

    def default_homes(self) -> list[Path]:
        env = os.environ.get("CODEX_HOME")
        if env:
            return [Path(env).expanduser()]
        return [Path.home() / ".codex"]

    def is_home(self, path: Path) -> bool:
        if path.is_file():
            return path.name.startswith("rollout-") and path.name.endswith((".jsonl", ".jsonl.zst"))
        return (path / "sessions").is_dir() or (path / "archived_sessions").is_dir()

    def discover(self, home: Path) -> list[SourceFile]:
        # One file per rollout name: sessions/ before archived_sessions/ (`codex archive` moves
        # files; both may exist meanwhile), plain before .zst (Codex rematerialises a plain copy
        # before appending to a compressed rollout).
        if home.is_file():
            if not self.is_home(home):
                return []
            kind = FileKind.JSONL_ZST if home.name.endswith(".zst") else FileKind.JSONL
            return [SourceFile(home, kind)]
        best: dict[str, tuple[tuple[int, int, str], Path]] = {}
        for tree, sub in enumerate(("sessions", "archived_sessions")):
            root = home / sub
            if not root.is_dir():
                continue
            for path in root.rglob("rollout-*.jsonl*"):
                name = path.name
                if name.endswith(".jsonl.zst"):
                    base, zipped = name[: -len(".zst")], 1
                elif name.endswith(".jsonl"):
                    base, zipped = name, 0
                else:
                    continue
                if not path.is_file():
                    continue
                rank = (tree, zipped, str(path))
                if base not in best or rank < best[base][0]:
                    best[base] = (rank, path)
        files = [
            SourceFile(p, FileKind.JSONL_ZST if p.name.endswith(".zst") else FileKind.JSONL)
            for _, p in best.values()
        ]
        return sorted(files, key=lambda f: str(f.path))

    def partition(self, path: Path) -> str:
        # One rollout (its plain, .zst and archived copies together). A child's copy of its
        # parent's records shares their event ids, so the report re-reads such pairs together.
        return path.name.removesuffix(".zst")

    def reset_file(self, path: Path) -> None:
        self._files.pop(str(path), None)

    # --- lines --------------------------------------------------------------------------------

    def ignores(self, data: bytes, start: int, end: int) -> bool:
        # A torn line (no closing brace) is never ignored: feed_line reports it.
        return end > start and data[end - 1] == 0x7D and not _wanted(data, start, end)

    def feed_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        data = line.strip()
        if data and _wanted(data):
            self._parse(path, lineno, data, sink)
        elif data and not data.endswith(b"}"):
            # Not parsed, but a torn line must still be reported (research §6 item 13).
            sink.problem(ParseProblem(str(path), lineno, "truncated JSON line"))

    def feed_kept_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        # `ignores` keeps wanted lines and every line not ending in '}': a line that ends in
        # '}' (and has nothing for strip() to shift) is a wanted one; the rest go the long way.
        if line.endswith(b"}") and not line[:1].isspace():
            self._parse(path, lineno, line, sink)
        else:
            self.feed_line(path, lineno, line, sink)

    def _parse(self, path: Path, lineno: int, data: bytes, sink: Sink) -> None:
        try:
            parsed: object = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            sink.problem(ParseProblem(str(path), lineno, f"unparseable JSON: {exc}"))
            return
        obj = _obj(parsed)
        if obj is None:
            sink.problem(ParseProblem(str(path), lineno, "not a JSON object"))
            return
        payload = _obj(obj.get("payload"))
        if payload is None:
            return
        st = self._file(path)
        raw_ts = obj.get("timestamp")
        ts = _parse_ts(raw_ts)
        if ts is not None:
            st.last_ts = ts
        ctx = _Line(
            path=st.path,
            lineno=lineno,
            ts=ts,
            ts_key=raw_ts if isinstance(raw_ts, str) else f"line{lineno}",
            ordinal=_int(obj.get("ordinal")),
        )
        kind = obj.get("type")
        if kind == "response_item":
            if not st.region:  # copied history's tool calls are not this thread's
                st.tools.append(_tool_call(payload))
        elif kind == "session_meta":
            self._on_meta(st, payload, obj, ctx)
        elif kind == "turn_context":
            self._on_turn(st, payload, ctx)
        elif kind == "token_usage_record":
            self._on_record(st, payload, ctx, sink)
        elif kind == "event_msg":
            event = payload.get("type")
            if event == "token_count":
                self._on_token_count(st, payload, ctx, sink)
            elif event in ("task_complete", "error"):
                self._on_error(st, payload, ctx, sink)
            elif event == "task_started":
                self._turn_signal(st, payload, ctx)
            elif event == "thread_settings_applied":
                self._on_settings(st, payload, ctx)

    def _file(self, path: Path) -> _File:
        key = str(path)
        st = self._files.get(key)
        if st is None:
            match = _ROLLOUT_RE.search(path.name)
            name_thread = match.group(1).lower() if match else None
            stem = path.name.removesuffix(".zst").removesuffix(".jsonl")
            st = _File(path=key, thread=name_thread or stem, name_thread=name_thread)
            self._files[key] = st
        return st

    # --- copied history -----------------------------------------------------------------------

    def _explicit_copy(self, st: _File, ctx: _Line) -> bool | None:
        boundary = st.meta.boundary if st.meta is not None else None
        if boundary is None or ctx.ordinal is None:
            return None
        return ctx.ordinal < boundary

    def _arm(self, st: _File, ctx: _Line) -> None:
        if not st.region:
            # A thread whose own id is a UUIDv7 comes from a build that mints UUIDv7 turn ids
            # and writes a turn_context before any call of its own: only a proven own turn may
            # end the region, whatever the copy burst's timing (it can span seconds).
            structural = _uuid7_ms(st.thread) is not None
            st.region, st.region_structural, st.last_copy_ms = True, structural, None
            st.region_assumed = structural
        if ctx.ts is not None:
            st.last_copy_ms = ctx.ts * 1000.0

    def _own_turn(self, st: _File, payload: Mapping[str, object]) -> bool | None:
        """Whether a turn started at or after this thread's creation: None when unknowable."""
        created = st.meta.created_ms if st.meta is not None else None
        if created is None:
            return None
        minted = _uuid7_ms(_text(payload.get("turn_id")))
        if minted is not None:
            return minted >= created
        started = _num(payload.get("started_at"))
        if started is not None:
            started_ms = started if started > 1e11 else started * 1000.0
            return started_ms >= created - created % 1000.0  # seconds resolution
        return None

    def _turn_signal(self, st: _File, payload: Mapping[str, object], ctx: _Line) -> bool:
        """Let a turn_context/task_started end the copied region; True when it is a copy."""
        explicit = self._explicit_copy(st, ctx)
        if explicit is not None:
            if not explicit:
                st.region = False
            return explicit
        own = self._own_turn(st, payload)
        if own is None and st.region and st.region_assumed:
            # This build writes turns without turn ids after all: back to the timing rule.
            st.region_structural = st.region_assumed = False
        if own is None or not st.region:
            return False
        st.region_structural, st.region_assumed = True, False
        if own:
            st.region = False
        return not own

    def _row_copied(self, st: _File, ctx: _Line, *, may_end: bool) -> bool:
        """Whether a usage/limit row belongs to copied history."""
        explicit = self._explicit_copy(st, ctx)
        if explicit is not None:
            return explicit
        if not st.region:
            return False
        if st.region_structural:
            if may_end and ctx.ts is not None:
                st.last_copy_ms = ctx.ts * 1000.0  # the timing rule may take over later
            return True
        created = st.meta.created_ms if st.meta is not None else None
        if created is None or ctx.ts is None:
            copied = False  # no clock to judge by: fail open rather than drop the file
        else:
            ms = ctx.ts * 1000.0
            copied = ms <= created + FORK_BURST_WINDOW_MS or (
                st.last_copy_ms is not None and ms <= st.last_copy_ms + FORK_BURST_GAP_MS
            )
        if copied and may_end and ctx.ts is not None:
            st.last_copy_ms = ctx.ts * 1000.0
        elif not copied and may_end:
            st.region = False
        return copied

    # --- handlers -----------------------------------------------------------------------------

    def _on_meta(
        self, st: _File, payload: Mapping[str, object], line: Mapping[str, object], ctx: _Line
    ) -> None:
        meta = _parse_meta(payload, line)
        if meta is None:
            return
        if st.meta is None and (
            st.name_thread is None or meta.thread == st.name_thread or ctx.lineno == 1
        ):
            st.meta, st.thread, st.cwd = meta, meta.thread, meta.cwd
            st.metas[meta.thread] = meta
            if meta.lineage:
                self._arm(st, ctx)
            return
        if meta.thread == st.thread:
            return
        # Another thread's metadata: the head of history copied from an ancestor.
        st.metas.setdefault(meta.thread, meta)
        if self._explicit_copy(st, ctx) is not False:
            self._arm(st, ctx)

    def _on_turn(self, st: _File, payload: Mapping[str, object], ctx: _Line) -> None:
        copied = self._turn_signal(st, payload, ctx)
        model = _text(payload.get("model"))
        if copied:
            st.copy_model = model or st.copy_model
            return
        if model is not None:
            st.model = model
        cwd = _text(payload.get("cwd"))
        if cwd is not None:
            st.cwd = cwd

    def _on_settings(self, st: _File, payload: Mapping[str, object], ctx: _Line) -> None:
        owner = _text(payload.get("thread_id"))
        if owner not in (None, st.thread) or self._row_copied(st, ctx, may_end=False):
            return
        settings = _obj(payload.get("thread_settings"))
        if settings is not None:
            # A snapshot without a tier means standard processing from here on.
            st.thread_tier = _text(settings.get("service_tier"))

    def _on_token_count(
        self, st: _File, payload: Mapping[str, object], ctx: _Line, sink: Sink
    ) -> None:
        info = _obj(payload.get("info"))
        total = _Usage.parse(info.get("total_token_usage")) if info is not None else None
        last = _Usage.parse(info.get("last_token_usage")) if info is not None else None
        if self._row_copied(st, ctx, may_end=True):
            if total is not None and not total.is_fill():
                # The child inherits the parent's counters: its own deltas start from here.
                st.prev = total
                st.seen.add(total.key())
            sink.skip("codex-replayed-history")
            return
        if ctx.ts is not None and self.wants_quota_readings:
            reading = parse_rate_limits(payload.get("rate_limits"), ctx.ts)
            if reading is not None:
                for snapshot in st.limits.snapshots(
                    reading, ts=ctx.ts, ts_key=ctx.ts_key, thread=st.thread, origin=ctx.origin
                ):
                    sink.limit(snapshot)
        if info is None or (total is None and last is None):
            return  # `info: null`: a rate-limit refresh before any usage
        if total is not None and total.is_fill():
            sink.skip("codex-context-window-fill")
            return
        if last is not None and last.is_fill():
            last = None
        if total is None:
            assert last is not None
            # Oldest shape without totals: rebuild them so the id is still positional.
            total = last if st.prev is None else st.prev.plus(last)
        key = total.key()
        if key in st.seen:
            sink.skip("codex-unchanged-total")
            return
        st.seen.add(key)
        prev, st.prev = st.prev, total
        if prev is None:
            per: _Usage | None = last if last is not None else total
        elif total.covers(prev):
            per = total.minus(prev)
        else:
            per = last  # counters went down (reset/compaction): only `last` is trustworthy
        if per is None or per.is_zero():
            sink.skip("codex-no-tokens")
            return
        event_id = _cum_id(st.thread, total)
        call_key = per.call_key()
        for pending in reversed(st.records):
            if pending.event_id == event_id or pending.call_key == call_key:
                st.records.remove(pending)
                sink.skip("codex-same-response-as-record")
                return
        explicit_model = _text(payload.get("model")) or _text(info.get("model"))
        event = self._usage(
            st,
            event_id=event_id,
            revision=REV_TOKEN_COUNT,
            ctx=ctx,
            tokens=per.tokens(),
            model=explicit_model,
            tier=st.thread_tier,
            provider=None,
            sink=sink,
        )
        if event is not None:
            st.counts.append(_Pending(call_key, event_id, event))
            sink.usage(event)

    def _on_record(self, st: _File, payload: Mapping[str, object], ctx: _Line, sink: Sink) -> None:
        owner = _text(payload.get("thread_id"))
        explicit = self._explicit_copy(st, ctx)
        if owner is not None and owner != st.thread:
            copied = True
        elif explicit is not None:
            copied = explicit
        elif owner is not None:
            copied = False
            st.region = False  # a record of this very thread: its own work has begun
        else:
            copied = self._row_copied(st, ctx, may_end=False)
        usage = _Usage.parse(payload.get("usage"))
        if usage is None or usage.is_zero():
            return
        thread = owner or st.thread
        thread_total = _Usage.parse(payload.get("thread_token_usage"))
        response_id = _text(payload.get("response_id"))
        if thread_total is not None and not thread_total.is_zero():
            event_id = _cum_id(thread, thread_total)
        elif response_id is not None:
            event_id = f"codex:{thread}:resp:{response_id}"
        else:
            # completed_at_ms survives copying into forks; the line timestamp does not
            when = _int(payload.get("completed_at_ms"))
            stamp = str(when) if when is not None else ctx.ts_key
            event_id = f"codex:{thread}:at:{stamp}:" + "-".join(str(n) for n in usage.key())
        attribution = _obj(payload.get("attribution")) or {}
        model = _text(attribution.get("model")) or _text(payload.get("model"))
        tier = _text(attribution.get("service_tier")) or _text(payload.get("service_tier"))
        provider = _text(attribution.get("model_provider")) or _text(payload.get("model_provider"))
        if copied:
            if owner is None or owner == st.thread:
                sink.skip("codex-replayed-history")
                return
            self._emit_copy(st, payload, ctx, sink, event_id, usage, model, tier, provider, owner)
            return
        # Same response already counted from its token_count under another id: retract that.
        call_key = usage.call_key()
        match = next((p for p in reversed(st.counts) if p.event_id == event_id), None)
        if match is None:
            match = next((p for p in reversed(st.counts) if p.call_key == call_key), None)
        if match is not None:
            st.counts.remove(match)
            if match.event_id != event_id and match.event is not None:
                sink.usage(
                    msgspec.structs.replace(
                        match.event, revision=REV_RETRACTED, duplicate_of=event_id
                    )
                )
        else:
            st.records.append(_Pending(call_key, event_id, None))
        event = self._usage(
            st,
            event_id=event_id,
            revision=REV_RECORD,
            ctx=ctx,
            tokens=usage.tokens(),
            model=model,
            tier=tier or st.thread_tier,
            provider=provider,
            sink=sink,
        )
        if event is not None:
            if match is not None and match.event is not None and event.tool_calls is None:
                event = msgspec.structs.replace(
                    event, tool_calls=match.event.tool_calls
                )  # its calls' tools
            sink.usage(event)

    def _emit_copy(
        self,
        st: _File,
        payload: Mapping[str, object],
        ctx: _Line,
        sink: Sink,
        event_id: str,
        usage: _Usage,
        model: str | None,
        tier: str | None,
        provider: str | None,
        owner: str,
    ) -> None:
        """A record of another thread found in this rollout: that thread's call, low revision."""
        completed = _num(payload.get("completed_at_ms"))
        # Copies are re-stamped at fork time; the payload keeps the real completion time.
        ts = completed / 1000.0 if completed is not None else ctx.ts
        if ts is None:
            ts = st.last_ts
        if ts is None:
            sink.problem(ParseProblem(ctx.path, ctx.lineno, "token_usage_record without time"))
            return
        meta = st.metas.get(owner) or _Meta(thread=owner, cwd=st.cwd)
        sink.usage(
            UsageEvent(
                event_id=event_id,
                ts=ts,
                agent=Agent.CODEX,
                model=self._model(st, model or st.copy_model, ts, ctx, sink),
                tokens=usage.tokens(),
                session_id=owner,
                revision=REV_RECORD_COPY,
                role=meta.role,
                parent_session_id=meta.parent,
                subagent_id=meta.subagent_id,
                provider=provider or meta.provider,
                project=meta.cwd,
                git_branch=meta.git_branch,
                git_repo=meta.git_repo,
                service_tier=tier,
                agent_version=meta.version,
                origin=ctx.origin,
            )
        )

    def _on_error(self, st: _File, payload: Mapping[str, object], ctx: _Line, sink: Sink) -> None:
        message = usage_limit_message(payload)
        if message is None or self._row_copied(st, ctx, may_end=False):
            return
        ts = ctx.ts if ctx.ts is not None else st.last_ts
        if ts is None:
            sink.problem(ParseProblem(ctx.path, ctx.lineno, "usage-limit error without time"))
            return
        sink.limit(
            st.limits.hit(message, ts=ts, ts_key=ctx.ts_key, thread=st.thread, origin=ctx.origin)
        )

    # --- events -------------------------------------------------------------------------------

    def _model(self, st: _File, model: str | None, ts: float, ctx: _Line, sink: Sink) -> str:
        if model:
            return model  # "codex-auto-review" included: a label pricing shows as unknown
        if ts < EARLY_FALLBACK_UNTIL:
            label, why = EARLY_FALLBACK_MODEL, "assumed gpt-5 (builds before Oct 2025)"
        else:
            label, why = UNKNOWN_MODEL, f"reported as {UNKNOWN_MODEL}"
        if not st.model_noted:
            st.model_noted = True
            sink.problem(ParseProblem(ctx.path, ctx.lineno, f"no model logged; {why}"))
        return label

    def _usage(
        self,
        st: _File,
        *,
        event_id: str,
        revision: int,
        ctx: _Line,
        tokens: Tokens,
        model: str | None,
        tier: str | None,
        provider: str | None,
        sink: Sink,
    ) -> UsageEvent | None:
        ts = ctx.ts if ctx.ts is not None else st.last_ts
        if ts is None:
            sink.problem(ParseProblem(ctx.path, ctx.lineno, "usage line without timestamp"))
            return None
        meta = st.meta or _Meta(thread=st.thread)
        tools, st.tools = ",".join(st.tools) or None, []
        return UsageEvent(
            event_id=event_id,
            ts=ts,
            agent=Agent.CODEX,
            model=self._model(st, model or st.model, ts, ctx, sink),
            tokens=tokens,
            session_id=st.thread,
            revision=revision,
            role=meta.role,
            parent_session_id=meta.parent,
            subagent_id=meta.subagent_id,
            provider=provider or meta.provider,
            project=st.cwd,
            git_branch=meta.git_branch,
            git_repo=meta.git_repo,
            service_tier=tier,
            agent_version=meta.version,
            origin=ctx.origin,
            tool_calls=tools,
        )


def _tool_call(payload: Mapping[str, object]) -> str:
    """A response item's tool call as "name:hash" (the hub's retry-loop signature, as Claude
    Code's tool uses): 12 hex digits of SHA-256 of its arguments, which are never sent."""
    name = _text(payload.get("name")) or _text(payload.get("type")) or "?"
    arguments = payload.get("arguments", payload.get("input", payload.get("action")))
    blob = (
        arguments
        if isinstance(arguments, str)
        else orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS)
    )
    data = blob.encode() if isinstance(blob, str) else blob
    return f"{name}:{hashlib.sha256(data).hexdigest()[:12]}"
