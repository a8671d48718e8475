"""The typed decoding of Claude usage lines gives what the checked (dict) path gives, or hands
the line to it: random values in every field a usage line is read from, real lines as the base."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_agent.claude_reading import read_file, replay
from node_agent.sources._claude_line import (
    FileFacts,
    ToolUses,
    UsageLine,
    checked_usage,
    tool_calls_of,
    typed_record,
    typed_usage,
)
from node_agent.sources.base import Collector
from node_agent.sources.claude import ClaudeSource
from shared.events import UsageEvent

PATH = Path("/home/u/.claude/projects/-home-u-app/5c766d26-8a81-4c79-877d-6e2e52307faf.jsonl")

BASE: dict[str, Any] = {
    "type": "assistant",
    "timestamp": "2026-03-01T10:00:00.000Z",
    "sessionId": "5c766d26-8a81-4c79-877d-6e2e52307faf",
    "requestId": "req_1",
    "uuid": "u-1",
    "cwd": "/home/u/app",
    "gitBranch": "main",
    "version": "2.1.0",
    "isSidechain": False,
    "message": {
        "id": "msg_1",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "héllo — a long reply"}],
        "usage": {
            "input_tokens": 10,
            "output_tokens": 200,
            "cache_read_input_tokens": 3000,
            "cache_creation_input_tokens": 500,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 400},
            "server_tool_use": {"web_search_requests": 1},
            "service_tier": "standard",
        },
    },
}

ABSENT = object()
values = st.one_of(
    st.just(ABSENT),
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=2**70),
    st.sampled_from([0, 1, 7, 2**40 - 1, 2**40, 2**63, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1.0, 2.5, 0.0123, -0.0]),
    st.text(max_size=5),
    st.sampled_from(["", "fast", "<synthetic>", "user", "2026-03-01T10:00:00", "bad time"]),
    st.just({}),
    st.just([]),
    st.just({"sessionId": "parent-session"}),
)
# message.content: tool uses (their signature), and blocks of unexpected shapes
contents = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"type": st.just("tool_use"), "name": st.sampled_from(["Bash", "", 5, None])},
            optional={
                "input": st.one_of(
                    st.none(),
                    st.sampled_from([2**70, 1.5, -0.0, "é", [1, {"b": 2, "a": 1}]]),
                    st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3)),
                )
            },
        ),
        st.sampled_from(
            [{"type": "text", "text": "x"}, {"type": 3}, {}, "a string block", 7, None]
        ),
    ),
    max_size=3,
)
# (container path, field): every value a usage line is read from.
FIELDS = [
    ((), "type"),
    ((), "timestamp"),
    ((), "sessionId"),
    ((), "requestId"),
    ((), "uuid"),
    ((), "cwd"),
    ((), "gitBranch"),
    ((), "version"),
    ((), "isSidechain"),
    ((), "agentId"),
    ((), "forkedFrom"),
    ((), "costUSD"),
    ((), "isApiErrorMessage"),
    (("message",), "id"),
    (("message",), "model"),
    (("message", "usage"), "input_tokens"),
    (("message", "usage"), "output_tokens"),
    (("message", "usage"), "cache_read_input_tokens"),
    (("message", "usage"), "cache_creation_input_tokens"),
    (("message", "usage"), "cache_creation"),
    (("message", "usage"), "server_tool_use"),
    (("message", "usage"), "speed"),
    (("message", "usage"), "service_tier"),
    (("message", "usage"), "inference_geo"),
    (("message", "usage", "cache_creation"), "ephemeral_5m_input_tokens"),
    (("message", "usage", "cache_creation"), "ephemeral_1h_input_tokens"),
    (("message", "usage", "server_tool_use"), "web_search_requests"),
]


def _mutated(changes: list[tuple[int, object]]) -> bytes:
    record = orjson.loads(orjson.dumps(BASE))
    for index, value in changes:
        where, name = FIELDS[index]
        box = record
        for step in where:
            box = box.get(step) if isinstance(box, dict) else None
        if not isinstance(box, dict):
            continue
        if value is ABSENT:
            box.pop(name, None)
        else:
            box[name] = copy.deepcopy(value)  # st.just values are shared objects
    return json.dumps(record, ensure_ascii=False).encode()  # orjson stops at 64-bit ints


def _checked(line: bytes) -> tuple[UsageLine | None, Collector]:
    """The checked path alone, as `ClaudeSource.read_line` takes it."""
    sink = Collector()
    rec = orjson.loads(line)
    msg = rec.get("message")
    usage = msg.get("usage") if isinstance(msg, dict) else None
    if not isinstance(msg, dict) or not isinstance(usage, dict) or rec.get("type") == "user":
        return None, sink
    if rec.get("isApiErrorMessage") is True:
        return ClaudeSource().read_line(FileFacts(PATH), 1, line, sink), sink
    if msg.get("model") == "<synthetic>":
        sink.skip("synthetic")
        return None, sink
    return checked_usage(rec, msg, usage, FileFacts(PATH), 1, sink), sink


def _same(line: bytes) -> None:
    _same_without_tools(line)
    typed = typed_record(line)
    if typed is None:
        return  # a type the typed path does not take: the checked path reads it
    sink = Collector()
    got = typed_usage(typed, FileFacts(PATH), 1, sink)
    if got is False:
        return  # handed to the checked path: nothing to compare
    want, want_sink = _checked(line)
    assert got == want
    assert sink.problems == want_sink.problems
    assert sink.skipped == want_sink.skipped
    if got is not None:  # tool uses left to the caller: the same signatures, made later
        uses: ToolUses = []
        deferred = typed_usage(typed, FileFacts(PATH), 1, Collector(), uses)
        assert deferred == msgspec.structs.replace(got, tool_calls=None)
        assert tool_calls_of(uses) == got.tool_calls
        _same_as_snapshot(typed, got, sink)


def _same_as_snapshot(typed: Any, got: UsageLine, sink: Collector) -> None:
    """Read after a best line of its call that it does not beat, a line gives only its
    revision, with the same problems and skips; after one it beats, or of another call (or
    without message.id, never deduped), the whole line."""
    after = Collector()
    alone = got.revision if got.group is not None else got
    assert typed_usage(typed, FileFacts(PATH), 1, after, None, got) == alone
    assert (after.problems, after.skipped) == (sink.problems, sink.skipped)
    beaten = msgspec.structs.replace(got, revision=got.revision - 1)
    assert typed_usage(typed, FileFacts(PATH), 1, Collector(), None, beaten) == got
    other = msgspec.structs.replace(got, event_id=got.event_id + "-other")
    assert typed_usage(typed, FileFacts(PATH), 1, Collector(), None, other) == got


def _same_without_tools(line: bytes) -> None:
    """A reading without tool calls (a scan that only sums) skips the content: the same line
    as with them, less its `tool_calls`, on whichever path each takes."""
    bare = typed_record(line, tools=False)
    got = typed_usage(bare, FileFacts(PATH), 1, Collector()) if bare is not None else False
    if got is False:
        return  # the checked path reads it, `tools` or not (`test_checked_path_without_tools`)
    full = typed_record(line)
    want = typed_usage(full, FileFacts(PATH), 1, Collector()) if full is not None else False
    if want is False:
        want = _checked(line)[0]
    assert got == (msgspec.structs.replace(want, tool_calls=None) if want else want)


# Each branch of the typed path, met for sure (random changes meet some only rarely): a fork's
# session, session-scoped and line ids, a subagent, a reported cost, a split that disagrees
# with its total, an older line without a split, a tool use, a speed, a synthetic reply.
BRANCHES: list[list[tuple[str, object]]] = [
    [("forkedFrom", {"sessionId": "parent-session"})],
    [("requestId", ABSENT)],
    [("requestId", ABSENT), ("forkedFrom", {"sessionId": "parent-session"})],
    [("id", ABSENT)],
    [("id", ABSENT), ("uuid", ABSENT)],
    [("agentId", "a-7")],
    [("isSidechain", True)],
    [("costUSD", 0.0123)],
    [("costUSD", 3)],
    [("cache_creation_input_tokens", 999)],
    [("cache_creation", ABSENT)],
    [("speed", "fast")],
    [("model", "<synthetic>")],
    [("timestamp", "2026-03-01T10:00:00")],
    [("timestamp", "2026-03-01T11:00:00+01:00")],
]


@pytest.mark.parametrize("changes", BRANCHES)
def test_each_branch_of_the_typed_path_equals_the_checked_path(
    changes: list[tuple[str, object]],
) -> None:
    names = [name for _, name in FIELDS]
    line = _mutated([(names.index(name), value) for name, value in changes])
    assert typed_record(line) is not None
    _same(line)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(FIELDS) - 1), values), max_size=4))
def test_typed_decoding_equals_the_checked_path(changes: list[tuple[int, object]]) -> None:
    _same(_mutated(changes))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(contents, values))
def test_tool_uses_read_the_same_both_ways(content: object) -> None:
    record = orjson.loads(orjson.dumps(BASE))
    if content is not ABSENT:
        record["message"]["content"] = content
    else:
        del record["message"]["content"]
    _same(json.dumps(record, ensure_ascii=False).encode())


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(contents, values))
def test_checked_path_without_tools(content: object) -> None:
    """The checked path without tool calls: its line less its `tool_calls`, nothing else."""
    record = orjson.loads(orjson.dumps(BASE))
    record["message"]["content"] = content
    msg, usage = record["message"], record["message"]["usage"]
    facts = FileFacts(PATH)
    with_tools = checked_usage(record, msg, usage, facts, 1, Collector())
    without = checked_usage(record, msg, usage, FileFacts(PATH), 1, Collector(), tools=False)
    assert with_tools is not None
    assert without == msgspec.structs.replace(with_tools, tool_calls=None)


def test_the_common_shapes_take_the_typed_path() -> None:
    """A current line, an older one without the 5m/1h split, and one with a tool use never
    build dicts."""
    older = orjson.loads(orjson.dumps(BASE))
    del older["message"]["usage"]["cache_creation"]
    tool = orjson.loads(orjson.dumps(BASE))
    tool["message"]["content"] = [{"type": "tool_use", "name": "Read", "input": {"path": "a"}}]
    for line in (orjson.dumps(BASE), orjson.dumps(older), orjson.dumps(tool)):
        typed = typed_record(line)
        assert typed is not None
        assert isinstance(typed_usage(typed, FileFacts(PATH), 1, Collector()), UsageLine)


def test_lines_orjson_refuses_are_left_to_it() -> None:
    """Invalid UTF-8 in a field the typed path skips, a lone surrogate, a BOM: not typed."""
    good = orjson.dumps(BASE)
    for bad in (
        good.replace("héllo".encode(), b"h\xffllo"),
        good.replace("héllo".encode(), b"\\ud800"),
        b"\xef\xbb\xbf" + good,
    ):
        assert typed_record(bad) is None


def test_real_lines_read_the_same_both_ways() -> None:
    realdata = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"
    lines = [
        line
        for file in sorted(realdata.rglob("*.jsonl"))
        if "projects" in file.parts
        for line in file.read_bytes().splitlines()
        if b'"usage"' in line
    ]
    assert len(lines) > 500
    for line in lines:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        _same(line)


class _Sent(Collector):
    sent: list[tuple[str, int, str | None, str]] = msgspec.field(default_factory=list)

    def usage(self, event: UsageEvent) -> None:
        self.sent.append((event.event_id, event.revision, event.tool_calls, event.origin))


def _events(home: Path, engine: bool, tools: bool = True) -> list[tuple[str, int, str | None, str]]:
    source, sink = ClaudeSource(), _Sent()
    for found in source.discover(home):
        if engine:
            replay(source, found.path, read_file(found.path, tools=tools).whole, sink)
            continue
        for n, line in enumerate(found.path.read_bytes().split(b"\n"), 1):
            if line:
                source.feed_line(found.path, n, line, sink)
        source.flush(sink)
    return sink.sent


def test_the_engine_keeps_the_tool_uses_of_the_snapshot_it_keeps(tmp_path: Path) -> None:
    """The engine signs only a run's best line: the same tool_calls as the line-by-line source
    (which signs each), whether the tool use is on the kept snapshot or a dropped one."""
    tool = {"type": "tool_use", "name": "Bash", "input": {"command": "make"}}
    lines = []
    for n, (output, content) in enumerate(
        [(5, "text"), (5, "tool"), (9, "tool"), (9, "text"), (3, "text"), (3, "tool")]
    ):
        rec = orjson.loads(orjson.dumps(BASE))
        rec["uuid"] = f"u-{n}"
        rec["message"]["id"] = rec["requestId"] = f"m{n // 4}"  # lines 0-3, then 4-5
        rec["message"]["usage"]["output_tokens"] = output
        rec["message"]["content"] = [tool if content == "tool" else BASE["message"]["content"][0]]
        lines.append(orjson.dumps(rec))
    home = tmp_path / "claude"
    path = home / "projects" / "-p" / "5c766d26-8a81-4c79-877d-6e2e52307faf.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    engine = _events(home, engine=True)
    assert engine == _events(home, engine=False)
    assert [tools is not None for _, _, tools, _ in engine] == [True, False]


def test_real_transcripts_give_the_same_tool_uses_both_ways() -> None:
    realdata = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"
    homes = sorted(p.parent for p in realdata.rglob("projects") if p.is_dir())
    assert homes
    for home in homes:
        engine = _events(home, engine=True)
        assert engine == _events(home, engine=False)
    assert any(tools for home in homes for _, _, tools, _ in _events(home, engine=True))


def test_real_transcripts_read_without_tool_calls_give_the_same_calls() -> None:
    """A reading that only sums (no tool calls) gives the same events, less their tool calls,
    and says that it has none."""
    realdata = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"
    homes = sorted(p.parent for p in realdata.rglob("projects") if p.is_dir())
    for home in homes:
        bare = _events(home, engine=True, tools=False)
        assert bare == [(i, r, None, o) for i, r, _, o in _events(home, engine=True)]
    files = [f for home in homes for f in ClaudeSource().discover(home)]
    assert all(not read_file(f.path, tools=False).whole.tools for f in files)
    assert all(read_file(f.path).whole.tools for f in files)
