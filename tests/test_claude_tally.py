"""A transcript whose calls need no dedupe is priced straight from its lines (`claude_tally`):
its report equals the one the source's dedupe gives, row for row, to the last digit, with the
same skips, problems and unknown models, and in the same order; any file where a call's ids come
back goes through the source."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent import claude_tally
from node_agent import report as report_module
from node_agent.claude_reading import read_file
from node_agent.render import render_json
from node_agent.report import Query, Report
from node_agent.scan import Target
from node_agent.scan_index import Task, decode_reading
from node_agent.sources._claude_line import UsageLine
from node_agent.sources.base import FileKind, SourceFile
from pricing.rollup import Attribution, Rollup
from shared.config import Billing, Profile
from shared.events import Agent

QUERIES = [
    Query(("day",), UTC),
    Query(("model", "session", "role", "project"), UTC),
    Query(("week", "machine", "profile", "account", "agent"), UTC),
]
MODELS = ["claude-sonnet-4-5", "claude-opus-4-6", "claude-sonnet-4-5", "mystery-model"]


def _line(rng: random.Random, msg: int, session: str) -> dict[str, Any]:
    split = rng.random() < 0.8
    write = rng.randrange(0, 400)
    usage: dict[str, Any] = {
        "input_tokens": rng.randrange(0, 5_000),
        "output_tokens": rng.randrange(0, 3_000),
        "cache_read_input_tokens": rng.randrange(0, 300_000),
        "cache_creation_input_tokens": write + (rng.random() < 0.1),  # now and then a mismatch
    }
    if split:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": write,
            "ephemeral_1h_input_tokens": 0,
        }
    if rng.random() < 0.1:
        usage["speed"] = "fast"
    rec: dict[str, Any] = {
        "type": "assistant",
        "timestamp": f"2026-0{rng.randrange(1, 6)}-1{rng.randrange(0, 9)}T1{rng.randrange(10)}"
        f":00:00.000Z",
        "sessionId": session,
        "cwd": rng.choice(["/w/a", "/w/b", None]),
        "isSidechain": rng.random() < 0.2,
        "uuid": f"u-{msg}-{rng.randrange(4)}",
        "message": {
            "id": f"msg_{msg}",
            "model": rng.choice(MODELS),
            "content": [{"type": "tool_use", "name": "Read", "input": {"f": msg}}],
            "usage": usage,
        },
    }
    if rng.random() < 0.85:
        rec["requestId"] = f"req_{msg}"
    if rng.random() < 0.05:
        del rec["message"]["id"]  # a gateway's line: never deduped
    if rng.random() < 0.03:
        rec["message"]["model"] = "<synthetic>"
    return rec


def _transcript(rng: random.Random, path: Path, repeats: bool) -> None:
    """A session's lines: streamed snapshots of each call (growing, or not), some garbage, and
    with `repeats` ids met again further on (replays, sidechain copies, reused uuids)."""
    lines: list[bytes] = []
    session = f"sess-{rng.randrange(3)}"
    for msg in range(rng.randrange(1, 12)):
        rec = _line(rng, msg, session)
        for _ in range(rng.randrange(1, 4)):
            rec["message"]["usage"]["output_tokens"] += rng.choice([0, 5, -1])
            rec["message"]["usage"]["output_tokens"] = max(
                0, rec["message"]["usage"]["output_tokens"]
            )
            lines.append(orjson.dumps(rec))
        if rng.random() < 0.1:
            lines.append(b'{"type":"assistant","message":{"usage":{"input_tokens":"x"}}}')
        if rng.random() < 0.05:
            lines.append(b"{torn")
    if repeats and lines:
        first = orjson.loads(lines[0])
        if rng.random() < 0.5:
            # A copy of the call under another request id, sidechain or not: one message id
            # under two event ids, which the source's sidechain rule settles.
            first["requestId"] = "req_copy"
            first["isSidechain"] = not first.get("isSidechain")
        lines.append(orjson.dumps(first))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")


def _both(
    path: Path, target: Target, query: Query, monkeypatch: pytest.MonkeyPatch
) -> tuple[Report, Report, bool]:
    outcome = read_file(path)
    files = [(0, SourceFile(path, FileKind.JSONL, 0))]
    readings = [(outcome.whole, outcome.size)]
    solo = claude_tally.solo_calls(outcome.whole) is not None
    fast = report_module._merge_files(files, readings, [target], "node-1", query)
    with monkeypatch.context() as patch:
        patch.setattr(report_module, "solo_calls", lambda _reading: None)
        slow = report_module._merge_files(files, readings, [target], "node-1", query)
    return fast, slow, solo


def _same(fast: Report, slow: Report) -> None:
    assert render_json(fast) == render_json(slow)
    # Order too: a merge adds rows, skips and problems in the order they come.
    assert list(fast.rollup.rows) == list(slow.rollup.rows)
    assert list(fast.skipped.items()) == list(slow.skipped.items())
    assert fast.problems == slow.problems
    assert list(fast.unknown_models.items()) == list(slow.unknown_models.items())


@pytest.mark.parametrize("seed", range(6))
def test_a_file_priced_from_its_lines_equals_the_source_s_dedupe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rng = random.Random(seed)
    home = tmp_path / "claude"
    profile = Profile(
        name="work", agent=Agent.CLAUDE_CODE, home=home, account="a@x", billing=Billing.SUBSCRIPTION
    )
    used = {True: 0, False: 0}
    for n in range(40):
        path = home / "projects" / f"p{n % 3}" / f"s{n}.jsonl"
        _transcript(rng, path, repeats=rng.random() < 0.3)
        target = Target(home, Agent.CLAUDE_CODE, profile if n % 2 else None)
        fast, slow, solo = _both(path, target, rng.choice(QUERIES), monkeypatch)
        _same(fast, slow)
        used[solo] += 1
    assert used[True] > 10 and used[False] > 3  # both ways were taken


def test_a_call_met_again_further_on_goes_through_the_source(tmp_path: Path) -> None:
    path = tmp_path / "claude" / "projects" / "p" / "s.jsonl"
    rng = random.Random(7)
    rec = _line(rng, 1, "s")
    rec["requestId"] = "req_1"
    other = _line(rng, 2, "s")
    other["requestId"] = "req_2"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(map(orjson.dumps, [rec, other, rec])) + b"\n")
    assert claude_tally.solo_calls(read_file(path).whole) is None


def test_only_streamed_snapshots_that_add_nothing_count_as_skipped(tmp_path: Path) -> None:
    path = tmp_path / "claude" / "projects" / "p" / "s.jsonl"
    rng = random.Random(8)
    rec = _line(rng, 1, "s")
    rec["requestId"] = "req_1"
    rec["message"]["usage"]["output_tokens"] = 10
    lines = [orjson.dumps(rec)]
    for output in (10, 12, 11):
        rec["message"]["usage"]["output_tokens"] = output
        lines.append(orjson.dumps(rec))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    solo = claude_tally.solo_calls(read_file(path).whole)
    assert solo is not None and len(solo.lines) == 1
    assert solo.snapshots == 2  # the repeat of 10, and 11 after 12
    assert solo.lines[0].tokens[1] == 12


# Zones with DST, half- and quarter-hour offsets, and a 30-minute DST shift.
ZONES = ["UTC", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu", "Australia/Lord_Howe"]
KEYS = ["day", "week", "month", "model", "agent", "profile", "account", "machine", "project",
        "session", "role"]  # fmt: skip
# Anchors: local midnights, DST changes and year ends (ISO weeks), or anywhere; each example's
# calls fall within two days of its anchor, so that many share a UTC date but not a local one.
ANCHORS = st.one_of(
    st.floats(1.7e9, 1.8e9),
    st.sampled_from([1735689600.0, 1741503600.0, 1743865200.0, 1767225600.0, 1775354400.0]),
)


def _lines(anchor: float) -> st.SearchStrategy[list[UsageLine]]:
    line = st.builds(
        lambda ts, model, session, project, side: UsageLine(
            1,
            "claude:m:r",
            "m",
            2,
            ts,
            model,
            (1, 2, 3, 0, 0, 0, 0),
            session,
            side,
            None,
            project,
            None,
            None,
            None,
            None,
            False,
            None,
            None,
            None,
            None,
        ),  # fmt: skip
        st.floats(anchor - 2 * 86400, anchor + 2 * 86400),
        st.sampled_from(MODELS),
        st.sampled_from(["s1", "s2"]),
        st.sampled_from(["/w/a", "/w/b", None]),
        st.booleans(),
    )
    return st.lists(line, min_size=1, max_size=40)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True),
    st.sampled_from(ZONES),
    st.builds(Attribution, st.sampled_from(["n1", None]), st.sampled_from(["p", None])),
    ANCHORS.flatmap(_lines),
)
def test_row_keys_worked_out_once_equal_each_call_s_own(
    by: list[str], zone: str, attribution: Attribution, lines: list[UsageLine]
) -> None:
    rollup = Rollup(tuple(by), ZoneInfo(zone))
    row_of = claude_tally.RowKeys(rollup, attribution)
    for line in lines + lines[::-1]:  # again, from the memo
        assert row_of(line) == rollup.key(claude_tally.LineCall(line), attribution)


# Fixed offsets (`--tz UTC`, the default, or a zone of one offset), micro- and sub-second ones.
FIXED = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=45)), timezone(-timedelta(hours=9, seconds=1))]
    + [timezone(timedelta(microseconds=7)), timezone(-timedelta(hours=23, microseconds=999_999))]
)
# Times at and around local midnights (to the microsecond's rounding), or anywhere.
NEAR_MIDNIGHT = st.builds(
    lambda days, offset, shift: days * 86400.0 - offset.utcoffset(None).total_seconds() + shift,
    st.integers(19_000, 21_000),
    FIXED,
    st.sampled_from([0.0, 1.0, -1.0, 0.4999995, -0.0000005, 1e-6, -1e-6, 86399.9999996]),
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True),
    FIXED,
    st.lists(st.one_of(NEAR_MIDNIGHT, st.floats(1.7e9, 1.8e9)), min_size=1, max_size=30),
)
def test_buckets_of_a_fixed_offset_zone_hold_each_call_s_own_date(
    by: list[str], tz: timezone, stamps: list[float]
) -> None:
    """`RowKeys.alike` tells the date of a fixed-offset zone's calls from the last day's span:
    each call lands in the bucket of its own date all the same, in any order of times."""
    rollup = Rollup(tuple(by), tz)
    attribution = Attribution("n1", None)
    lines = [
        msgspec.structs.replace(_ONE, ts=ts, lineno=n) for n, ts in enumerate(stamps + stamps[::-1])
    ]
    for row, _kind, _unsplit, alike in claude_tally.RowKeys(rollup, attribution).alike(lines):
        for line in alike:
            assert row == rollup.key(claude_tally.LineCall(line), attribution)
        days = {datetime.fromtimestamp(line.ts, tz).date() for line in alike}
        assert len(days) == 1 or not {"day", "week", "month"} & set(by)


_ONE = UsageLine(
    1, "claude:m:r", "m", 2, 0.0, "claude-sonnet-4-5", (1, 2, 3, 0, 0, 0, 0), "s1", False, None,
    "/w/a", None, None, None, None, False, None, None, None, None,
)  # fmt: skip


def test_a_reading_read_through_is_held_as_its_msgpack(tmp_path: Path) -> None:
    """`_read_claude` keeps a reading the index keeps as that msgpack, as a helper's comes back,
    so that its objects are freed while the files are read, not all at the end of a scan; the
    merge of a group decodes it again, equal. A file with an unterminated last line keeps its
    whole reading (the index keeps less of it)."""
    home = tmp_path / "claude"
    done = home / "projects" / "p" / "done.jsonl"
    _transcript(random.Random(3), done, repeats=False)
    torn = home / "projects" / "p" / "torn.jsonl"
    _transcript(random.Random(4), torn, repeats=False)
    with torn.open("ab") as fh:
        fh.write(orjson.dumps(_line(random.Random(5), 99, "s")))  # no newline: being written
    target = Target(home, Agent.CLAUDE_CODE)
    query = Query(("day",), UTC)
    for path, held in ((done, True), (torn, False)):
        file = (0, SourceFile(path, FileKind.JSONL, 0))
        work = (Task(str(path), tools=False), file, [target], "node-1", query, b"ctx")
        part = report_module._read_claude(work)
        assert (part.whole is None) is held
        assert part.entry is not None
        if held:
            assert part.raw is part.entry.reading
            reading, _size = report_module._reading(file, part, None)
            assert reading == decode_reading(part.entry.reading)
            assert reading == read_file(path, tools=False).whole


def test_a_helpers_reading_comes_back_as_read_here(tmp_path: Path) -> None:
    """A transcript read by a helper (`_read_claude_shipped`, then `_received`) comes back as
    `_read_claude` reads it here: its calls (shipped once, in its entry, when the entry holds
    the whole reading), its reading and its own report key, which is the merge's `_key` of the
    file as a group of its own (None without an index, or for a file not kept whole)."""
    home = tmp_path / "claude"
    done = home / "projects" / "p" / "done.jsonl"
    _transcript(random.Random(6), done, repeats=False)
    torn = home / "projects" / "p" / "torn.jsonl"
    _transcript(random.Random(7), torn, repeats=False)
    with torn.open("ab") as fh:
        fh.write(orjson.dumps(_line(random.Random(8), 99, "s")))  # no newline: being written
    for path in (done, torn):  # written long before it is read (not racy: `Entry.racy`)
        os.utime(path, ns=(1_700_000_000 * 10**9,) * 2)
    target = Target(home, Agent.CLAUDE_CODE)
    query = Query(("day",), UTC)
    for path, held in ((done, True), (torn, False)):
        file = (0, SourceFile(path, FileKind.JSONL, 0))
        for context in (b"ctx", b""):
            work = (Task(str(path), tools=False), file, [target], "node-1", query, context)
            here = report_module._read_claude(work)
            shipped = report_module._read_claude_shipped(work)
            assert (report_module._decode_shipped(shipped).calls == []) is held
            back = report_module._received(shipped)
            assert here.calls and back.calls == here.calls
            assert back.keepable == here.keepable == held
            assert back.key == here.key == report_module._key(context, [file], [here])
            assert (here.key is not None) is (held and bool(context))
            if not held:
                assert back.raw is not None
                assert decode_reading(back.raw) == here.whole
