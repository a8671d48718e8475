"""`Source.ignores`: a cold scan skips lines in the read buffer without copying them out.

The promise is that a skipped line is one `feed_line` would have dropped without a word, so a
scan with the prefilter equals a scan without it: the same events, problems, skip counts, and
line numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from node_agent.scan import read_file
from node_agent.simulate.fleet import generate_fleet
from node_agent.sources.base import Collector, FileKind, Source, SourceFile
from node_agent.sources.claude import ClaudeSource
from node_agent.sources.codex import CodexSource
from node_agent.tailer import iter_plain_lines

CLAUDE_USER = b'{"type":"user","message":{"role":"user","content":"hi"},"uuid":"u1"}'
CLAUDE_ASSISTANT = (
    b'{"type":"assistant","timestamp":"2026-10-05T10:00:00Z","sessionId":"s1","requestId":"r1",'
    b'"message":{"id":"m1","model":"claude-sonnet-4-5","usage":{"input_tokens":3,'
    b'"output_tokens":5,"cache_read_input_tokens":0,"cache_creation_input_tokens":0}}}'
)
CODEX_ITEM = b'{"timestamp":"2026-10-05T10:00:00Z","type":"response_item","payload":{"type":"x"}}'

# A rate-limit refusal carries no usage object: only its error mark lets it through.
CLAUDE_LIMIT = (
    b'{"type":"assistant","timestamp":"2026-10-05T10:00:00Z","isApiErrorMessage":true,'
    b'"sessionId":"s1","message":{"model":"<synthetic>","content":[{"type":"text",'
    b'"text":"Claude AI usage limit reached|1791036000"}]}}'
)

EDGE_LINES = [
    CLAUDE_USER,
    CLAUDE_ASSISTANT,
    CODEX_ITEM,
    b'{"type":"summary","summary":"no usage here"}',
    b'{"type":"user","message":{"role":"user","content":"cut',  # torn
    CLAUDE_ASSISTANT[:-3],  # torn assistant line
    b"garbage",
    b"}",
    CLAUDE_USER + b"   ",  # trailing blanks: not for the prefilter to decide
    CLAUDE_LIMIT,
    b'{"timestamp":"2026-10-05T10:00:00Z","type":"event_msg","payload":{"type":"agent_message"}}',
    b'{"timestamp":"2026-10-05T10:00:00Z","type":"event_msg","payload":{"type":"token_count"}}',
]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prefilter") / "fleet"
    generate_fleet(root, seed=5, machines=2, start=datetime(2026, 10, 5, tzinfo=UTC), days=2)
    return root


def _homes(fleet: Path, prefix: str) -> list[Path]:
    return sorted(
        h for m in fleet.iterdir() if m.is_dir() for h in m.iterdir() if h.name.startswith(prefix)
    )


def _outcome(sink: Collector) -> tuple[object, ...]:
    return (
        sorted((e.event_id, e.revision, e.tokens, e.origin) for e in sink.events.usage.values()),
        sorted(e.event_id for e in sink.events.limits.values()),
        sorted((p.path, p.line, p.reason) for p in sink.problems),
        sorted(sink.skipped.items()),
    )


def _scan(source: Source, homes: list[Path], prefilter: bool) -> Collector:
    if not prefilter:
        source.line_test = lambda: None  # type: ignore[method-assign]
    sink = Collector()
    for home in homes:
        for file in source.discover(home):
            read_file(source, file, sink)
    return sink


@pytest.mark.parametrize(("make", "prefix"), [(ClaudeSource, "claude"), (CodexSource, "codex")])
def test_a_scan_with_the_prefilter_equals_one_without(
    fleet: Path, make: type[Source], prefix: str
) -> None:
    homes = _homes(fleet, prefix)
    with_filter = _scan(make(), homes, prefilter=True)
    without = _scan(make(), homes, prefilter=False)
    assert with_filter.events.usage, "the generated fleet has calls"
    assert _outcome(with_filter) == _outcome(without)


def _claude_droppable(rec: dict[str, Any]) -> bool:
    """Said from the parsed record, not from the bytes: a user line, or one with no usage and
    no API error (what feed_line would drop without a word)."""
    msg = rec.get("message")
    has_usage = isinstance(msg, dict) and "usage" in msg
    return rec.get("type") == "user" or (not has_usage and not rec.get("isApiErrorMessage"))


def _codex_droppable(rec: dict[str, Any]) -> bool:
    payload = rec.get("payload")
    inner = payload.get("type") if isinstance(payload, dict) else None
    return rec.get("type") in ("response_item", "compacted", "world_state") or (
        rec.get("type") == "event_msg"
        and inner
        not in ("token_count", "task_complete", "error", "task_started", "thread_settings_applied")
    )


@pytest.mark.parametrize(
    ("make", "prefix", "droppable"),
    [(ClaudeSource, "claude", _claude_droppable), (CodexSource, "codex", _codex_droppable)],
)
def test_every_ignored_line_is_one_nobody_needs(
    fleet: Path, make: type[Source], prefix: str, droppable: Callable[[dict[str, Any]], bool]
) -> None:
    """The byte-level test agrees with a reading of the parsed record (an independent oracle:
    feed_line itself calls the prefilter, so comparing with it would prove nothing)."""
    source = make()
    lines = [line for home in _homes(fleet, prefix) for f in source.discover(home)
             if f.path.suffix == ".jsonl" for _, line in iter_plain_lines(f.path)]  # fmt: skip
    ignored = 0
    for line in [*lines, *EDGE_LINES]:
        if source.ignores(line, 0, len(line)):
            ignored += 1
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                # Garbage that merely ends in a brace: skipped unreported, as before the
                # prefilter existed; it must at least hold nothing billable.
                assert b'"usage"' not in line and b'"payload"' not in line, line[:200]
                continue
            assert droppable(record), line[:200]
    assert ignored > len(lines) // 4, "most lines of a transcript are skipped"


@pytest.mark.parametrize("make", [ClaudeSource, CodexSource])
def test_the_prefilter_reads_in_place_and_never_skips_a_torn_line(make: type[Source]) -> None:
    source = make()
    buffer = b"\n".join(EDGE_LINES)
    start = 0
    for line in EDGE_LINES:
        end = start + len(line)
        assert source.ignores(buffer, start, end) == source.ignores(line, 0, len(line))
        if not line.endswith(b"}"):
            assert not source.ignores(buffer, start, end), line
        start = end + 1
    assert not source.ignores(b"", 0, 0)


def test_skipped_lines_keep_their_line_numbers(tmp_path: Path) -> None:
    """A torn line after many skipped user lines is reported at its own line number."""
    path = tmp_path / "projects" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    body = [CLAUDE_USER] * 5 + [b"", CLAUDE_USER + b"\r", b"not json", CLAUDE_ASSISTANT]
    path.write_bytes(b"\n".join(body) + b"\n" + CLAUDE_USER[:20])
    source = ClaudeSource()
    handed = list(iter_plain_lines(path, None, source.line_test()))
    assert [n for n, _ in handed] == [8, 9, 10]
    sink = Collector()
    read_file(source, SourceFile(path, FileKind.JSONL), sink)
    assert [(p.line, p.reason) for p in sink.problems] == [
        (8, "not a complete JSON object (torn or garbage line)")
    ]
    assert len(sink.events.usage) == 1
    assert next(iter(sink.events.usage.values())).origin == f"{path}:9"
    assert sink.skipped["incomplete last line (still being written)"] == 1


def test_a_limit_line_without_usage_is_not_skipped(tmp_path: Path) -> None:
    path = tmp_path / "projects" / "p" / "s.jsonl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join([CLAUDE_USER, CLAUDE_LIMIT, CLAUDE_USER]) + b"\n")
    sink = Collector()
    read_file(ClaudeSource(), SourceFile(path, FileKind.JSONL), sink)
    assert [e.origin for e in sink.events.limits.values()] == [f"{path}:2"]


CODEX_EXTRA = [
    b'{"timestamp":"2026-10-05T10:00:01Z","type":"event_msg","payload":{"type":"token_count"',
    b'{"timestamp":"2026-10-05T10:00:01Z","type":"response_item","payload":{"type":"mess',
    b'  {"timestamp":"2026-10-05T10:00:02Z","type":"event_msg","payload":{"type":"token_count"}}',
    b'{"timestamp":"2026-10-05T10:00:03Z","type":"response_item","payload":{}}  ',
    b'{"timestamp":"2026-10-05T10:00:03Z","type":"response_item","payload":{"x":}}',
]


@pytest.mark.parametrize("make", [ClaudeSource, CodexSource])
def test_kept_lines_are_read_as_feed_line_reads_them(tmp_path: Path, make: type[Source]) -> None:
    """A reader that ran `ignores` hands kept lines to `feed_kept_line`, which skips the test:
    line by line, the outcome must be `feed_line`'s."""
    path = tmp_path / "projects" / "p" / "rollout-2026-10-05T10-00-00-s.jsonl"
    for number, line in enumerate([*EDGE_LINES, *CODEX_EXTRA], start=1):
        plain, kept = make(), make()
        by_feed, by_kept = Collector(), Collector()
        plain.feed_line(path, number, line, by_feed)
        if not kept.ignores(line, 0, len(line)):
            kept.feed_kept_line(path, number, line, by_kept)
        plain.flush(by_feed)
        kept.flush(by_kept)
        assert _outcome(by_kept) == _outcome(by_feed), line
