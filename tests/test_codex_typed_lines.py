"""The typed decoding of Codex rollout lines gives what the checked (dict) path gives, or hands
the line to it: random values in every field the rules read, in lines of every kind the typed
path takes; the real rollouts and a generated fleet's read both ways."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_agent.scan import read_file
from node_agent.simulate.fleet import generate_fleet
from node_agent.sources._codex_lines import typed_line
from node_agent.sources.base import Collector
from node_agent.sources.codex import CodexSource

THREAD = "019a0000-0000-7000-8000-000000000001"
PARENT = "019a0000-0000-7000-8000-000000000000"
PATH = Path(f"/home/u/.codex/sessions/2026/03/01/rollout-2026-03-01T10-00-00-{THREAD}.jsonl")
REALDATA = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"

TS = "2026-03-01T10:00:05.120Z"
USAGE = {
    "input_tokens": 5000,
    "cached_input_tokens": 3000,
    "cache_write_input_tokens": 100,
    "output_tokens": 400,
    "reasoning_output_tokens": 120,
    "total_tokens": 5400,
}
LIMITS = {
    "limit_id": "codex",
    "primary": {"used_percent": 12.0, "window_minutes": 300, "resets_at": 1772363000},
    "secondary": {"used_percent": 40.0, "window_minutes": 10080, "resets_at": 1772800000},
    "plan_type": "plus",
}
# One line of every kind the rules read (and a few they do not), in a plausible order.
LINES: list[dict[str, Any]] = [
    {
        "timestamp": "2026-03-01T10:00:00.000Z",
        "type": "session_meta",
        "payload": {"id": THREAD, "forked_from_id": PARENT, "cwd": "/w", "cli_version": "0.150"},
    },
    {
        "timestamp": "2026-03-01T10:00:01.000Z",
        "type": "turn_context",
        "payload": {"turn_id": "019a0000-0001-7000-8000-000000000000", "model": "gpt-5.5"},
    },
    {
        "timestamp": "2026-03-01T10:00:02.000Z",
        "type": "event_msg",
        "payload": {"type": "task_started", "turn_id": "x", "started_at": 1772359202},
    },
    {
        "timestamp": "2026-03-01T10:00:03.000Z",
        "type": "response_item",
        "payload": {"type": "function_call", "name": "shell", "arguments": '{"cmd":["ls"]}'},
    },
    {
        "timestamp": "2026-03-01T10:00:03.500Z",
        "type": "response_item",
        "payload": {"type": "local_shell_call", "action": {"command": ["ls", "-l"]}},
    },
    {
        "timestamp": TS,
        "type": "event_msg",
        "payload": {
            "type": "token_count",
            "info": {"total_token_usage": USAGE, "last_token_usage": USAGE},
            "rate_limits": LIMITS,
        },
    },
    {
        "timestamp": TS,
        "ordinal": 7,
        "type": "token_usage_record",
        "payload": {
            "thread_id": THREAD,
            "response_id": "resp_1",
            "usage": USAGE,
            "thread_token_usage": {**USAGE, "input_tokens": 9000, "total_tokens": 9400},
            "attribution": {"model": "gpt-5.5", "service_tier": "priority"},
            "completed_at_ms": 1772359205120,
        },
    },
    {
        "timestamp": "2026-03-01T10:00:06.000Z",
        "type": "event_msg",
        "payload": {"type": "agent_message", "message": "done"},
    },
    {
        "timestamp": "2026-03-01T10:00:07.000Z",
        "type": "event_msg",
        "payload": {
            "type": "task_complete",
            "error": {"message": "limit", "codex_error_info": "usage_limit_exceeded"},
        },
    },
]

ABSENT = object()
values = st.one_of(
    st.just(ABSENT),
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=2**70),
    st.sampled_from([0, 1, 7, 2**40 - 1, 2**40, 2**63, -1, 1772359205120]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 2.5, -0.0, 1772359205.5]),
    st.text(max_size=5),
    st.sampled_from(["", "gpt-5.5", THREAD, PARENT, TS, "bad time", "token_count"]),
    st.just({}),
    st.just([]),
    st.just({"input_tokens": 3}),
    st.just(USAGE),
    st.just({"model": 5}),
)
FIELDS = [
    ("timestamp",),
    ("type",),
    ("ordinal",),
    ("payload",),
    ("payload", "type"),
    ("payload", "info"),
    ("payload", "info", "model"),
    ("payload", "info", "total_token_usage"),
    ("payload", "info", "last_token_usage"),
    *[("payload", "info", "total_token_usage", key) for key in USAGE],
    ("payload", "rate_limits"),
    ("payload", "model"),
    ("payload", "turn_id"),
    ("payload", "started_at"),
    ("payload", "cwd"),
    ("payload", "thread_id"),
    ("payload", "usage"),
    *[("payload", "usage", key) for key in USAGE],
    ("payload", "thread_token_usage"),
    ("payload", "response_id"),
    ("payload", "completed_at_ms"),
    ("payload", "attribution"),
    ("payload", "attribution", "model"),
    ("payload", "attribution", "service_tier"),
    ("payload", "attribution", "model_provider"),
    ("payload", "service_tier"),
    ("payload", "model_provider"),
    ("payload", "name"),
    ("payload", "arguments"),
    ("payload", "input"),
    ("payload", "action"),
]


def _set(line: dict[str, Any], path: tuple[str, ...], value: object) -> None:
    """Put `value` at `path` (ABSENT deletes it); a path through a non-object is left alone."""
    holder: Any = line
    for key in path[:-1]:
        if not isinstance(holder, dict):
            return
        holder = holder.setdefault(key, {})
    if not isinstance(holder, dict):
        return
    if value is ABSENT:
        holder.pop(path[-1], None)
    else:
        holder[path[-1]] = copy.deepcopy(value)


def _read(lines: list[bytes], *, typed: bool, quota: bool, tools: bool = True) -> Collector:
    source = CodexSource(typed=typed)
    source.wants_quota_readings = quota
    source.wants_tool_calls = tools
    sink = Collector()
    for lineno, line in enumerate(lines, start=1):
        source.feed_line(PATH, lineno, line, sink)
    source.flush(sink)
    return sink


def _same(lines: list[bytes], quota: bool, tools: bool = True) -> None:
    typed = _read(lines, typed=True, quota=quota, tools=tools)
    checked = _read(lines, typed=False, quota=quota, tools=tools)
    assert typed.events == checked.events
    assert typed.problems == checked.problems
    assert typed.skipped == checked.skipped


mutation = st.tuples(st.integers(0, len(LINES) - 1), st.sampled_from(FIELDS), values)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation, min_size=1, max_size=6), st.booleans(), st.booleans())
def test_typed_and_checked_paths_read_any_line_alike(
    mutations: list[tuple[int, tuple[str, ...], object]], quota: bool, tools: bool
) -> None:
    """`tools`: a scan that does not want tool calls reads only the time of their lines."""
    lines = copy.deepcopy(LINES)
    for index, path, value in mutations:
        _set(lines[index], path, value)
    # serialised compact as Codex writes (the prefilter sees the kinds in the line head);
    # json, not orjson: it writes integers beyond 64 bits too
    _same([_dumps(line) for line in lines], quota, tools)


@pytest.mark.parametrize("tools", [True, False])
def test_a_tool_calls_time_serves_a_later_line_without_one(tools: bool) -> None:
    """Read or not, a tool call's line gives its time to a later usage line that has none."""
    lines = copy.deepcopy(LINES)
    assert lines[5]["payload"]["type"] == "token_count" and "timestamp" in lines[5]
    del lines[5]["timestamp"]
    _same([_dumps(line) for line in lines], quota=False, tools=tools)
    events = _read([_dumps(line) for line in lines], typed=True, quota=False, tools=tools)
    shell_call = datetime(2026, 3, 1, 10, 0, 3, 500000, tzinfo=UTC).timestamp()
    assert [event.ts for event in events.events.usage.values()][:1] == [shell_call]


def _dumps(line: dict[str, Any]) -> bytes:
    return json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode()


def test_the_typed_path_takes_the_lines_it_is_for() -> None:
    """Not a vacuous comparison: the base lines of the kinds it reads decode typed."""
    decoded = [typed_line(orjson.dumps(line)) for line in LINES]
    assert all(line is not None for line in decoded)
    assert _read([orjson.dumps(line) for line in LINES], typed=True, quota=True).events.usage


@pytest.mark.parametrize(
    "line",
    [
        b'{"timestamp":"2026-03-01T10:00:05Z","type":"event_msg","payload":{"type":"token_count",'
        b'"info":{"total_token_usage":{"input_tokens":1,"cached_input_tokens":0,"output_tokens":1,'
        b'"reasoning_output_tokens":0,"total_tokens":2}},"rate_limits":{"x":1e999}}}',
        b'{"timestamp":"2026-03-01T10:00:05Z","type":"response_item","payload":'
        b'{"type":"function_call","name":"shell","arguments":{"a":1e999}}}',
        b'{"timestamp":"2026-03-01T10:00:05Z","type":"response_item","payload":'
        b'{"type":"function_call","name":"shell","call_id":"\xff","arguments":"{}"}}',
        b'{"timestamp":"2026-03-01T10:00:05Z","type":"turn_context","payload":{"model":"\\ud800"}}',
    ],
)
def test_lines_orjson_refuses_in_fields_the_rules_read_are_refused_alike(line: bytes) -> None:
    _same([orjson.dumps(LINES[0]), line], quota=True)


def _rollouts(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("rollout-*.jsonl*") if p.is_file())


def _scan_both_ways(files: list[Path]) -> None:
    assert files
    for quota in (False, True):
        sinks = []
        for typed in (True, False):
            source = CodexSource(typed=typed)
            source.wants_quota_readings = quota
            sink = Collector()
            for file in sorted(
                (f for p in files for f in source.discover(p)), key=lambda f: str(f.path)
            ):
                read_file(source, file, sink)
            sinks.append(sink)
        typed_sink, checked_sink = sinks
        assert typed_sink.events == checked_sink.events
        assert typed_sink.problems == checked_sink.problems
        assert typed_sink.skipped == checked_sink.skipped


@pytest.mark.skipif(not REALDATA.is_dir(), reason="no real-data corpus beside the repo")
def test_real_rollouts_read_alike_both_ways() -> None:
    _scan_both_ways(_rollouts(REALDATA))


def test_a_generated_fleets_rollouts_read_alike_both_ways(tmp_path: Path) -> None:
    generate_fleet(tmp_path, seed=11, machines=2, start=datetime(2026, 10, 5, tzinfo=UTC), days=2)
    _scan_both_ways(_rollouts(tmp_path))
