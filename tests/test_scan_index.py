"""The scan index: a repeat scan reads only what changed, and its report always equals a full
re-read (random appends, truncations, renames, replacements and deletions between scans), which
equals the streaming source fed every line."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_agent import claude_reading, file_digest, scan_index
from node_agent import report as report_module
from node_agent.cli import main
from node_agent.render import render_json
from node_agent.report import Query, build_report
from node_agent.scan import scan
from node_agent.simulate.fleet import generate_fleet
from node_agent.sources.claude import ClaudeSource
from shared.config import NodeConfig

QUERY = Query(("day", "session", "role", "model"), UTC)
SESSIONS = ["11111111-aaaa-4000-8000-000000000001", "22222222-bbbb-4000-8000-000000000002"]
NAMES = [
    "p1/11111111-aaaa-4000-8000-000000000001.jsonl",
    "p1/11111111-aaaa-4000-8000-000000000001/subagents/agent-a1.jsonl",
    "p2/22222222-bbbb-4000-8000-000000000002.jsonl",
    "p2/33333333-cccc-4000-8000-000000000003.jsonl",
]


def usage_line(
    msg: int, output: int, *, request: bool = True, side: bool = False, session: int = 0
) -> bytes:
    rec: dict[str, Any] = {
        "type": "assistant",
        "timestamp": f"2026-03-0{1 + msg % 3}T10:00:00.000Z",
        "sessionId": SESSIONS[session],
        "isSidechain": side,
        "uuid": f"u-{msg}-{output}",
        "message": {
            "id": f"msg_{msg}",
            "model": ["claude-sonnet-4-5", "claude-opus-4-1", "mystery-model"][msg % 3],
            "content": [{"type": "text", "text": "x" * (output % 50)}]
            + (
                [{"type": "tool_use", "name": "Bash", "input": {"n": output}}] if output % 3 else []
            ),
            "usage": {
                "input_tokens": 3 + msg,
                "output_tokens": output,
                "cache_read_input_tokens": 1000 * msg,
                "cache_creation_input_tokens": 40,
                "cache_creation": {"ephemeral_5m_input_tokens": 40, "ephemeral_1h_input_tokens": 0},
            },
        },
    }
    if request:
        rec["requestId"] = f"req_{msg}"
    return orjson.dumps(rec)


OTHER_LINES = [
    b'{"type":"user","message":{"role":"user","content":"hi"}}',
    b'{"type":"assistant","message":{"model":"<synthetic>","usage":{"input_tokens":0}},'
    b'"timestamp":"2026-03-01T10:00:00Z"}',
    b"{not json at all}",
    b'{"type":"assistant","message":{"id":"msg_9","usage":{"output_tokens":"many"}},'
    b'"timestamp":"2026-03-01T10:00:00Z","requestId":"req_9"}',
    b"",
]

lines = st.one_of(
    st.builds(
        usage_line,
        st.integers(0, 6),
        st.integers(1, 400),
        request=st.booleans(),
        side=st.booleans(),
        session=st.integers(0, 1),
    ),
    st.sampled_from(OTHER_LINES),
)
ops = st.one_of(
    st.tuples(
        st.just("append"),
        st.integers(0, 3),
        st.lists(lines, min_size=1, max_size=6),
        st.sampled_from([b"\n", b"", b'{"type":"assis']),  # ends: newline, none, torn
    ),
    st.tuples(st.just("truncate"), st.integers(0, 3), st.floats(0, 1)),
    # Truncated and written on past its old end between two scans: same inode, longer.
    st.tuples(st.just("rewrite"), st.integers(0, 3), st.floats(0, 1), st.lists(lines, min_size=1)),
    # A digit changed in place, in the clock tick of the last write (same size and mtime).
    st.tuples(st.just("tweak"), st.integers(0, 3), st.integers(0, 10_000)),
    st.tuples(st.just("rename"), st.integers(0, 3), st.integers(0, 3)),
    st.tuples(st.just("replace"), st.integers(0, 3), st.lists(lines, max_size=4)),
    st.tuples(st.just("delete"), st.integers(0, 3)),
    st.tuples(st.just("age"), st.just(0)),
    # A session streaming on: a later snapshot of its last call, and calls of its own.
    st.tuples(st.just("stream"), st.integers(0, 3), st.integers(0, 3), st.booleans()),
)


def apply(home: Path, op: tuple[Any, ...]) -> None:
    kind, index = op[0], op[1]
    path = home / "projects" / NAMES[index]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "append":
        with path.open("ab") as fh:
            fh.write(b"\n".join(op[2]) + op[3])
    elif kind in ("truncate", "rewrite") and path.exists():
        size = path.stat().st_size
        os.truncate(path, int(size * op[2]))
        with path.open("ab") as fh:
            while kind == "rewrite" and fh.tell() <= size:
                fh.write(b"".join(line + b"\n" for line in op[3]))
    elif kind == "tweak" and path.exists():
        before = path.stat()
        data = bytearray(path.read_bytes())
        digits = [i for i, byte in enumerate(data) if 0x31 <= byte <= 0x38]
        if digits and time.time_ns() - before.st_mtime_ns < 1_000_000_000:
            data[digits[op[2] % len(digits)]] += 1
            with path.open("r+b") as fh:
                fh.write(data)
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    elif kind == "rename" and path.exists():
        target = home / "projects" / NAMES[op[2]]
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    elif kind == "replace":
        fresh = path.with_name(path.name + ".new")
        fresh.write_bytes(b"".join(line + b"\n" for line in op[2]))
        fresh.replace(path)
    elif kind == "delete":
        path.unlink(missing_ok=True)
    elif kind == "stream":
        size = path.stat().st_size if path.exists() else 0
        last = path.read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1] if size else b""
        try:
            found = orjson.loads(last)
            msg, output = (
                int(found["message"]["id"][4:]),
                found["message"]["usage"]["output_tokens"],
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            msg, output = -1, None  # not one of this test's usage lines: nothing to stream on
        added = []
        if op[3] and isinstance(output, int) and msg >= 0:
            added.append(usage_line(msg, output + 1, session=index % 2))
        first = 1000 + index * 1_000_000 + size  # ids of this file's own
        added += [usage_line(first + n, 5 + n, session=index % 2) for n in range(op[2])]
        with path.open("ab") as fh:
            fh.write(b"".join(line + b"\n" for line in added))
    elif kind == "age":  # time passes: every file is old enough to be taken as unchanged
        old = time.time() - 3600
        for file in (home / "projects").rglob("*.jsonl"):
            os.utime(file, (old, old))


def streaming_totals(home: Path) -> tuple[int, int, dict[str, int]]:
    """Calls, output tokens and skip counts of the streaming source fed every line."""
    result = scan([home], NodeConfig(), [ClaudeSource()])
    events = [e for r in result.results for e in r.collector.events.counted_usage()]
    skipped: dict[str, int] = {}
    for r in result.results:
        for reason, times in r.collector.skipped.items():
            skipped[reason] = skipped.get(reason, 0) + times
    return len(events), sum(e.tokens.output for e in events), skipped


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(ops, min_size=1, max_size=12), st.integers(1, 3))
def test_an_indexed_scan_always_equals_a_full_re_read(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    steps: list[tuple[Any, ...]],
    block: int,
) -> None:
    root = tmp_path_factory.mktemp("home")
    home, cache = root / "claude", root / "cache"
    (home / "projects").mkdir(parents=True)
    monkeypatch.setattr(report_module, "BLOCK_GROUPS", block)  # blocks of kept sums split
    monkeypatch.setattr(report_module, "SETTLED_MIN_CALLS", block - 1)  # settled calls kept
    for step in steps:
        apply(home, step)
        indexed = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
        full = build_report([home], NodeConfig(), QUERY, jobs=1)
        assert indexed.warnings == []
        assert render_json(indexed) == render_json(full), step
        calls, output, skipped = streaming_totals(home)
        assert (full.rollup.total.calls, full.rollup.total.tokens.output) == (calls, output)
        assert dict(full.skipped) == skipped


def _tool_calls(report: report_module.Report) -> list[tuple[str, str | None]]:
    return [(event.event_id, event.tool_calls) for event, _ in report.calls]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(ops, st.booleans()), min_size=1, max_size=10))
def test_a_reading_kept_without_tool_calls_never_serves_an_outcome_view(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[tuple[Any, ...], bool]]
) -> None:
    """Scans that only sum keep readings without tool calls; an outcome view (keep_calls)
    after them, through the same index, still sees every call's tool calls."""
    root = tmp_path_factory.mktemp("home")
    home, cache = root / "claude", root / "cache"
    (home / "projects").mkdir(parents=True)
    for step, outcome in steps:
        apply(home, step)
        query = msgspec.structs.replace(QUERY, keep_calls=outcome)
        indexed = build_report([home], NodeConfig(), query, jobs=1, cache_dir=cache)
        full = build_report([home], NodeConfig(), query, jobs=1)
        assert indexed.warnings == []
        assert render_json(indexed) == render_json(full), step
        assert _tool_calls(indexed) == _tool_calls(full), step


def test_an_outcome_view_after_a_sum_reads_the_tool_calls_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cache = _home(tmp_path), tmp_path / "cache"
    seen = _reads(monkeypatch)
    build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    seen.clear()
    outcome = msgspec.structs.replace(QUERY, keep_calls=True)
    got = build_report([home], NodeConfig(), outcome, jobs=1, cache_dir=cache)
    assert sorted(seen) == sorted((path.name, 0) for path in home.rglob("*.jsonl"))
    assert any(tools for _, tools in _tool_calls(got))
    assert _tool_calls(got) == _tool_calls(build_report([home], NodeConfig(), outcome, jobs=1))
    seen.clear()
    build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert seen == []  # a reading with tool calls serves a sum too


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "claude"
    for index, name in enumerate(NAMES[::2]):
        path = home / "projects" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(usage_line(index * 3 + n, 10) + b"\n" for n in range(3)))
    _age(home)
    return home


def _age(home: Path) -> None:
    """Every transcript last written an hour ago: not in the clock tick of a scan's read."""
    old = time.time() - 3600
    for file in (home / "projects").rglob("*.jsonl"):
        os.utime(file, (old, old))


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every file the scan reads, with the offset it starts at."""
    seen: list[tuple[str, int]] = []
    real = claude_reading.read_file

    def spy(path: Path, prior: claude_reading.FileReading | None = None, tools: bool = True) -> Any:
        seen.append((path.name, prior.end if prior else 0))
        return real(path, prior, tools)

    monkeypatch.setattr(scan_index, "read_file", spy)
    return seen


def test_a_repeat_scan_reads_only_the_appended_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cache = _home(tmp_path), tmp_path / "cache"
    seen = _reads(monkeypatch)
    first = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert len(seen) == 2 and all(start == 0 for _, start in seen)
    seen.clear()
    again = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert seen == []  # nothing changed: nothing read
    assert render_json(again) == render_json(first)
    grown = home / "projects" / NAMES[0]
    before = grown.stat().st_size
    with grown.open("ab") as fh:
        fh.write(usage_line(0, 99) + b"\n")  # a later snapshot of a known call, and a new one
        fh.write(usage_line(40, 7) + b"\n")
    after = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert seen == [(grown.name, before)]
    assert render_json(after) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))
    assert after.rollup.total.calls == first.rollup.total.calls + 1


def test_a_repeat_scan_merges_and_prices_again_only_the_files_that_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files sharing no call are merged and priced apart; those unchanged come from the index."""
    home, cache = _home(tmp_path), tmp_path / "cache"
    merged: list[list[str]] = []
    real = report_module._merge_files

    def spy(files: Any, *rest: Any) -> Any:
        merged.append([file.path.name for _, file in files])
        return real(files, *rest)

    monkeypatch.setattr(report_module, "_merge_files", spy)
    first = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert len(merged) == 2  # two sessions that share no call
    merged.clear()
    assert render_json(build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)) == (
        render_json(first)
    )
    assert merged == []
    grown = home / "projects" / NAMES[2]
    with grown.open("ab") as fh:
        fh.write(usage_line(50, 7) + b"\n")
    after = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert merged == [[grown.name]]
    assert render_json(after) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))
    other = QUERY.__class__(("model",), UTC)  # another grouping prices anew
    merged.clear()
    build_report([home], NodeConfig(), other, jobs=1, cache_dir=cache)
    assert len(merged) == 2


def test_a_repeat_scan_with_nothing_changed_takes_one_kept_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not one per group of files: the sum of them all, kept under the key of every group's."""
    home, cache = _home(tmp_path), tmp_path / "cache"
    first = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    taken: list[bytes] = []
    real = report_module._unpickled

    def spy(blob: bytes) -> Any:
        taken.append(blob)
        return real(blob)

    monkeypatch.setattr(report_module, "_unpickled", spy)
    again = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert len(taken) == 1
    assert render_json(again) == render_json(first)
    with (home / "projects" / NAMES[0]).open("ab") as fh:
        fh.write(usage_line(60, 7) + b"\n")
    taken.clear()
    after = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert len(taken) == 1  # the unchanged file's group; the sum no longer holds
    assert render_json(after) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))


def test_an_append_takes_the_kept_sums_of_the_blocks_it_did_not_touch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four files that share no call, in blocks of two: after an append to one, the other
    block's sum and the unchanged file of its own block are taken, not each file's report."""
    home, cache = _home(tmp_path), tmp_path / "cache"
    for index, name in enumerate(NAMES[1::2]):
        path = home / "projects" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(usage_line(20 + index * 3 + n, 10) + b"\n" for n in range(3)))
    _age(home)  # (read in the tick of their writes, they would be read whole again)
    monkeypatch.setattr(report_module, "BLOCK_GROUPS", 2)
    build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    taken: list[bytes] = []
    real = report_module._unpickled

    def spy(blob: bytes) -> Any:
        taken.append(blob)
        return real(blob)

    monkeypatch.setattr(report_module, "_unpickled", spy)
    with (home / "projects" / NAMES[3]).open("ab") as fh:
        fh.write(usage_line(61, 7) + b"\n")
    after = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert len(taken) == 2  # the untouched block's sum, and the other file of this block
    assert render_json(after) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))


def test_after_an_append_only_the_calls_from_the_last_settled_one_are_priced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cache = _home(tmp_path), tmp_path / "cache"
    grown = home / "projects" / NAMES[0]
    grown.write_bytes(b"".join(usage_line(100 + n, 10) + b"\n" for n in range(40)))
    _age(home)
    monkeypatch.setattr(report_module, "SETTLED_MIN_CALLS", 10)
    build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    priced: list[int] = []
    real = report_module._price_lines

    def spy(report: Any, lines: Any, *rest: Any) -> None:
        priced.append(len(lines))
        real(report, lines, *rest)

    monkeypatch.setattr(report_module, "_price_lines", spy)
    with grown.open("ab") as fh:  # a later snapshot of the last call, and three new calls
        fh.write(b"".join(usage_line(n, 50 if n == 139 else 9) + b"\n" for n in range(139, 143)))
    after = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    # The 38 calls settled before are taken priced: the last two (one grew) and the three new
    # ones are priced (40 + 3 in the files before, 3 new).
    assert sum(priced) == 5 and after.rollup.total.calls == 46
    assert render_json(after) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))


def test_a_change_in_place_in_the_tick_of_the_read_is_seen_before_the_window(
    tmp_path: Path,
) -> None:
    """A transcript read in the clock tick of its last write, then changed in place in that
    tick more than a window (4 KiB) before its end, size and mtime put back: the next scan
    neither reads on from the reading nor takes the group's kept report (hypothesis found it:
    an append, a rewrite, a digit changed near the start)."""
    home, cache = tmp_path / "claude", tmp_path / "cache"
    path = home / "projects" / NAMES[0]
    path.parent.mkdir(parents=True)
    path.write_bytes(b"".join(usage_line(n, 10) + b"\n" for n in range(20)))
    assert path.stat().st_size > 2 * scan_index.WINDOW_BYTES
    first = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    before = path.stat()
    data = path.read_bytes()
    at = data.index(b"2026")
    path.write_bytes(data[:at] + b"3" + data[at + 1 :])  # the first call a thousand years on
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert render_json(after) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))
    assert render_json(after) != render_json(first)


def test_a_damaged_index_is_discarded_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _home(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["scan", "--json", str(home)]) == 0
    want = orjson.loads(capsys.readouterr().out)
    index = tmp_path / "xdg" / "fleetmeter" / scan_index.INDEX_NAME
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    assert main(["scan", "--json", str(home)]) == 0
    out, err = capsys.readouterr()
    assert orjson.loads(out) == want
    assert err.count("\n") == 1 and "scan index" in err and "damaged" in err
    assert main(["scan", "--json", str(home)]) == 0  # written anew: no more warning
    assert capsys.readouterr().err == ""


def test_new_reading_rules_drop_the_index_and_no_cache_keeps_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cache = _home(tmp_path), tmp_path / "cache"
    seen = _reads(monkeypatch)
    build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    seen.clear()
    monkeypatch.setattr(scan_index, "rules_stamp", lambda: "a newer fleetmeter")
    build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert sorted(start for _, start in seen) == [0, 0]  # read from the start again

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert main(["scan", "--json", "--no-cache", str(home)]) == 0
    assert not (tmp_path / "xdg").exists()


def test_a_pipe_in_place_of_the_index_is_named_not_waited_on(tmp_path: Path) -> None:
    home, cache = _home(tmp_path), tmp_path / "cache"
    cache.mkdir()
    os.mkfifo(cache / scan_index.INDEX_NAME)
    report = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert len(report.warnings) == 1 and "not a regular file" in report.warnings[0]
    assert render_json(report) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))
    assert (cache / scan_index.INDEX_NAME).is_file()  # written anew in its place


def test_a_report_that_cannot_be_kept_is_not_pickled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written in the clock tick of their read keep no priced group: nothing of theirs
    is pickled for the index (a scan right after an append of a few MB pickled each one's
    report for nothing)."""
    home, cache = tmp_path / "claude", tmp_path / "cache"
    for index, name in enumerate(NAMES[:2]):
        path = home / "projects" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(usage_line(index * 3 + n, 10) + b"\n" for n in range(3)))
    pickled: list[object] = []
    real = report_module._pickled

    def spy(value: object) -> bytes:
        pickled.append(value)
        return real(value)

    monkeypatch.setattr(report_module, "_pickled", spy)
    young = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert pickled == []
    assert render_json(young) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))
    _age(home)
    build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert pickled  # read again from the start, now kept priced


def _priced(index: scan_index._IndexFile) -> list[bytes]:
    """The priced reports kept in `index`: not the digests of the code they depend on (kept
    there too, `file_digest`)."""
    return [blob for blob in index.reports.values() if len(blob) != file_digest.DIGEST_BYTES]


def test_a_damaged_priced_report_in_the_index_is_priced_anew(tmp_path: Path) -> None:
    home, cache = _home(tmp_path), tmp_path / "cache"
    first = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    path = cache / scan_index.INDEX_NAME
    found = msgspec.msgpack.decode(path.read_bytes(), type=scan_index._IndexFile)
    # the two files' groups, their block and the whole sum (beside the pricing code's digest)
    assert len(_priced(found)) == 4
    found.reports = {key: b"\x80\x05not a pickle" for key in found.reports}
    path.write_bytes(msgspec.msgpack.encode(found))
    again = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert render_json(again) == render_json(first)


def test_sessions_that_share_calls_are_each_read_once_and_merged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork copied into another project shares calls with its origin: both files are read
    once and merged (the units of before read such sessions again together)."""
    home = tmp_path / "claude"
    origin = home / "projects" / NAMES[0]
    fork = home / "projects" / NAMES[2]
    for path in (origin, fork):
        path.parent.mkdir(parents=True, exist_ok=True)
    origin.write_bytes(b"".join(usage_line(n, 10 + n) + b"\n" for n in range(3)))
    copied = [usage_line(0, 10), usage_line(1, 11, side=True), usage_line(9, 5, session=1)]
    fork.write_bytes(b"".join(line + b"\n" for line in copied))
    seen = _reads(monkeypatch)
    report = build_report([home], NodeConfig(), QUERY, jobs=1)
    assert sorted(name for name, _ in seen) == sorted([origin.name, fork.name])
    calls, output, skipped = streaming_totals(home)
    assert (
        (report.rollup.total.calls, report.rollup.total.tokens.output)
        == (calls, output)
        == (
            4,
            10 + 11 + 12 + 5,
        )
    )
    assert dict(report.skipped) == skipped


def test_worker_processes_give_the_report_and_index_of_one_process(tmp_path: Path) -> None:
    """Readings and priced reports shipped back from worker processes: the same report as one
    process reading it all, and an index whose unchanged groups need no merge again."""
    home, cache = tmp_path / "claude", tmp_path / "cache"
    files = [home / "projects" / name for name in NAMES]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
    files[0].write_bytes(b"".join(usage_line(n, 10 + n) + b"\n" for n in range(3)))
    # A subagent's file: a replay of msg_1 (so it shares a call with files[0]) and its own call.
    files[1].write_bytes(
        usage_line(1, 11, side=True) + b"\n" + usage_line(30, 3, side=True) + b"\n"
    )
    files[2].write_bytes(usage_line(7, 5, session=1) + b"\n" + usage_line(8, 6, session=1))
    files[3].write_bytes(usage_line(20, 9) + b"\n")
    old = time.time() - 3600
    for path in files:
        os.utime(path, (old, old))

    def both() -> tuple[Any, Any]:
        shipped = build_report([home], NodeConfig(), QUERY, jobs=2, cache_dir=cache)
        return shipped, build_report([home], NodeConfig(), QUERY, jobs=1)

    shipped, alone = both()
    assert render_json(shipped) == render_json(alone)
    assert shipped.rollup.total.calls == 7  # msg_1's replay counts once; the torn tail too
    index = msgspec.msgpack.decode(
        (cache / scan_index.INDEX_NAME).read_bytes(), type=scan_index._IndexFile
    )
    # Groups without an unterminated line are kept priced: {0, 1} and {3}, not {2}.
    assert len(_priced(index)) == 2
    assert sorted(index.entries) == sorted(map(str, files))
    again, alone = both()
    assert render_json(again) == render_json(alone)
    with files[2].open("ab") as fh:
        fh.write(b"\n" + usage_line(9, 4, session=1) + b"\n")
    grown, alone = both()
    assert render_json(grown) == render_json(alone)
    assert grown.rollup.total.calls == 8


def test_a_damaged_reading_in_the_index_is_read_afresh(tmp_path: Path) -> None:
    """Readings stay msgpack in the index until a merge needs them: one that does not decode
    then is read from its file again, never used for figures nor a traceback."""
    home, cache = _home(tmp_path), tmp_path / "cache"
    first = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    _damage_readings(cache)
    again = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert render_json(again) == render_json(first)
    assert again.warnings == []
    # written anew (in the journal) with the readings made again
    for entry in _loaded(cache).entries.values():
        assert entry.kept().end == entry.end > 0
    _damage_readings(cache)
    grown = home / "projects" / NAMES[0]
    with grown.open("ab") as fh:  # a grown file would be read on from its damaged reading
        fh.write(usage_line(40, 7) + b"\n")
    after = build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)
    assert render_json(after) == render_json(build_report([home], NodeConfig(), QUERY, jobs=1))
    assert after.rollup.total.calls == first.rollup.total.calls + 1


def _loaded(cache: Path) -> scan_index.ScanIndex:
    """The index as a scan finds it: the whole index and its journal."""
    index, warning = scan_index.ScanIndex.load(cache)
    assert warning is None
    return index


def _damage_readings(cache: Path) -> None:
    """Every reading in the index made one that does not decode, its priced reports dropped
    (so that every group is merged again), written whole."""
    index = _loaded(cache)
    for entry in index.entries.values():
        entry.reading = memoryview(msgspec.msgpack.encode(["not", "a", "reading"]))
    assert index.save(whole=True) is None  # (keeps only the reports used: none)


def test_other_agents_units_are_kept_priced_until_one_of_their_files_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Codex, Gemini and the like: a unit whose JSONL files are unchanged (and old enough for
    size and mtime to show a write) is taken priced from the index, not read."""
    generate_fleet(tmp_path / "fleet", seed=7, machines=1, start=datetime(2026, 10, 5, tzinfo=UTC))
    machine, cache = tmp_path / "fleet" / "spark01", tmp_path / "cache"
    logs = [p for p in machine.rglob("*") if p.is_file()]
    old = time.time() - 3600
    for path in logs:
        os.utime(path, (old, old))
    seen: list[Path] = []
    real = report_module.feed_file

    def spy(source: Any, file: Any, sink: Any) -> Any:
        seen.append(file.path)
        return real(source, file, sink)

    monkeypatch.setattr(report_module, "feed_file", spy)

    def scan_it() -> str:
        return render_json(build_report([machine], NodeConfig(), QUERY, jobs=1, cache_dir=cache))

    def whole() -> str:
        return render_json(build_report([machine], NodeConfig(), QUERY, jobs=1))

    first = scan_it()
    jsonl = {p for p in seen if p.name.endswith((".jsonl", ".jsonl.zst"))}
    assert any("codex" in str(p) for p in jsonl) and any("gemini" in str(p) for p in jsonl)
    seen.clear()
    assert scan_it() == first
    assert not [p for p in seen if p.name.endswith((".jsonl", ".jsonl.zst"))]
    assert seen  # the stores that change through a journal are read each time
    rollout = sorted(p for p in jsonl if "codex" in str(p))[0]
    os.utime(rollout, (old + 1, old + 1))  # changed: its unit is read again
    seen.clear()
    assert scan_it() == first
    assert rollout in seen and not [p for p in seen if "gemini" in str(p)]
    assert whole() == first
    os.utime(rollout)  # written just now: read, and not kept
    seen.clear()
    scan_it()
    assert rollout in seen
    seen.clear()
    scan_it()
    assert rollout in seen
