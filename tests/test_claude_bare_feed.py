"""A reading without tool uses (a scan that sums) takes its own loop, `_feed_bare`: the same
runs, snapshots, problems, skips and line numbers as the general loop read without tool uses,
over transcripts of random usage lines (a call's snapshots one after another, lines the typed
path leaves to the checked one), torn and garbage lines. And its lines are found by
`number_kept_lines`, the prefilter (`ClaudeSource.ignores`) written into the line loop."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent.claude_reading import FileReading, _feed_bare, _feed_tools, _Lines
from node_agent.sources.claude import ClaudeSource, number_kept_lines
from node_agent.tailer import _number
from tests.test_claude_typed_lines import FIELDS, PATH, _mutated, values

REALDATA = Path(__file__).resolve().parent.parent.parent / "shared" / "realdata"


def _usage(call: int, output: int, changes: list[tuple[int, object]]) -> bytes:
    """A snapshot of call `call`, `output` tokens so far, some fields changed at random."""
    rec = orjson.loads(_mutated(changes))
    message = rec.get("message")
    if isinstance(message, dict):
        message["id"] = f"msg_{call}"
        usage = message.get("usage")
        if isinstance(usage, dict):
            usage["output_tokens"] = output
    rec["requestId"] = f"req_{call}"
    return orjson.dumps(rec)


OTHER = st.sampled_from(
    [
        b"",
        b"   ",
        b'{"type":"user","message":{"role":"user","content":"hi"}}',
        b'{"type":"summary","summary":"x"}',
        b'{"type":"assistant","message":{"usage":',  # torn
        b"not json at all }",
        b'{"isApiErrorMessage":true,"message":{"content":[{"type":"text","text":"limit"}]}}',
    ]
)
LINE = st.one_of(
    st.builds(
        _usage,
        st.integers(0, 3),
        st.sampled_from([1, 5, 5, 9, 200]),
        st.lists(st.tuples(st.integers(0, len(FIELDS) - 1), values), max_size=2),
    ),
    OTHER,
)


def _readings(lines: list[tuple[int, bytes]], path: Path = PATH) -> tuple[object, object]:
    out = []
    for feed in (_feed_tools, _feed_bare):
        source = ClaudeSource()
        source.wants_tool_calls = False
        reading = FileReading([], [], {}, tools=False)
        kept = [(n, line) for n, line in lines if not source.ignores(line, 0, len(line))]
        feed(source, path, reading, kept, _Lines(reading))
        out.append(reading)
    return out[0], out[1]


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=25))
def test_the_bare_loop_reads_as_the_general_one(lines: list[bytes]) -> None:
    general, bare = _readings(list(enumerate(lines, 1)))
    assert bare == general


def test_real_transcripts_read_alike_by_both_loops() -> None:
    files = sorted(f for f in REALDATA.rglob("*.jsonl") if "projects" in f.parts)
    assert len(files) > 10
    snapshots = 0
    for file in files:
        lines = list(enumerate(file.read_bytes().split(b"\n"), 1))
        general, bare = _readings(lines, file)
        assert bare == general, file
        assert isinstance(bare, FileReading)
        snapshots += sum(len(run.revisions) - 1 for run in bare.runs)
    assert snapshots > 100  # streamed replies' earlier snapshots were met


# Pieces of transcript lines: the prefilter's marks (the user mark inside and past the head it
# looks in), line ends ('}' or not, CRLF), filler.
PIECE = st.sampled_from(
    [
        b'{"type":"user"',
        b'"type":"user"',
        b'"usage"',
        b'"isApiErrorMessage"',
        b"}",
        b"\r",
        b"\n",
        b"\r\n",
        b" ",
        b"x" * 100,
        b"y" * 509,
        b'{"a":1}',
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(PIECE, max_size=40), st.integers(0, 5))
def test_the_built_in_prefilter_keeps_the_lines_ignores_keeps(
    pieces: list[bytes], lineno: int
) -> None:
    block = b"".join(pieces)
    for end in {len(block), max(0, block.rfind(b"\n"))}:
        mine: list[tuple[int, bytes]] = []
        theirs: list[tuple[int, bytes]] = []
        last = number_kept_lines(block, end, lineno, mine)
        assert last == _number(block, end, lineno, theirs, ClaudeSource().ignores)
        assert mine == theirs
