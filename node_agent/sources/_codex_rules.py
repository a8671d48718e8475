"""The reading rules of one Codex rollout: copied history, per-call usage, pairing, events.

The rules are written once, on plain values: the line readers (`_codex_lines`, typed or checked)
hand them what they read. `node_agent.sources.codex` states the rules in its module doc.
The line being read lives in the file's state (`FileState.begin`), so no object is made per line.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

import msgspec

from node_agent.sources._codex_limits import LimitTracker, parse_rate_limits
from node_agent.sources._codex_lines import Usage
from node_agent.sources._codex_meta import Meta, obj, parse_meta, uuid7_ms
from node_agent.sources._values import text as _text
from node_agent.sources.base import ParseProblem, Sink
from shared.events import Agent, Tokens, UsageEvent

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
PAIR_WINDOW: Final = 8  # a record sits next to its token_count; a few rows of slack


def cum_id(thread: str, usage: Usage) -> str:
    """A call's id: its thread and the thread's cumulative usage after it (cache writes left
    out: older token_count totals lack the field while records have it)."""
    inp, cached, _, out, reasoning, total = usage
    return f"codex:{thread}:cum:{inp}-{cached}-{out}-{reasoning}-{total}"


class Pending(msgspec.Struct, gc=False):
    call_key: tuple[int, int, int, int]
    event_id: str
    event: UsageEvent | None  # the emitted token_count event, to retract it


def _window() -> deque[Pending]:
    return deque(maxlen=PAIR_WINDOW)


class FileState(msgspec.Struct):
    """What the rules know of one rollout, and the line being read."""

    path: str
    thread: str  # own thread id: the filename's until the first session_meta says otherwise
    name_thread: str | None
    meta: Meta | None = None
    metas: dict[str, Meta] = msgspec.field(default_factory=dict)
    region: bool = False  # inside copied history (heuristic rule)
    region_structural: bool = False  # turn ids seen in the region: only they may end it
    region_assumed: bool = False  # structural only because the thread id is a UUIDv7
    last_copy_ms: float | None = None
    model: str | None = None
    copy_model: str | None = None
    cwd: str | None = None
    thread_tier: str | None = None
    prev: Usage | None = None
    seen: set[tuple[int, int, int, int, int]] = msgspec.field(default_factory=set)
    counts: deque[Pending] = msgspec.field(default_factory=_window)
    records: deque[Pending] = msgspec.field(default_factory=_window)
    limits: LimitTracker = msgspec.field(default_factory=LimitTracker)
    last_ts: float | None = None
    model_noted: bool = False
    tools: list[str] = msgspec.field(default_factory=list)  # tool calls since the last usage
    # The line being read: its number, time (and the time as logged), ordinal.
    lineno: int = 0
    ts: float | None = None
    raw_ts: str | None = None
    ordinal: int | None = None

    def begin(self, lineno: int, ts: float | None, raw_ts: str | None, ordinal: int | None) -> None:
        self.lineno, self.ts, self.raw_ts, self.ordinal = lineno, ts, raw_ts, ordinal
        if ts is not None:
            self.last_ts = ts

    @property
    def ts_key(self) -> str:
        """The line's time as logged (ids use it as written), else its line number."""
        return self.raw_ts if self.raw_ts is not None else f"line{self.lineno}"

    @property
    def origin(self) -> str:
        return f"{self.path}:{self.lineno}"

    def problem(self, reason: str) -> ParseProblem:
        return ParseProblem(self.path, self.lineno, reason)


# --- copied history ---------------------------------------------------------------------------


def explicit_copy(st: FileState) -> bool | None:
    boundary = st.meta.boundary if st.meta is not None else None
    if boundary is None or st.ordinal is None:
        return None
    return st.ordinal < boundary


def _arm(st: FileState) -> None:
    if not st.region:
        # A thread whose own id is a UUIDv7 comes from a build that mints UUIDv7 turn ids
        # and writes a turn_context before any call of its own: only a proven own turn may
        # end the region, whatever the copy burst's timing (it can span seconds).
        structural = uuid7_ms(st.thread) is not None
        st.region, st.region_structural, st.last_copy_ms = True, structural, None
        st.region_assumed = structural
    if st.ts is not None:
        st.last_copy_ms = st.ts * 1000.0


def _own_turn(st: FileState, turn_id: str | None, started: float | None) -> bool | None:
    """Whether a turn started at or after this thread's creation: None when unknowable."""
    created = st.meta.created_ms if st.meta is not None else None
    if created is None:
        return None
    minted = uuid7_ms(turn_id)
    if minted is not None:
        return minted >= created
    if started is not None:
        started_ms = started if started > 1e11 else started * 1000.0
        return started_ms >= created - created % 1000.0  # seconds resolution
    return None


def turn_signal(st: FileState, turn_id: str | None, started: float | None) -> bool:
    """Let a turn_context/task_started end the copied region; True when it is a copy."""
    explicit = explicit_copy(st)
    if explicit is not None:
        if not explicit:
            st.region = False
        return explicit
    own = _own_turn(st, turn_id, started)
    if own is None and st.region and st.region_assumed:
        # This build writes turns without turn ids after all: back to the timing rule.
        st.region_structural = st.region_assumed = False
    if own is None or not st.region:
        return False
    st.region_structural, st.region_assumed = True, False
    if own:
        st.region = False
    return not own


def row_copied(st: FileState, *, may_end: bool) -> bool:
    """Whether a usage/limit row belongs to copied history."""
    explicit = explicit_copy(st)
    if explicit is not None:
        return explicit
    if not st.region:
        return False
    ts = st.ts
    if st.region_structural:
        if may_end and ts is not None:
            st.last_copy_ms = ts * 1000.0  # the timing rule may take over later
        return True
    created = st.meta.created_ms if st.meta is not None else None
    if created is None or ts is None:
        copied = False  # no clock to judge by: fail open rather than drop the file
    else:
        ms = ts * 1000.0
        copied = ms <= created + FORK_BURST_WINDOW_MS or (
            st.last_copy_ms is not None and ms <= st.last_copy_ms + FORK_BURST_GAP_MS
        )
    if copied and may_end and ts is not None:
        st.last_copy_ms = ts * 1000.0
    elif not copied and may_end:
        st.region = False
    return copied


# --- lines ------------------------------------------------------------------------------------


def on_meta(st: FileState, payload: Mapping[str, object], line: Mapping[str, object]) -> None:
    meta = parse_meta(payload, line)
    if meta is None:
        return
    if st.meta is None and (
        st.name_thread is None or meta.thread == st.name_thread or st.lineno == 1
    ):
        st.meta, st.thread, st.cwd = meta, meta.thread, meta.cwd
        st.metas[meta.thread] = meta
        if meta.lineage:
            _arm(st)
        return
    if meta.thread == st.thread:
        return
    # Another thread's metadata: the head of history copied from an ancestor.
    st.metas.setdefault(meta.thread, meta)
    if explicit_copy(st) is not False:
        _arm(st)


def on_turn(
    st: FileState, turn_id: str | None, started: float | None, model: str | None, cwd: str | None
) -> None:
    if turn_signal(st, turn_id, started):
        st.copy_model = model or st.copy_model
        return
    if model is not None:
        st.model = model
    if cwd is not None:
        st.cwd = cwd


def on_settings(st: FileState, payload: Mapping[str, object]) -> None:
    owner = _text(payload.get("thread_id"))
    if owner not in (None, st.thread) or row_copied(st, may_end=False):
        return
    settings = obj(payload.get("thread_settings"))
    if settings is not None:
        # A snapshot without a tier means standard processing from here on.
        st.thread_tier = _text(settings.get("service_tier"))


def on_token_count(
    st: FileState,
    has_info: bool,
    total: Usage | None,
    last: Usage | None,
    model: str | None,
    rate_limits: object,
    quota: bool,
    sink: Sink,
) -> None:
    """An `event_msg`/`token_count`: `total` and `last` as read from its `info` (`has_info`:
    there was one), `model` the one it names, `rate_limits` as logged (read only with `quota`)."""
    if row_copied(st, may_end=True):
        if total is not None and not total.is_fill():
            # The child inherits the parent's counters: its own deltas start from here.
            st.prev = total
            st.seen.add(total.key())
        sink.skip("codex-replayed-history")
        return
    ts = st.ts
    if ts is not None and quota:
        reading = parse_rate_limits(rate_limits, ts)
        if reading is not None:
            for snapshot in st.limits.snapshots(
                reading, ts=ts, ts_key=st.ts_key, thread=st.thread, origin=st.origin
            ):
                sink.limit(snapshot)
    if not has_info or (total is None and last is None):
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
        per: Usage | None = last if last is not None else total
    elif total.covers(prev):
        per = total.minus(prev)
    else:
        per = last  # counters went down (reset/compaction): only `last` is trustworthy
    if per is None or per.is_zero():
        sink.skip("codex-no-tokens")
        return
    event_id = cum_id(st.thread, total)
    call_key = per.call_key()
    for pending in reversed(st.records):
        if pending.event_id == event_id or pending.call_key == call_key:
            st.records.remove(pending)
            sink.skip("codex-same-response-as-record")
            return
    event = _usage(st, event_id, REV_TOKEN_COUNT, per.tokens(), model, st.thread_tier, None, sink)
    if event is not None:
        st.counts.append(Pending(call_key, event_id, event))
        sink.usage(event)


def on_record(
    st: FileState,
    owner: str | None,
    usage: Usage | None,
    thread_total: Usage | None,
    response_id: str | None,
    completed_id: int | None,
    completed_at: float | int | None,
    attributed: tuple[str | None, str | None, str | None],
    sink: Sink,
) -> None:
    """A `token_usage_record`: its thread, usage, thread totals and response id as read;
    `completed_at_ms` as an id part (an integer) and as a time (any number); (model, service
    tier, provider), each from `attribution`, else from the payload."""
    explicit = explicit_copy(st)
    if owner is not None and owner != st.thread:
        copied = True
    elif explicit is not None:
        copied = explicit
    elif owner is not None:
        copied = False
        st.region = False  # a record of this very thread: its own work has begun
    else:
        copied = row_copied(st, may_end=False)
    if usage is None or usage.is_zero():
        return
    thread = owner or st.thread
    if thread_total is not None and not thread_total.is_zero():
        event_id = cum_id(thread, thread_total)
    elif response_id is not None:
        event_id = f"codex:{thread}:resp:{response_id}"
    else:
        # completed_at_ms survives copying into forks; the line timestamp does not
        stamp = str(completed_id) if completed_id is not None else st.ts_key
        event_id = f"codex:{thread}:at:{stamp}:" + "-".join(str(n) for n in usage.key())
    model, tier, provider = attributed
    if copied:
        if owner is None or owner == st.thread:
            sink.skip("codex-replayed-history")
            return
        _emit_copy(st, completed_at, sink, event_id, usage, attributed, owner)
        return
    # Same response already counted from its token_count under another id: retract that.
    call_key = usage.call_key()
    match = _pending_of(st.counts, event_id, call_key)
    if match is not None:
        st.counts.remove(match)
        if match.event_id != event_id and match.event is not None:
            sink.usage(
                msgspec.structs.replace(match.event, revision=REV_RETRACTED, duplicate_of=event_id)
            )
    else:
        st.records.append(Pending(call_key, event_id, None))
    tools = match.event.tool_calls if match is not None and match.event is not None else None
    event = _usage(
        st,
        event_id,
        REV_RECORD,
        usage.tokens(),
        model,
        tier or st.thread_tier,
        provider,
        sink,
        tools,
    )
    if event is not None:
        sink.usage(event)


def _pending_of(
    window: deque[Pending], event_id: str, call_key: tuple[int, int, int, int]
) -> Pending | None:
    """The latest pending of `window` with this event id, else the latest with this call key.
    (Loops, not generators: this runs for every record.)"""
    for pending in reversed(window):
        if pending.event_id == event_id:
            return pending
    for pending in reversed(window):
        if pending.call_key == call_key:
            return pending
    return None


def _emit_copy(
    st: FileState,
    completed_at: float | int | None,
    sink: Sink,
    event_id: str,
    usage: Usage,
    attributed: tuple[str | None, str | None, str | None],
    owner: str,
) -> None:
    """A record of another thread found in this rollout: that thread's call, low revision."""
    model, tier, provider = attributed
    # Copies are re-stamped at fork time; the payload keeps the real completion time.
    ts = completed_at / 1000.0 if completed_at is not None else st.ts
    if ts is None:
        ts = st.last_ts
    if ts is None:
        sink.problem(st.problem("token_usage_record without time"))
        return
    meta = st.metas.get(owner) or Meta(thread=owner, cwd=st.cwd)
    sink.usage(
        UsageEvent(
            event_id=event_id,
            ts=ts,
            agent=Agent.CODEX,
            model=_model(st, model or st.copy_model, ts, sink),
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
            origin=st.origin,
        )
    )


def on_limit_error(st: FileState, message: str | None, sink: Sink) -> None:
    """A usage-limit refusal (`message`: its text; None when the event is none)."""
    if message is None or row_copied(st, may_end=False):
        return
    ts = st.ts if st.ts is not None else st.last_ts
    if ts is None:
        sink.problem(st.problem("usage-limit error without time"))
        return
    sink.limit(st.limits.hit(message, ts=ts, ts_key=st.ts_key, thread=st.thread, origin=st.origin))


# --- events -----------------------------------------------------------------------------------


def _model(st: FileState, model: str | None, ts: float, sink: Sink) -> str:
    if model:
        return model  # "codex-auto-review" included: a label pricing shows as unknown
    if ts < EARLY_FALLBACK_UNTIL:
        label, why = EARLY_FALLBACK_MODEL, "assumed gpt-5 (builds before Oct 2025)"
    else:
        label, why = UNKNOWN_MODEL, f"reported as {UNKNOWN_MODEL}"
    if not st.model_noted:
        st.model_noted = True
        sink.problem(st.problem(f"no model logged; {why}"))
    return label


def _usage(
    st: FileState,
    event_id: str,
    revision: int,
    tokens: Tokens,
    model: str | None,
    tier: str | None,
    provider: str | None,
    sink: Sink,
    matched_tools: str | None = None,
) -> UsageEvent | None:
    """The event of this thread's own call; `matched_tools`: the tool calls of the token_count
    a record supersedes, when the record's own line has none."""
    ts = st.ts if st.ts is not None else st.last_ts
    if ts is None:
        sink.problem(st.problem("usage line without timestamp"))
        return None
    meta = st.meta or Meta(thread=st.thread)
    tools = None
    if st.tools:  # (most calls ask for none: no new list for them)
        tools, st.tools = ",".join(st.tools), []
    return UsageEvent(
        event_id=event_id,
        ts=ts,
        agent=Agent.CODEX,
        model=_model(st, model or st.model, ts, sink),
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
        origin=st.origin,
        tool_calls=tools or matched_tools,
    )
