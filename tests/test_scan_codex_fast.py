"""The cheap ways a Codex scan takes: it reads in process below its own size threshold (a Codex
rollout is mostly lines nobody decodes, so workers pay later than for Claude transcripts), and a
report that only sums leaves tool calls unread, with every other figure as a full read's."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from node_agent import report
from node_agent.scan import read_file
from node_agent.simulate.fleet import generate_fleet
from node_agent.sources._codex_lines import ignored, number_kept_lines, wanted
from node_agent.sources.base import Collector
from node_agent.sources.codex import CodexSource
from node_agent.tailer import _number
from shared.config import NodeConfig
from shared.events import Agent


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("codexfast") / "fleet"
    generate_fleet(root, seed=23, machines=1, start=datetime(2026, 10, 12, tzinfo=UTC), days=2)
    return root / "spark01"


def _pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker pools `build_report` starts from now on (their sizes)."""
    asked: list[int] = []
    real = multiprocessing.get_context("fork")

    class Recording:
        def Pool(self, processes: int) -> Any:  # noqa: N802 (multiprocessing's name)
            asked.append(processes)
            return real.Pool(min(processes, 2))

    monkeypatch.setattr(report, "worker_context", Recording)
    return asked


def _home(machine: Path, agent: str) -> Path:
    return min(p for p in machine.iterdir() if p.name.startswith(agent))


def test_each_agent_is_weighed_against_its_own_threshold(
    monkeypatch: pytest.MonkeyPatch, machine: Path
) -> None:
    """Thresholds set just below and above the homes' sizes: the Codex home alone stays in
    process under the Codex threshold, the Claude home goes to workers over the general one."""
    asked = _pools(monkeypatch)
    codex, claude = _home(machine, "codex"), _home(machine, "claude")
    codex_size = sum(f.stat().st_size for f in codex.rglob("*") if f.is_file())
    monkeypatch.setattr(report, "PARALLEL_MIN_BYTES", 1024)
    # (raising=False: before there were per-agent thresholds, the Codex home went to workers)
    monkeypatch.setattr(report, "_PARALLEL_MIN_BYTES_OF", {Agent.CODEX: codex_size + 1}, False)
    query = report.Query(("day",), UTC)
    alone = report.build_report([codex], NodeConfig(), query)
    assert alone.rollup.total.calls > 0
    assert asked == []  # read in process
    both = report.build_report([codex, claude], NodeConfig(), query)
    assert both.rollup.total.calls > alone.rollup.total.calls
    assert len(asked) == 1  # the Claude bytes alone are over the general threshold
    monkeypatch.setattr(report, "_PARALLEL_MIN_BYTES_OF", {Agent.CODEX: codex_size // 2})
    again = report.build_report([codex], NodeConfig(), query)
    assert len(asked) == 2  # twice the Codex threshold: workers
    assert msgspec.json.encode(again.rollup.total) == msgspec.json.encode(alone.rollup.total)


def _read(files: list[Path], *, tools: bool) -> Collector:
    source = CodexSource()
    source.wants_quota_readings = False
    source.wants_tool_calls = tools
    sink = Collector()
    for file in sorted((f for p in files for f in source.discover(p)), key=lambda f: str(f.path)):
        read_file(source, file, sink)
    return sink


def test_a_read_without_tool_calls_differs_from_a_full_read_only_in_them(machine: Path) -> None:
    home = _home(machine, "codex")
    full, summed = _read([home], tools=True), _read([home], tools=False)
    assert any(e.tool_calls for e in full.events.usage.values())  # not a vacuous comparison
    assert all(e.tool_calls is None for e in summed.events.usage.values())
    assert {
        k: msgspec.structs.replace(e, tool_calls=None) for k, e in full.events.usage.items()
    } == (summed.events.usage)
    assert full.problems == summed.problems
    assert full.skipped == summed.skipped


# --- the line prefilter's fast path -----------------------------------------------------------


def _part(usual: bytes, *variants: bytes) -> st.SearchStrategy[bytes]:
    """The usual part half the time, else one of its variants."""
    return st.one_of(st.just(usual), st.sampled_from(variants))


# A line head built part by part, each part the usual one or a variant of it (a missing or
# doubled quote, another key, a kind the rules read, text past the 512-byte head...).
_LINES = st.tuples(
    _part(b'{"timestamp":"', b'{"timestamp": "', b'{"ts":"', b"", b'{"type":"x","timestamp":"'),
    _part(b"2026-03-01T10:00:05.120Z", b"", b'20"26', b"x" * 600, b'x"type":"session_meta'),
    _part(b'","type":"', b'", "type":"', b'","type":', b'"', b""),
    _part(
        b"event_msg",
        b"response_item",
        b"session_meta",
        b"turn_context",
        b"token_usage_record",
        b"turn_contexts",
        b"compacted",
        b"Event_msg",
        b"",
    ),
    _part(b'","payload":{"type":"', b'","payload":{"type": "', b'","payload":{"kind":"', b""),
    _part(
        b"message",
        b"token_count",
        b"function_call",
        b"agent_message",
        b"",
        b"x" * 600,
        b'message","type":"token_count',
    ),
    _part(b'"', b"", b'"}', b'\\"'),
    _part(b"}", b',"x":1}', b"", b"x" * 300 + b"}", b"\r", b'"}'),
).map(b"".join)


@example(b'{"timestamp":"2026","type":"event_msg","payload":{"type":"message}', 0, None)
@example(b'{"timestamp":"x"type":"session_meta","type":"event_msg","payload":{"type":"m"}', 0, None)
@example(b'{"timestamp":"' + b"x" * 480 + b'","type":"event_msg","payload":{"type":"m"}', 0, None)
@settings(max_examples=2000, deadline=None)
@given(_LINES, st.one_of(st.just(0), st.integers(0, 40)), st.one_of(st.none(), st.integers(0, 900)))
def test_the_prefilters_fast_path_drops_exactly_what_the_full_one_drops(
    data: bytes, start: int, length: int | None
) -> None:
    """`ignored` reads the usual head with one match; the full path (`wanted`, by finds) is
    the reference, on random heads (cut anywhere, the 512-byte head limit crossed)."""
    start = min(start, len(data))
    end = len(data) if length is None else min(start + length, len(data))
    full = end > start and data[end - 1] == 0x7D and not wanted(data, start, end)
    assert ignored(data, start, end) == full


def test_the_fast_path_reads_the_lines_codex_writes(machine: Path) -> None:
    """Not vacuous: it decides most of a generated rollout's lines by the head match, and as
    the full path does."""
    lines = [
        line
        for f in _home(machine, "codex").rglob("*.jsonl")
        for line in f.read_bytes().split(b"\n")
    ]
    usual = [
        line
        for line in lines
        if line.startswith(b'{"timestamp":"') and b'"payload":{"type":"' in line[:120]
    ]
    assert len(usual) > len(lines) // 2
    assert [ignored(line, 0, len(line)) for line in lines] == [
        bool(line) and line.endswith(b"}") and not wanted(line) for line in lines
    ]
    assert sum(ignored(line, 0, len(line)) for line in lines) > len(lines) // 3


@settings(max_examples=500, deadline=None)
@given(
    st.lists(_LINES, max_size=8),
    st.sampled_from([b"\n", b"\r\n"]),
    st.integers(0, 5),
    st.integers(0, 1000),
)
def test_the_codex_numberer_keeps_and_numbers_lines_as_the_line_test_does(
    lines: list[bytes], newline: bytes, cut: int, lineno: int
) -> None:
    """`number_kept_lines` is `tailer._number` with `ignored` written in: the same lines kept,
    with the same numbers, on blocks of random heads (blank lines, CRs, a cut last line)."""
    block = newline.join(lines)
    end = max(len(block) - cut, 0)
    ours: list[tuple[int, bytes]] = []
    reference: list[tuple[int, bytes]] = []
    assert number_kept_lines(block, end, lineno, ours) == _number(
        block, end, lineno, reference, ignored
    )
    assert ours == reference


def test_a_codex_scan_reads_with_its_numberer() -> None:
    assert CodexSource().line_numberer() is number_kept_lines
