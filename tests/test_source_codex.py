"""Codex rollouts: hand-written lines that follow research/log-formats.md §2, in real files."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard

from node_agent.sources import _codex_lines
from node_agent.sources.base import Collector, FileKind
from node_agent.sources.codex import EARLY_FALLBACK_MODEL, UNKNOWN_MODEL, CodexSource
from shared.events import LimitKind, LimitWindow, Role, Tokens, UsageEvent

T0 = datetime(2026, 9, 10, 8, 0, tzinfo=UTC)
_tails = itertools.count(1)


# --- line builders ----------------------------------------------------------------------------


def uuid7(at: datetime) -> str:
    """A UUIDv7 minted at `at`, as Codex mints thread and turn ids."""
    ms = f"{int(at.timestamp() * 1000):012x}"
    tail = f"{next(_tails):015x}"
    return f"{ms[:8]}-{ms[8:]}-7{tail[:3]}-8{tail[3:6]}-{tail[6:]}000"


def sec(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def line(at: datetime, kind: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"timestamp": iso(at)}
    out.update(extra)  # e.g. ordinal, which Codex writes between timestamp and type
    out["type"] = kind
    out["payload"] = payload
    return out


def usage(inp: int, cached: int, out: int, reasoning: int, cw: int | None = None) -> dict[str, int]:
    u = {
        "input_tokens": inp,
        "cached_input_tokens": cached,
        "output_tokens": out,
        "reasoning_output_tokens": reasoning,
        "total_tokens": inp + out,
    }
    if cw is not None:
        u["cache_write_input_tokens"] = cw
    return u


def add(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in a.keys() | b.keys()}


def meta(
    at: datetime, thread: str, *, source: Any = "cli", thread_source: str = "user", **extra: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": thread,
        "timestamp": iso(at),
        "cwd": "/home/dev/acme-api",
        "originator": "codex-tui",
        "cli_version": "0.150.2",
        "source": source,
        "thread_source": thread_source,
        "model_provider": "openai",
        "git": {
            "commit_hash": "9f3c2ab",
            "branch": "main",
            "repository_url": "git@github.com:acme/acme-api.git",
        },
    }
    payload.update(extra)
    return line(at, "session_meta", payload)


def turn(at: datetime, model: str = "gpt-5.5", turn_id: str | None = None) -> dict[str, Any]:
    payload: dict[str, Any] = {"cwd": "/home/dev/acme-api", "model": model, "effort": "high"}
    if turn_id is not None:
        payload["turn_id"] = turn_id
    return line(at, "turn_context", payload)


RL: dict[str, Any] = {
    "limit_id": "codex",
    "limit_name": None,
    "primary": {"used_percent": 12.0, "window_minutes": 300, "resets_at": 1789030800},
    "secondary": {"used_percent": 41.0, "window_minutes": 10080, "resets_at": 1789400000},
    "credits": None,
    "plan_type": "plus",
    "rate_limit_reached_type": None,
}


def token_count(
    at: datetime,
    total: dict[str, int] | None,
    last: dict[str, int] | None,
    rate_limits: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    info = None
    if total is not None or last is not None:
        info = {
            "total_token_usage": total,
            "last_token_usage": last,
            "model_context_window": 258400,
        }
    return line(
        at, "event_msg", {"type": "token_count", "info": info, "rate_limits": rate_limits}, **extra
    )


class Counter:
    """Codex's cumulative counter: each call adds `last` into `total` (append_last_usage)."""

    def __init__(self, start: dict[str, int] | None = None) -> None:
        self.total = dict(start) if start else usage(0, 0, 0, 0)
        self.last = usage(0, 0, 0, 0)

    def call(
        self, at: datetime, u: dict[str, int], rate_limits: Any = None, **extra: Any
    ) -> dict[str, Any]:
        self.total, self.last = add(self.total, u), u
        return token_count(at, dict(self.total), dict(u), rate_limits, **extra)

    def refresh(self, at: datetime, rate_limits: Any = None) -> dict[str, Any]:
        """A rate-limit refresh: the same info again."""
        return token_count(at, dict(self.total), dict(self.last), rate_limits)


def record(
    at: datetime,
    thread: str,
    response_id: str,
    u: dict[str, int],
    thread_total: dict[str, int] | None,
    *,
    model: str = "gpt-5.5",
    tier: str | None = "default",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "thread_id": thread,
        "turn_id": "t",
        "response_id": response_id,
        "usage": u,
        "turn_token_usage": thread_total,
        "thread_token_usage": thread_total,
        "attribution": {
            "model": model,
            "model_provider": "openai",
            "service_tier": tier,
            "context_length": None,
        },
        "completed_at_ms": int(at.timestamp() * 1000),
    }
    return line(at, "token_usage_record", payload)


def write(path: Path, lines: Iterable[dict[str, Any] | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = bytearray()
    for item in lines:
        out += item if isinstance(item, bytes) else orjson.dumps(item)
        out += b"\n"
    path.write_bytes(bytes(out))
    return path


def rollout(home: Path, thread: str, at: datetime, tree: str = "sessions") -> Path:
    name = f"rollout-{at.strftime('%Y-%m-%dT%H-%M-%S')}-{thread}.jsonl"
    if tree == "sessions":
        return home / "sessions" / at.strftime("%Y/%m/%d") / name
    return home / tree / name


# --- reading, the way the lead's scanner does -------------------------------------------------


def feed(source: CodexSource, path: Path, sink: Collector | None = None) -> Collector:
    sink = sink if sink is not None else Collector()
    if path.name.endswith(".zst"):
        with path.open("rb") as fh:
            data = zstandard.ZstdDecompressor().stream_reader(fh).read()
    else:
        data = path.read_bytes()
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if raw:
            source.feed_line(path, lineno, raw, sink)
    return sink


def read_all(paths: Sequence[Path]) -> Collector:
    source, sink = CodexSource(), Collector()
    for p in paths:
        feed(source, p, sink)
    return sink


def counted(sink: Collector) -> list[UsageEvent]:
    return sorted(sink.events.counted_usage(), key=lambda e: (e.ts, e.event_id))


def total_tokens(sink: Collector) -> Tokens:
    out = Tokens()
    for e in sink.events.counted_usage():
        out = out + e.tokens
    return out


def split(u: dict[str, int]) -> Tokens:
    """The disjoint buckets of a Codex usage object, computed independently of the source."""
    cw = u.get("cache_write_input_tokens", 0)
    return Tokens(
        input=u["input_tokens"] - u["cached_input_tokens"] - cw,
        output=u["output_tokens"] - u["reasoning_output_tokens"],
        cache_read=u["cached_input_tokens"],
        cache_write_5m=cw,
        reasoning=u["reasoning_output_tokens"],
    )


def sum_tokens(us: Iterable[dict[str, int]]) -> Tokens:
    out = Tokens()
    for u in us:
        out = out + split(u)
    return out


# --- per-call usage ---------------------------------------------------------------------------


def test_record_era_file(tmp_path: Path) -> None:
    thread = uuid7(T0)
    u1 = usage(27110, 23040, 401, 256, cw=0)
    u2 = usage(30000, 20000, 1000, 300, cw=5000)
    path = write(
        rollout(tmp_path, thread, T0),
        [
            meta(T0, thread),
            turn(T0 + timedelta(seconds=1), model="gpt-5.4"),
            record(T0 + timedelta(seconds=9), thread, "resp_1", u1, u1, model="gpt-5.5"),
            record(T0 + timedelta(seconds=20), thread, "resp_2", u2, add(u1, u2), tier="priority"),
        ],
    )
    sink = read_all([path])
    events = counted(sink)
    assert [e.tokens for e in events] == [split(u1), split(u2)]
    first, second = events
    # cached and cache writes sit inside input, reasoning inside output
    assert first.tokens == Tokens(input=4070, output=145, cache_read=23040, reasoning=256)
    assert second.tokens.cache_write_5m == 5000 and second.tokens.input == 5000
    assert not second.cache_write_unsplit
    assert first.model == "gpt-5.5"  # the record's attribution wins over turn_context
    assert (first.service_tier, second.service_tier) == ("default", "priority")
    assert first.revision == 2
    assert first.session_id == thread and first.role is Role.MAIN
    assert first.project == "/home/dev/acme-api"
    assert first.git_branch == "main" and first.git_repo == "git@github.com:acme/acme-api.git"
    assert first.agent_version == "0.150.2" and first.provider == "openai"
    assert first.origin == f"{path}:3"
    assert first.ts == (T0 + timedelta(seconds=9)).timestamp()
    assert sink.problems == []
    # same ids and content on every re-read
    again = read_all([path])
    assert again.events.usage == sink.events.usage


def test_legacy_token_counts_use_deltas_of_totals(tmp_path: Path) -> None:
    thread = uuid7(T0)
    c = Counter()
    u1, u2, u3 = usage(1000, 800, 50, 20), usage(2000, 1500, 100, 40), usage(3000, 2500, 60, 10)
    window = 258400
    fill_total = {
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "output_tokens": 0,
        "reasoning_output_tokens": 0,
        "total_tokens": window,
    }
    fill_last = dict(fill_total, total_tokens=window - 3150)
    after_fill = add(fill_total, u3)  # upstream appends the next call onto the filled total
    compacted = usage(500, 0, 20, 0)  # counters reset: lower than before
    u5 = usage(1000, 900, 30, 5)
    lines = [
        meta(T0, thread),
        turn(sec(1)),
        token_count(sec(2), None, None, RL),  # info: null on the thread's first event
        c.call(sec(10), u1, RL),
        c.refresh(sec(11), RL),  # rate-limit refresh: unchanged totals
        c.call(sec(20), u2, RL),
        token_count(sec(21), fill_total, fill_last),  # context-window recompute
        token_count(sec(30), after_fill, u3),
        token_count(sec(40), compacted, compacted),  # decrease: fall back to last_token_usage
        token_count(sec(50), add(compacted, u5), u5),
        token_count(sec(51), c.total, c.last),  # a stale re-emission of an older state
    ]
    path = write(rollout(tmp_path, thread, T0), lines)
    sink = read_all([path])
    events = counted(sink)
    assert [e.tokens for e in events] == [split(u) for u in (u1, u2, u3, compacted, u5)]
    assert [e.origin.rsplit(":", 1)[1] for e in events] == ["4", "6", "8", "9", "10"]
    assert all(e.revision == 0 and e.model == "gpt-5.5" for e in events)
    assert sink.skipped["codex-unchanged-total"] == 2
    assert sink.skipped["codex-context-window-fill"] == 1
    # summing last_token_usage of every row would have counted u1 twice and u2 twice
    assert total_tokens(sink) == sum_tokens([u1, u2, u3, compacted, u5])
    assert len({e.event_id for e in events}) == 5


def test_delta_of_totals_covers_a_call_whose_row_is_missing(tmp_path: Path) -> None:
    """Totals are the ledger: a call without its own token_count row still counts."""
    thread = uuid7(T0)
    c = Counter()
    u1, lost, u3 = usage(1000, 0, 10, 0), usage(2000, 1000, 20, 5), usage(3000, 2000, 30, 5)
    first = c.call(T0 + timedelta(seconds=1), u1)
    c.call(T0 + timedelta(seconds=2), lost)  # never written (crash between response and row)
    third = c.call(T0 + timedelta(seconds=3), u3)
    sink = read_all(
        [write(rollout(tmp_path, thread, T0), [meta(T0, thread), turn(T0), first, third])]
    )
    assert total_tokens(sink) == sum_tokens([u1, lost, u3])


def test_first_row_of_a_file_counts_only_its_last_usage(tmp_path: Path) -> None:
    """A later page (or a resumed read) starts with totals that include earlier calls."""
    thread = uuid7(T0)
    earlier = usage(90000, 80000, 3000, 1000)
    u = usage(5000, 4000, 200, 50)
    path = write(
        rollout(tmp_path, thread, T0),
        [meta(T0, thread), turn(T0), token_count(T0 + timedelta(seconds=5), add(earlier, u), u)],
    )
    assert [e.tokens for e in counted(read_all([path]))] == [split(u)]


def test_records_and_token_counts_of_the_same_responses_count_once(tmp_path: Path) -> None:
    thread = uuid7(T0)
    c = Counter()
    u1, u2, u3, u4 = (usage(1000 * k, 500 * k, 40 * k, 10 * k) for k in (1, 2, 3, 4))
    tc1 = c.call(sec(10), u1)
    tc2 = c.call(sec(20), u2)
    t2 = dict(c.total)
    tc3 = c.call(sec(30), u3)
    skewed = dict(c.total, cached_input_tokens=c.total["cached_input_tokens"] + 7)
    tc4 = c.call(sec(40), u4)  # e.g. a compaction call: no record
    lines = [
        meta(T0, thread),
        turn(sec(1)),
        tc1,
        record(sec(10), thread, "resp_1", u1, u1),  # token_count first, same cumulative
        record(sec(20), thread, "resp_2", u2, t2),  # record first
        tc2,
        tc3,
        record(sec(30), thread, "resp_3", u3, skewed),  # thread totals disagree: paired by usage
        tc4,
    ]
    sink = read_all([write(rollout(tmp_path, thread, T0), lines)])
    events = counted(sink)
    assert [e.tokens for e in events] == [split(u) for u in (u1, u2, u3, u4)]
    assert [e.revision for e in events] == [2, 2, 2, 0]
    retracted = [e for e in sink.events.usage.values() if not e.counts]
    assert len(retracted) == 1 and retracted[0].duplicate_of == events[2].event_id
    assert retracted[0].origin.endswith(":7")
    assert total_tokens(sink) == sum_tokens([u1, u2, u3, u4])


# --- forks and subagents ----------------------------------------------------------------------


def _parent(
    tmp_path: Path,
) -> tuple[str, Path, list[dict[str, Any]], list[dict[str, int]], Counter]:
    """A parent thread with two turns and four calls; returns its lines for copying."""
    parent = uuid7(T0)
    c = Counter()
    calls = [usage(10000 * k, 8000 * k, 300 * k, 100 * k) for k in (1, 2, 3, 4)]
    lines = [
        meta(T0, parent),
        turn(sec(1), turn_id=uuid7(sec(1))),
        c.call(sec(10), calls[0], RL),
        c.refresh(sec(11), RL),
        c.call(sec(20), calls[1], RL),
        c.call(sec(30), calls[2], RL),
        turn(sec(40), turn_id=uuid7(sec(40))),
        c.call(sec(50), calls[3], RL),
    ]
    return parent, write(rollout(tmp_path, parent, T0), lines), lines, calls, c


def _restamp(
    lines: Sequence[dict[str, Any]], start: datetime, step: timedelta
) -> list[dict[str, Any]]:
    """Copy lines as Codex does at fork time: same payloads, new timestamps."""
    return [dict(ln, timestamp=iso(start + step * i)) for i, ln in enumerate(lines)]


def _fork(
    tmp_path: Path,
    parent_lines: Sequence[dict[str, Any]],
    parent: str,
    counter: Counter,
    fork_at: datetime,
    own_calls: Sequence[dict[str, int]],
    *,
    spawn: bool = False,
    copy_step: timedelta = timedelta(milliseconds=700),
) -> tuple[str, Path]:
    child = uuid7(fork_at)
    if spawn:
        head = meta(
            fork_at,
            child,
            source={
                "subagent": {
                    "thread_spawn": {
                        "parent_thread_id": parent,
                        "depth": 1,
                        "agent_path": "/root/explorer",
                        "agent_nickname": "Popper",
                        "agent_role": "explorer",
                    }
                }
            },
            thread_source="subagent",
        )
    else:
        head = meta(fork_at, child, forked_from_id=parent)
    # The copy spans several seconds here (ccusage #1460): the turn ids, not the clock, end it.
    copy = _restamp(parent_lines, fork_at + timedelta(milliseconds=1), copy_step)
    own = Counter(counter.total)
    lines = [head, *copy]
    at = fork_at + timedelta(seconds=30)
    lines.append(turn(at, model="gpt-5.4", turn_id=uuid7(at)))
    for i, u in enumerate(own_calls):
        lines.append(own.call(at + timedelta(seconds=10 * (i + 1)), u, RL))
    return child, write(rollout(tmp_path, child, fork_at), lines)


def test_forked_child_does_not_count_replayed_parent_rows(tmp_path: Path) -> None:
    parent, parent_path, parent_lines, calls, c = _parent(tmp_path)
    fork_at = T0 + timedelta(hours=2)
    own = [usage(50000, 45000, 700, 200), usage(52000, 50000, 300, 0)]
    child, child_path = _fork(tmp_path, parent_lines, parent, c, fork_at, own)

    alone = read_all([child_path])  # parent's file absent
    events = counted(alone)
    assert [e.tokens for e in events] == [split(u) for u in own]
    assert all(e.session_id == child and e.model == "gpt-5.4" for e in events)
    assert events[0].role is Role.MAIN and events[0].parent_session_id == parent
    assert alone.skipped["codex-replayed-history"] == 5  # every copied token_count row
    # copied rate limits are the parent's old readings: only the child's own rows report
    assert {ev.origin.rsplit(":", 1)[0] for ev in alone.events.limits.values()} == {str(child_path)}
    assert (
        min(ev.ts for ev in alone.events.limits.values())
        >= (fork_at + timedelta(seconds=30)).timestamp()
    )

    for order in ([parent_path, child_path], [child_path, parent_path]):
        both = read_all(order)
        assert total_tokens(both) == sum_tokens([*calls, *own])
        assert len(both.events.counted_usage()) == 6


def test_spawned_subagent_is_attributed_to_its_parent(tmp_path: Path) -> None:
    parent, parent_path, parent_lines, calls, c = _parent(tmp_path)
    own = [usage(20000, 0, 900, 600)]
    child, child_path = _fork(
        tmp_path, parent_lines, parent, c, T0 + timedelta(minutes=1), own, spawn=True
    )
    sink = read_all([parent_path, child_path])
    mine = [e for e in counted(sink) if e.session_id == child]
    assert [e.tokens for e in mine] == [split(own[0])]
    assert mine[0].role is Role.SUBAGENT
    assert mine[0].parent_session_id == parent
    assert mine[0].subagent_id == "/root/explorer"
    assert total_tokens(sink) == sum_tokens([*calls, *own])


def test_sibling_forks_each_count_only_their_own_calls(tmp_path: Path) -> None:
    parent, parent_path, parent_lines, calls, c = _parent(tmp_path)
    same = usage(60000, 55000, 100, 0)  # both siblings make a call of identical size
    a, a_path = _fork(tmp_path, parent_lines, parent, c, T0 + timedelta(hours=1), [same])
    b, b_path = _fork(tmp_path, parent_lines, parent, c, T0 + timedelta(hours=3), [same])
    expected = sum_tokens([*calls, same, same])
    for order in itertools.permutations([parent_path, a_path, b_path]):
        sink = read_all(order)
        assert total_tokens(sink) == expected, order
        assert sorted(e.session_id for e in sink.events.counted_usage()).count(parent) == 4
    assert total_tokens(read_all([a_path, b_path])) == sum_tokens([same, same])


def test_nested_fork_copies_grandparent_history_too(tmp_path: Path) -> None:
    parent, parent_path, parent_lines, calls, c = _parent(tmp_path)
    mid_own = [usage(70000, 60000, 500, 100)]
    mid, mid_path = _fork(tmp_path, parent_lines, parent, c, T0 + timedelta(hours=1), mid_own)
    mid_lines = [orjson.loads(x) for x in mid_path.read_bytes().splitlines()]
    mid_counter = Counter(add(c.total, mid_own[0]))
    leaf_own = [usage(80000, 75000, 50, 0)]
    _, leaf_path = _fork(tmp_path, mid_lines, mid, mid_counter, T0 + timedelta(hours=2), leaf_own)
    sink = read_all([parent_path, mid_path, leaf_path])
    assert total_tokens(sink) == sum_tokens([*calls, *mid_own, *leaf_own])
    assert total_tokens(read_all([leaf_path])) == split(leaf_own[0])


def test_fork_recognised_by_an_embedded_foreign_session_meta(tmp_path: Path) -> None:
    """Own meta without lineage fields: the parent's session_meta alone opens the copy."""
    parent, _, parent_lines, calls, c = _parent(tmp_path)
    fork_at = T0 + timedelta(hours=5)
    child = uuid7(fork_at)
    own = Counter(c.total)
    u = usage(5000, 4000, 10, 0)
    at = fork_at + timedelta(seconds=40)
    lines = [
        meta(fork_at, child),
        *_restamp(parent_lines, fork_at + timedelta(milliseconds=2), timedelta(milliseconds=900)),
        turn(at, turn_id=uuid7(at)),
        own.call(at + timedelta(seconds=5), u),
    ]
    sink = read_all([write(rollout(tmp_path, child, fork_at), lines)])
    assert [e.tokens for e in counted(sink)] == [split(u)]


def test_stray_copied_row_after_the_child_started_is_not_counted(tmp_path: Path) -> None:
    parent, _, parent_lines, _, c = _parent(tmp_path)
    own = [usage(1000, 0, 10, 0)]
    child, path = _fork(tmp_path, parent_lines, parent, c, T0 + timedelta(hours=1), own)
    lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
    stray = dict(parent_lines[4], timestamp=iso(T0 + timedelta(hours=1, minutes=5)))
    write(path, [*lines, stray])
    assert [e.tokens for e in counted(read_all([path]))] == [split(own[0])]


def test_legacy_fork_without_turn_ids_falls_back_to_the_copy_burst(tmp_path: Path) -> None:
    """No parent meta re-embedded (tokscale #679), no turn ids: timing decides."""
    parent = uuid7(T0)
    c = Counter()
    calls = [usage(1000 * k, 0, 10 * k, 0) for k in range(1, 7)]
    parent_rows = [c.call(T0 + timedelta(minutes=k), u) for k, u in enumerate(calls, 1)]
    fork_at = T0 + timedelta(hours=1)
    child = uuid7(fork_at)
    own = Counter(c.total)
    u_own = usage(9000, 8000, 40, 0)
    lines = [
        meta(fork_at, child, forked_from_id=parent),
        # one copy keeps its original timestamp, the rest are re-stamped in a burst that
        # outlasts the 2.5 s window but never pauses for a second
        parent_rows[0],
        *_restamp(
            parent_rows[1:], fork_at + timedelta(milliseconds=5), timedelta(milliseconds=800)
        ),
        turn(fork_at + timedelta(seconds=4)),
        own.call(fork_at + timedelta(seconds=12), u_own),
    ]
    sink = read_all([write(rollout(tmp_path, child, fork_at), lines)])
    assert [e.tokens for e in counted(sink)] == [split(u_own)]
    assert sink.skipped["codex-replayed-history"] == 6  # the last copy is 3.2 s after the fork


def test_explicit_history_start_ordinal_decides(tmp_path: Path) -> None:
    parent = uuid7(T0)
    fork_at = T0 + timedelta(hours=1)
    child = uuid7(fork_at)
    c = Counter()
    inherited = [usage(4000, 0, 100, 0), usage(5000, 4000, 100, 0)]
    copies = [
        c.call(fork_at + timedelta(minutes=10 * (k + 1)), u, ordinal=k + 2)
        for k, u in enumerate(inherited)
    ]
    own = Counter(c.total)
    u_own = usage(7000, 6000, 30, 0)
    lines = [
        line(
            fork_at,
            "session_meta",
            meta(
                fork_at,
                child,
                subagent_history_start_ordinal=4,
                parent_thread_id=parent,
                thread_source="subagent",
            )["payload"],
            ordinal=0,
        ),
        line(fork_at, "session_meta", meta(T0, parent)["payload"], ordinal=1),
        *copies,  # ordinals 2-3: inherited even though stamped long after the fork
        line(fork_at, "turn_context", {"model": "gpt-5.5", "cwd": "/w"}, ordinal=4),
        own.call(
            fork_at + timedelta(milliseconds=900), u_own, ordinal=5
        ),  # own, inside the burst window
    ]
    sink = read_all([write(rollout(tmp_path, child, fork_at), lines)])
    assert [e.tokens for e in counted(sink)] == [split(u_own)]
    assert counted(sink)[0].role is Role.SUBAGENT


def test_copied_records_count_once_with_or_without_the_parent_file(tmp_path: Path) -> None:
    parent = uuid7(T0)
    p1, p2 = usage(3000, 2000, 100, 50), usage(4000, 3000, 200, 0)
    parent_lines = [
        meta(T0, parent),
        turn(T0, turn_id=uuid7(T0)),
        record(T0 + timedelta(seconds=10), parent, "resp_p1", p1, p1),
        record(T0 + timedelta(seconds=20), parent, "resp_p2", p2, add(p1, p2)),
    ]
    parent_path = write(rollout(tmp_path, parent, T0), parent_lines)
    fork_at = T0 + timedelta(days=1)
    child = uuid7(fork_at)
    c1 = usage(9000, 8000, 10, 0)
    at = fork_at + timedelta(seconds=20)
    child_lines = [
        meta(fork_at, child, forked_from_id=parent),
        *_restamp(parent_lines, fork_at, timedelta(milliseconds=3)),
        turn(at, turn_id=uuid7(at)),
        record(at + timedelta(seconds=5), child, "resp_c1", c1, add(add(p1, p2), c1)),
    ]
    child_path = write(rollout(tmp_path, child, fork_at), child_lines)

    alone = read_all([child_path])
    events = counted(alone)
    assert total_tokens(alone) == sum_tokens([p1, p2, c1])
    copies = [e for e in events if e.session_id == parent]
    assert [e.revision for e in copies] == [1, 1]
    # the copy keeps the call's real time from completed_at_ms, not the fork-time stamp
    assert copies[0].ts == (T0 + timedelta(seconds=10)).timestamp()

    for order in ([parent_path, child_path], [child_path, parent_path]):
        both = read_all(order)
        assert total_tokens(both) == sum_tokens([p1, p2, c1])
        for e in both.events.counted_usage():
            if e.session_id == parent:
                assert e.revision == 2 and e.origin.startswith(str(parent_path))


# --- discovery --------------------------------------------------------------------------------


def _zst(path: Path) -> Path:
    out = path.with_name(path.name + ".zst")
    out.write_bytes(zstandard.ZstdCompressor().compress(path.read_bytes()))
    return out


def test_discover_precedence_and_zst(tmp_path: Path) -> None:
    home = tmp_path / ".codex"
    a, b, d = uuid7(T0), uuid7(T0), uuid7(T0)

    def lines(t: str) -> list[dict[str, Any]]:
        return [meta(T0, t), turn(T0), Counter().call(sec(3), usage(10, 0, 1, 0))]

    a_live = write(rollout(home, a, T0), lines(a))
    write(rollout(home, a, T0, tree="archived_sessions"), lines(a))
    b_plain = write(rollout(home, b, T0), lines(b))
    _zst(b_plain)
    c_zst = _zst(write(rollout(home, d, T0, tree="archived_sessions"), lines(d)))
    c_zst.with_name(c_zst.name[: -len(".zst")]).unlink()
    (home / "sessions" / "2026" / "09" / "10" / "notes.txt").write_text("x")
    write(home / "history.jsonl", [{"session_id": a, "ts": 1, "text": "hi"}])

    source = CodexSource()
    assert source.is_home(home) and not source.is_home(tmp_path)
    assert [f.path for f in source.discover(a_live)] == [a_live]  # a single rollout given
    found = source.discover(home)
    assert {(f.path, f.kind) for f in found} == {
        (a_live, FileKind.JSONL),
        (b_plain, FileKind.JSONL),
        (c_zst, FileKind.JSONL_ZST),
    }
    # a compressed rollout reads to the very same events as its plain twin
    plain = read_all([b_plain])
    packed = read_all([b_plain.with_name(b_plain.name + ".zst")])
    assert plain.events.usage.keys() == packed.events.usage.keys()
    assert len(plain.events.usage) == 1


def test_default_homes_follow_codex_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "profile-b"))
    assert CodexSource().default_homes() == [tmp_path / "profile-b"]
    monkeypatch.delenv("CODEX_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert CodexSource().default_homes() == [tmp_path / ".codex"]


# --- limits -----------------------------------------------------------------------------------


def _limits(tmp_path: Path, rows: Sequence[dict[str, Any]]) -> Collector:
    thread = uuid7(T0)
    return read_all([write(rollout(tmp_path, thread, T0), [meta(T0, thread), turn(T0), *rows])])


def test_rate_limits_classified_by_window_length(tmp_path: Path) -> None:
    weekly_in_primary = {
        "limit_id": "codex",
        "primary": {"used_percent": 7.0, "window_minutes": 10080, "resets_at": 1789500000},
        "secondary": None,
        "plan_type": "plus",
    }
    weekly_back_in_secondary = {**RL, "secondary": weekly_in_primary["primary"]}
    changed = {**RL, "primary": {**RL["primary"], "used_percent": 13.0}}
    other = {
        **RL,
        "secondary": {"used_percent": 2.0, "window_minutes": 1440, "resets_at": 1789100000},
    }
    sink = _limits(
        tmp_path,
        [
            token_count(sec(1), None, None, RL),
            token_count(sec(2), None, None, RL),  # re-emitted: nothing new
            token_count(sec(3), None, None, changed),  # only the 5h window moved
            token_count(sec(4), None, None, weekly_in_primary),
            token_count(sec(5), None, None, other),
            # same readings, the weekly window back in its usual slot: nothing changed
            token_count(sec(6), None, None, weekly_back_in_secondary),
        ],
    )
    events = sorted(sink.events.limits.values(), key=lambda e: (e.ts, e.window))
    got = [(int(e.ts - T0.timestamp()), e.window, e.used_percent, e.window_minutes) for e in events]
    assert got == [
        (1, LimitWindow.FIVE_HOUR, 12.0, 300),
        (1, LimitWindow.WEEKLY, 41.0, 10080),
        (3, LimitWindow.FIVE_HOUR, 13.0, 300),
        (4, LimitWindow.WEEKLY, 7.0, 10080),  # weekly although logged as primary
        (5, LimitWindow.FIVE_HOUR, 12.0, 300),
        (5, LimitWindow.OTHER, 2.0, 1440),
    ]
    assert all(e.kind is LimitKind.QUOTA_SNAPSHOT for e in events)
    assert events[0].resets_at == 1789030800 and events[0].plan_type == "plus"
    assert len({e.event_id for e in events}) == len(events)


def test_rate_limits_older_shapes(tmp_path: Path) -> None:
    relative = {
        "primary": {"used_percent": 30.0, "window_minutes": 300, "resets_in_seconds": 3600},
        "secondary": {"used_percent": 50.0, "window_minutes": 10080, "resets_in_seconds": 86400},
    }
    later = {  # ~40 s later, same windows: the relative reset is the same instant, to the second
        "primary": {"used_percent": 30.0, "window_minutes": 300, "resets_in_seconds": 3560},
        "secondary": {"used_percent": 50.0, "window_minutes": 10080, "resets_in_seconds": 86360},
    }
    flat = {
        "primary_used_percent": 31.0,
        "secondary_used_percent": 51.0,
        "primary_to_secondary_ratio_percent": 20.0,
        "primary_window_minutes": 300,
        "secondary_window_minutes": 10080,
    }
    sink = _limits(
        tmp_path,
        [
            token_count(sec(0), None, None, relative),
            token_count(sec(40.7), None, None, later),
            token_count(sec(60), None, None, flat),
        ],
    )
    events = sorted(sink.events.limits.values(), key=lambda e: (e.ts, e.window))
    assert [(e.window, e.used_percent) for e in events] == [
        (LimitWindow.FIVE_HOUR, 30.0),
        (LimitWindow.WEEKLY, 50.0),
        (LimitWindow.FIVE_HOUR, 31.0),
        (LimitWindow.WEEKLY, 51.0),
    ]
    assert events[0].resets_at == pytest.approx(T0.timestamp() + 3600)
    assert events[1].resets_at == pytest.approx(T0.timestamp() + 86400)
    assert events[2].resets_at is None


def test_usage_limit_exceeded(tmp_path: Path) -> None:
    at_limit = {
        **RL,
        "primary": {
            "used_percent": 100.0,
            "window_minutes": 300,
            "resets_at": int(sec(5400).timestamp()),
        },
        "secondary": {
            "used_percent": 60.0,
            "window_minutes": 10080,
            "resets_at": int(sec(400000).timestamp()),
        },
    }
    msg = "You've hit your usage limit. Upgrade to Pro or try again at 1:30 PM."
    done = line(
        sec(20),
        "event_msg",
        {
            "type": "task_complete",
            "turn_id": "x",
            "last_agent_message": None,
            "error": {"message": msg, "codex_error_info": "usage_limit_exceeded"},
        },
    )
    other_error = line(
        sec(21),
        "event_msg",
        {
            "type": "task_complete",
            "error": {"message": "too long", "codex_error_info": "context_window_exceeded"},
        },
    )
    sink = _limits(tmp_path, [token_count(sec(10), None, None, at_limit), done, other_error])
    hits = [e for e in sink.events.limits.values() if e.kind is LimitKind.RATE_LIMIT_HIT]
    assert len(hits) == 1
    hit = hits[0]
    assert hit.message == msg and hit.ts == sec(20).timestamp()
    assert hit.resets_at == int(sec(5400).timestamp()) and hit.window is LimitWindow.FIVE_HOUR
    assert hit.plan_type == "plus"

    # older builds: an `error` event; no preceding snapshot, so no reset time is invented
    old = line(
        sec(30),
        "event_msg",
        {"type": "error", "message": "usage limit", "codex_error_info": "usage_limit_exceeded"},
    )
    (tmp_path / "old").mkdir()
    sink = _limits(tmp_path / "old", [old])
    (hit,) = sink.events.limits.values()
    assert (
        hit.kind is LimitKind.RATE_LIMIT_HIT
        and hit.resets_at is None
        and hit.message == "usage limit"
    )


def test_usage_limit_without_full_window_takes_latest_reset(tmp_path: Path) -> None:
    done = line(
        sec(20),
        "event_msg",
        {
            "type": "task_complete",
            "error": {"message": "limit", "codex_error_info": "usage_limit_exceeded"},
        },
    )
    sink = _limits(tmp_path, [token_count(sec(10), None, None, RL), done])
    (hit,) = [e for e in sink.events.limits.values() if e.kind is LimitKind.RATE_LIMIT_HIT]
    assert hit.resets_at == 1789400000 and hit.window is LimitWindow.WEEKLY


# --- robustness -------------------------------------------------------------------------------


def test_unparseable_lines_are_reported_and_the_rest_is_read(tmp_path: Path) -> None:
    thread = uuid7(T0)
    c = Counter()
    u1, u2 = usage(100, 0, 10, 0), usage(200, 100, 20, 5)
    good1 = c.call(T0 + timedelta(seconds=5), u1)
    good2 = c.call(T0 + timedelta(seconds=9), u2)
    torn = orjson.dumps(token_count(T0, usage(1, 0, 1, 0), usage(1, 0, 1, 0)))[:60]
    big_item = orjson.dumps(
        line(
            T0,
            "response_item",
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "x" * 5000}],
            },
        )
    )
    path = write(
        rollout(tmp_path, thread, T0),
        [
            meta(T0, thread),
            turn(T0),
            good1,
            torn,
            b"garbage that is not json",
            orjson.dumps(good1)[:-1] + b"},",  # trailing comma
            big_item[:1000],  # a torn response_item: not parsed, still reported
            b"   ",
            big_item,
            good2,
        ],
    )
    sink = read_all([path])
    assert [e.tokens for e in counted(sink)] == [split(u1), split(u2)]
    assert [p.line for p in sink.problems] == [4, 5, 6, 7]
    assert all(p.path == str(path) for p in sink.problems)


def test_response_items_mentioning_token_counts_are_not_usage(tmp_path: Path) -> None:
    thread = uuid7(T0)
    fake = orjson.dumps(token_count(T0, usage(999, 0, 9, 0), usage(999, 0, 9, 0))).decode()
    item = line(
        T0, "response_item", {"type": "function_call_output", "call_id": "c", "output": fake}
    )
    sink = read_all([write(rollout(tmp_path, thread, T0), [meta(T0, thread), turn(T0), item])])
    assert sink.events.usage == {} and sink.problems == []


def test_model_carried_from_turn_context(tmp_path: Path) -> None:
    thread = uuid7(T0)
    c = Counter()
    lines = [
        meta(T0, thread),
        turn(sec(1), model="gpt-5.5"),
        c.call(sec(5), usage(100, 0, 1, 0)),
        c.call(sec(6), usage(100, 0, 2, 0)),
        turn(sec(7), model="codex-auto-review"),  # a label, kept as is
        c.call(sec(8), usage(100, 0, 3, 0)),
        turn(sec(9), model="gpt-5.4"),
        c.call(sec(10), usage(100, 0, 4, 0)),
    ]
    sink = read_all([write(rollout(tmp_path, thread, T0), lines)])
    assert [e.model for e in counted(sink)] == [
        "gpt-5.5",
        "gpt-5.5",
        "codex-auto-review",
        "gpt-5.4",
    ]
    assert sink.problems == []


def test_model_fallbacks_are_marked(tmp_path: Path) -> None:
    early = datetime(2025, 9, 12, 9, 0, tzinfo=UTC)
    t1, t2 = uuid7(early), uuid7(T0)
    p1 = write(
        rollout(tmp_path, t1, early), [meta(early, t1), Counter().call(early, usage(100, 0, 1, 0))]
    )
    p2 = write(
        rollout(tmp_path, t2, T0),
        [
            meta(T0, t2),
            Counter().call(T0, usage(100, 0, 1, 0)),
            Counter().call(T0, usage(200, 0, 1, 0)),
        ],
    )
    sink = read_all([p1, p2])
    models = {e.session_id: e.model for e in sink.events.counted_usage()}
    assert models == {t1: EARLY_FALLBACK_MODEL, t2: UNKNOWN_MODEL}
    assert len(sink.problems) == 2  # one mark per file, not per row
    assert "gpt-5" in sink.problems[0].reason and sink.problems[0].line == 2


def test_roles_of_auxiliary_threads(tmp_path: Path) -> None:
    cases = {
        "review": ({"subagent": "review"}, "subagent", Role.AUXILIARY),
        "compact": ({"subagent": "compact"}, "subagent", Role.AUXILIARY),
        "memory": ({"internal": "memory_consolidation"}, "memory_consolidation", Role.AUXILIARY),
        "vscode": ("vscode", "user", Role.MAIN),
    }
    for name, (source, thread_source, role) in cases.items():
        thread = uuid7(T0)
        path = write(
            rollout(tmp_path / name, thread, T0),
            [
                meta(T0, thread, source=source, thread_source=thread_source),
                turn(T0),
                Counter().call(T0 + timedelta(seconds=1), usage(10, 0, 1, 0)),
            ],
        )
        (event,) = read_all([path]).events.counted_usage()
        assert event.role is role, name


def test_reset_file_rereads_to_the_same_ids(tmp_path: Path) -> None:
    thread = uuid7(T0)
    c = Counter()
    path = write(
        rollout(tmp_path, thread, T0),
        [
            meta(T0, thread),
            turn(T0),
            c.call(T0 + timedelta(seconds=2), usage(100, 50, 5, 1)),
            c.call(T0 + timedelta(seconds=4), usage(300, 250, 5, 1)),
        ],
    )
    source = CodexSource()
    first = feed(source, path)
    source.reset_file(path)
    second = feed(source, path)
    assert first.events.usage == second.events.usage and len(first.events.usage) == 2
    # without a reset the per-file state treats a replayed read as already-seen totals
    third = feed(source, path)
    assert third.events.usage == {}


def test_cold_scan_skips_bulk_lines_without_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefilter must keep the JSON decoders (msgspec's typed one, orjson's checked one)
    away from response_item lines (the bulk of bytes)."""
    thread = uuid7(T0)
    c = Counter()
    item = line(
        T0,
        "response_item",
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "y" * 20000}],
        },
    )
    rows: list[dict[str, Any]] = [meta(T0, thread), turn(T0)]
    for k in range(50):
        rows += [item, item, c.call(T0 + timedelta(seconds=k + 1), usage(100, 0, 1, 0))]
    path = write(rollout(tmp_path, thread, T0), rows)
    parsed: list[int] = []
    typed: list[int] = []
    real, real_typed = orjson.loads, _codex_lines._decode

    def counting(data: bytes) -> Any:
        parsed.append(len(data))
        return real(data)

    def counting_typed(data: bytes) -> Any:
        typed.append(len(data))
        return real_typed(data)

    monkeypatch.setattr(orjson, "loads", counting)  # the very module the source calls
    monkeypatch.setattr(_codex_lines, "_decode", counting_typed)
    sink = read_all([path])
    assert len(sink.events.counted_usage()) == 50
    # the typed path reads the turn and the token counts; orjson then reads session_meta and
    # the rate limits (small): neither decoder sees a 20 kB item
    assert len(typed) == 52 and max(typed + parsed) < 2000


def test_slow_copy_burst_without_copied_turns_is_skipped_for_uuid7_threads(tmp_path: Path) -> None:
    """A spawned child whose copy burst pauses >1 s and outlasts 2.5 s, with no copied
    turn_context in it: the UUIDv7 thread id says turn ids exist, so only the child's own
    turn_context (a turn id minted after the fork) ends the copied region."""
    parent = uuid7(T0)
    c = Counter()
    parent_rows = [
        c.call(T0 + timedelta(minutes=k), usage(1000 * k, 0, 10 * k, 0)) for k in range(1, 5)
    ]
    fork_at = T0 + timedelta(hours=1)
    child = uuid7(fork_at)
    own = Counter(c.total)
    u_own = usage(9000, 8000, 40, 0)
    lines = [
        meta(fork_at, child, forked_from_id=parent),
        *_restamp(parent_rows, fork_at + timedelta(seconds=1.6), timedelta(seconds=1.5)),
        turn(fork_at + timedelta(seconds=7), turn_id=uuid7(fork_at + timedelta(seconds=7))),
        own.call(fork_at + timedelta(seconds=20), u_own),
    ]
    sink = read_all([write(rollout(tmp_path, child, fork_at), lines)])
    assert [e.tokens for e in counted(sink)] == [split(u_own)]
    assert sink.skipped["codex-replayed-history"] == 4


# --- tool calls: the hub's retry-loop signature ---------------------------------------------


def tool_item(at: datetime, name: str, arguments: str) -> dict[str, Any]:
    payload = {"type": "function_call", "name": name, "arguments": arguments, "call_id": "c"}
    return line(at, "response_item", payload)


def test_a_calls_tool_calls_become_its_signature_and_the_arguments_are_hashed(
    tmp_path: Path,
) -> None:
    thread = uuid7(T0)
    c = Counter()
    pytest_args = '{"command":["pytest","-q"]}'
    patch, ls = '{"patch":"*** a"}', '{"command":["ls"]}'
    lines = [
        meta(T0, thread),
        turn(sec(1)),
        tool_item(sec(5), "shell", pytest_args),
        c.call(sec(6), usage(1000, 800, 50, 20)),
        tool_item(sec(9), "shell", pytest_args),
        c.call(sec(10), usage(1100, 900, 50, 20)),
        line(sec(12), "response_item", {"type": "message", "role": "assistant", "content": []}),
        c.call(sec(14), usage(1200, 1000, 400, 20)),  # a reply: no tool call
        tool_item(sec(15), "apply_patch", patch),
        tool_item(sec(15), "shell", ls),
        c.call(sec(16), usage(1300, 1100, 60, 20)),
    ]
    events = counted(read_all([write(rollout(tmp_path, thread, T0), lines)]))

    def sig(name: str, arguments: str) -> str:
        return f"{name}:{hashlib.sha256(arguments.encode()).hexdigest()[:12]}"

    assert [e.tool_calls for e in events] == [
        sig("shell", pytest_args),
        sig("shell", pytest_args),  # the same call again: what the retry-loop rule compares
        None,
        sig("apply_patch", patch) + "," + sig("shell", ls),
    ]
    assert all("pytest" not in (e.tool_calls or "") for e in events)
