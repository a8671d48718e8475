"""Append tailer on real files: appends (also from a child process), torn lines, truncation,
rotation by rename and by os.replace, resume from a saved state, and zstd archives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest
import zstandard

from node_agent import tailer as tailer_mod
from node_agent.sources.base import Collector
from node_agent.sources.claude import ClaudeSource
from node_agent.tailer import (
    _EMPTY_FP,
    CorruptStreamError,
    Tailer,
    TailState,
    fingerprint,
    iter_head_lines,
    iter_plain_lines,
    iter_zst_lines,
)


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)


def drain(t: Tailer) -> list[tuple[int, bytes]]:
    """Poll until the tailer has nothing more waiting (bounded: a stuck tailer fails, not hangs)."""
    out = t.poll()
    for _ in range(10_000):
        if not t.more:
            return out
        out += t.poll()
    raise AssertionError("tailer keeps reporting more data")


def test_reads_appends_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2}\n')
    t = Tailer(path)
    assert t.poll() == [(1, b'{"a":1}'), (2, b'{"a":2}')]
    assert not t.reset and not t.more
    assert t.poll() == []
    append(path, b'{"a":3}\n')
    assert t.poll() == [(3, b'{"a":3}')]
    st = os.stat(path)
    read = b'{"a":1}\n{"a":2}\n{"a":3}\n'
    assert t.state == TailState(
        str(path), st.st_dev, st.st_ino, 24, 3, fingerprint(read), fingerprint(read)
    )


def test_a_pipe_put_in_place_of_the_log_is_not_opened_for_good(tmp_path: Path) -> None:
    """A FIFO renamed over a followed log (the tailer reopens it by path): open() waited for a
    writer, and the node's reader with it."""
    path = tmp_path / "s.jsonl"
    os.mkfifo(path)
    tailer = Tailer(path)
    assert tailer.poll() == [] and not tailer.is_open


def test_blank_lines_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\r\n\n{"a":2}\n')
    t = Tailer(path)
    assert t.poll() == [(1, b'{"a":1}'), (3, b'{"a":2}')]
    assert t.state.lineno == 3


def test_torn_line_is_held_until_its_newline(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2')
    t = Tailer(path)
    assert t.poll() == [(1, b'{"a":1}')]
    assert t.state.offset == 8 and t.state.lineno == 1  # committed only past the newline
    assert t.poll() == []
    append(path, b"}")
    assert t.poll() == []
    assert t.state.offset == 8
    append(path, b'\n{"a":3}\n')
    assert t.poll() == [(2, b'{"a":2}'), (3, b'{"a":3}')]
    assert t.state.offset == 24


def test_torn_tail_cut_back_by_the_writer_is_not_a_truncation(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":')
    t = Tailer(path)
    assert t.poll() == [(1, b'{"a":1}')]
    with path.open("r+b") as fh:  # the writer repairs its torn tail, then appends
        fh.truncate(8)
    assert t.poll() == [] and not t.reset  # exactly at the committed offset: nothing lost
    append(path, b'{"c":3}\n')
    assert t.poll() == [(2, b'{"c":3}')]
    assert not t.reset


def test_torn_tail_rewritten_in_place_is_read_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\n{"b":2')
    t = Tailer(path)
    t.poll()
    with path.open("r+b") as fh:
        fh.seek(8)
        fh.write(b'{"B":2}\n')
    assert t.poll() == [(2, b'{"B":2}')]


def test_a_line_longer_than_the_batch_cap_gets_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tailer_mod, "CHUNK", 16)
    path = tmp_path / "s.jsonl"
    long_line = b'{"x":"' + b"z" * 500 + b'"}'
    path.write_bytes(long_line + b"\nshort\n")
    t = Tailer(path, max_batch=64)
    assert drain(t) == [(1, long_line), (2, b"short")]


def test_missing_file_appears_later(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    t = Tailer(path)
    assert t.poll() == [] and not t.is_open
    assert t.state.offset == 0
    path.write_bytes(b"x\n")
    assert t.poll() == [(1, b"x")]


def test_batches_are_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tailer_mod, "CHUNK", 16)
    path = tmp_path / "big.jsonl"
    lines = [b'{"n":%d}' % i for i in range(200)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    t = Tailer(path, max_batch=64)
    first = t.poll()
    assert t.more and 0 < len(first) < 200
    rest = drain(t)
    assert [n for n, _ in first + rest] == list(range(1, 201))
    assert [line for _, line in first + rest] == lines


def test_child_process_appending_with_pauses(tmp_path: Path) -> None:
    """A real writer: lines arrive in pieces, with pauses, while the parent polls."""
    path = tmp_path / "live.jsonl"
    script = textwrap.dedent(
        """
        import json, sys, time
        path = sys.argv[1]
        with open(path, "ab", buffering=0) as fh:
            for i in range(40):
                line = json.dumps({"n": i, "pad": "x" * (i * 37 % 300)}).encode() + b"\\n"
                cut = len(line) // 2
                fh.write(line[:cut])      # a torn line is on disk for a moment
                time.sleep(0.003)
                fh.write(line[cut:])
                if i % 7 == 0:
                    time.sleep(0.02)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(path)])
    t = Tailer(path)
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done = child.poll() is not None
        got += drain(t)
        if done:
            break
        time.sleep(0.001)
    assert child.wait(timeout=10) == 0
    got += drain(t)
    assert [n for n, _ in got] == list(range(1, 41))
    assert [json.loads(line)["n"] for _, line in got] == list(range(40))  # never a torn line
    assert t.state.offset == path.stat().st_size


def test_child_writing_claude_snapshots_into_the_source(tmp_path: Path) -> None:
    """Tailer → ClaudeSource while a child writes one response as three streaming lines."""
    path = tmp_path / "projects" / "-p" / "s1.jsonl"
    path.parent.mkdir(parents=True)
    path.touch()
    script = textwrap.dedent(
        """
        import json, sys, time
        base = {"type": "assistant", "sessionId": "s1", "cwd": "/p", "requestId": "req_1",
                "timestamp": "2026-09-03T14:02:11.482Z", "isSidechain": False}
        with open(sys.argv[1], "ab", buffering=0) as fh:
            for out in (10, 120, 187):
                rec = dict(base, uuid=f"u{out}", message={"id": "msg_1", "model": "claude-x",
                           "usage": {"input_tokens": 4, "output_tokens": out}})
                fh.write(json.dumps(rec).encode() + b"\\n")
                time.sleep(0.05)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script, str(path)])
    source, sink = ClaudeSource(), Collector()
    t = Tailer(path, on_reset=lambda: source.reset_file(path))
    polls_with_lines = 0
    while True:
        done = child.poll() is not None
        lines = drain(t)
        polls_with_lines += bool(lines)
        for lineno, line in lines:
            source.feed_line(path, lineno, line, sink)
        source.flush(sink)  # after every batch, as the daemon does
        if done:
            break
        time.sleep(0.005)
    assert child.wait(timeout=10) == 0
    for lineno, line in drain(t):
        source.feed_line(path, lineno, line, sink)
    source.flush(sink)
    assert polls_with_lines >= 2  # really read while being written
    (event,) = sink.events.counted_usage()
    assert event.tokens.output == 187 and event.origin == f"{path}:3"


def test_truncation_restarts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2}\n{"a":3}\n')
    resets: list[int] = []
    t = Tailer(path, on_reset=lambda: resets.append(1))
    assert len(t.poll()) == 3
    with path.open("r+b") as fh:  # same inode, shorter
        fh.truncate(0)
        fh.write(b'{"b":1}\n')
    assert t.poll() == [(1, b'{"b":1}')]
    assert t.reset and resets == [1]
    assert t.state.offset == 8
    assert t.poll() == [] and not t.reset


def test_truncate_and_regrow_caught_by_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\n')
    t = Tailer(path)
    assert t.poll() == [(1, b'{"a":1}')]
    # Rewritten in place between two polls, already longer than what was read.
    with path.open("r+b") as fh:
        fh.truncate(0)
        fh.write(b'{"z":9}\n{"z":10}\n')
    assert t.poll() == [(1, b'{"z":9}'), (2, b'{"z":10}')]
    assert t.reset


def same_head_lines(tag: str, count: int) -> bytes:
    """JSONL lines that all start alike (as one agent's do), far past 64 bytes."""
    head = '{"parentUuid":"4c1e0000-0000-4000-8000-000000000000","isSidechain":false,'
    return "".join(f'{head}"id":"{tag}{i}"}}\n' for i in range(count)).encode()


def test_truncate_and_regrow_past_the_offset_with_the_same_head(tmp_path: Path) -> None:
    """The head alone cannot tell: the window before the offset does, before reading on."""
    path = tmp_path / "s.jsonl"
    path.write_bytes(same_head_lines("old", 3))
    t = Tailer(path)
    assert len(t.poll()) == 3
    with path.open("r+b") as fh:  # in place (same inode), longer than what was read
        fh.truncate(0)
        fh.write(same_head_lines("new", 5))
    got = t.poll()
    assert t.reset
    assert [line for _, line in got] == same_head_lines("new", 5).splitlines()


def test_a_saved_state_is_not_resumed_on_a_regrown_file(tmp_path: Path) -> None:
    """The window is saved with the offset: a node restarted (kill -9) after the file was
    truncated and regrown past its offset reads the file again from 0."""
    path = tmp_path / "s.jsonl"
    path.write_bytes(same_head_lines("old", 3))
    t = Tailer(path)
    t.poll()
    saved = TailState.from_dict(t.state.to_dict())
    t.close()
    with path.open("r+b") as fh:
        fh.truncate(0)
        fh.write(same_head_lines("new", 5))
    again = Tailer(path, saved)
    assert [line for _, line in again.poll()] == same_head_lines("new", 5).splitlines()
    assert again.reset
    append(path, same_head_lines("more", 1))  # and an untouched file resumes at its offset
    resumed = Tailer(path, TailState.from_dict(again.state.to_dict()))
    assert resumed.poll() == [(6, same_head_lines("more", 1).rstrip(b"\n"))]


def test_a_state_saved_before_the_window_still_resumes(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(same_head_lines("a", 2))
    t = Tailer(path)
    t.poll()
    old = {k: v for k, v in t.state.to_dict().items() if k != "window"}
    append(path, same_head_lines("b", 1))
    resumed = Tailer(path, TailState.from_dict(old))
    assert resumed.poll() == [(3, same_head_lines("b", 1).rstrip(b"\n"))]
    assert resumed.state.window  # known again from the next read on


def test_rotation_by_rename_drains_the_old_file_first(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"old1\n")
    resets: list[int] = []
    t = Tailer(path, on_reset=lambda: resets.append(1))
    assert t.poll() == [(1, b"old1")]
    append(path, b"old2\nold3-unterminated")
    os.rename(path, tmp_path / "s.jsonl.1")
    path.write_bytes(b"new1\nnew2\n")
    first = t.poll()
    assert first == [(2, b"old2"), (3, b"old3-unterminated")]  # the old file is finished
    assert (t.reset, t.more, resets) == (False, True, [])
    second = t.poll()
    assert second == [(1, b"new1"), (2, b"new2")]
    assert t.reset and resets == [1]
    assert t.state.ino == path.stat().st_ino
    append(path, b"new3\n")
    assert t.poll() == [(3, b"new3")]


def test_rotation_with_nothing_left_switches_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"old1\n")
    t = Tailer(path)
    t.poll()
    os.rename(path, tmp_path / "s.jsonl.1")
    path.write_bytes(b"new1\n")
    assert t.poll() == [(1, b"new1")] and t.reset


def test_replace_by_os_replace(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"v":1}\n')
    t = Tailer(path)
    assert t.poll() == [(1, b'{"v":1}')]
    tmp = tmp_path / "s.jsonl.tmp"
    tmp.write_bytes(b'{"v":1}\n{"v":2}\n')
    append(path, b'{"v":"late"}\n')  # written to the old file before the swap
    os.replace(tmp, path)
    assert drain(t) == [(2, b'{"v":"late"}'), (1, b'{"v":1}'), (2, b'{"v":2}')]
    assert t.reset


def test_deleted_file_is_drained_and_held(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"a\n")
    t = Tailer(path)
    t.poll()
    append(path, b"b\nc-torn")
    path.unlink()
    assert t.poll() == [(2, b"b")]  # no newer file yet: the torn tail may still complete
    assert t.poll() == [] and not t.reset
    path.write_bytes(b"fresh\n")
    # A newer file: the old one is finished, its unterminated tail handed out first.
    assert t.poll() == [(3, b"c-torn")] and t.more and not t.reset
    assert t.poll() == [(1, b"fresh")] and t.reset


def test_resume_from_saved_state(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(1, 11)) + b'{"n":11')
    t = Tailer(path)
    assert len(t.poll()) == 10
    saved = json.loads(json.dumps(t.state.to_dict()))  # through a real serialisation
    t.close()
    # "Restart": a new process would build a new tailer from the saved dict.
    append(path, b'}\n{"n":12}\n')
    t2 = Tailer(path, TailState.from_dict(saved))
    assert t2.state == TailState.from_dict(saved)  # before the first poll
    assert t2.poll() == [(11, b'{"n":11}'), (12, b'{"n":12}')]
    assert not t2.reset


def test_the_written_out_empty_fingerprint_is_the_fingerprint_of_nothing() -> None:
    assert fingerprint(b"") == _EMPTY_FP


def test_resume_with_short_file_uses_a_short_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"a\n")  # fewer than 64 bytes when saved
    t = Tailer(path)
    t.poll()
    saved = t.state.to_dict()
    append(path, b"b" * 100 + b"\n")
    t2 = Tailer(path, TailState.from_dict(saved))
    assert t2.poll() == [(2, b"b" * 100)]
    assert not t2.reset
    assert t2.state.fingerprint == fingerprint(path.read_bytes()[:64])


def test_resume_after_replacement_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"a\nb\n")
    t = Tailer(path)
    t.poll()
    saved = t.state
    t.close()
    tmp = tmp_path / "x"
    tmp.write_bytes(b"c\nd\ne\n")
    os.replace(tmp, path)  # another inode while we were down
    t2 = Tailer(path, saved)
    assert t2.poll() == [(1, b"c"), (2, b"d"), (3, b"e")]
    assert t2.reset


def test_resume_after_rewrite_in_place_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"first":1}\n')
    t = Tailer(path)
    t.poll()
    saved = t.state
    t.close()
    with path.open("r+b") as fh:  # same inode, different head, longer
        fh.write(b'{"other":2}\n{"more":3}\n')
    t2 = Tailer(path, saved)
    assert [n for n, _ in t2.poll()] == [1, 2]
    assert t2.reset


def test_close_and_reopen_continues(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"a\nb-torn")
    t = Tailer(path)
    assert t.poll() == [(1, b"a")]
    t.close()
    assert not t.is_open
    append(path, b"\nc\n")
    assert t.poll() == [(2, b"b-torn"), (3, b"c")]
    assert not t.reset


def test_state_dict_round_trip_and_errors(tmp_path: Path) -> None:
    state = TailState("/x/y.jsonl", 1, 2, 3, 4, "abcd")
    assert TailState.from_dict(state.to_dict()) == state
    bad = state.to_dict() | {"offset": -1}
    with pytest.raises(ValueError, match="'offset'"):
        TailState.from_dict(bad)
    with pytest.raises(ValueError, match="'fingerprint'"):
        TailState.from_dict({k: v for k, v in state.to_dict().items() if k != "fingerprint"})
    with pytest.raises(ValueError, match="not"):
        Tailer(tmp_path / "other.jsonl", state)


# -- whole-file readers ----------------------------------------------------------------------


def _lines(n: int) -> list[bytes]:
    return [orjson.dumps({"n": i, "pad": "y" * (i * 53 % 700)}) for i in range(n)]


def test_zst_reader_streams_lines_across_chunks_and_frames(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tailer_mod, "CHUNK", 37)  # lines straddle many reads
    lines = _lines(300)
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "rollout.jsonl.zst"
    cctx = zstandard.ZstdCompressor()
    half = len(data) // 2
    path.write_bytes(cctx.compress(data[:half]) + cctx.compress(data[half:]))  # two frames
    got = list(iter_zst_lines(path))
    assert got == list(enumerate(lines, 1))


def test_zst_reader_is_lazy_and_keeps_unterminated_tail(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl.zst"
    with path.open("wb") as fh, zstandard.ZstdCompressor().stream_writer(fh) as w:
        w.write(b'{"a":1}\n\n{"a":2}\n{"a":3')
    it = iter_zst_lines(path)
    assert next(it) == (1, b'{"a":1}')
    assert list(it) == [(3, b'{"a":2}'), (4, b'{"a":3')]


def test_zst_corrupt_stream_raises_after_good_lines(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl.zst"
    good = zstandard.ZstdCompressor().compress(b"ok\n" * 10)
    path.write_bytes(good + b"\x28\xb5\x2f\xfd garbage that is not a frame")
    got: list[tuple[int, bytes]] = []
    with pytest.raises(CorruptStreamError):
        for item in iter_zst_lines(path):
            got.append(item)
    assert len(got) == 10


def test_zst_truncated_stream_is_an_error_not_a_silent_end(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.zst"
    whole = zstandard.ZstdCompressor().compress(b"".join(line + b"\n" for line in _lines(50)))
    path.write_bytes(whole[:-7])
    with pytest.raises(CorruptStreamError, match="truncated"):
        list(iter_zst_lines(path))


def test_plain_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tailer_mod, "CHUNK", 5)
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"alpha\r\n\nbeta\ngamma")
    assert list(iter_plain_lines(path)) == [(1, b"alpha"), (3, b"beta"), (4, b"gamma")]


def test_torn_tail_callback_gets_an_incomplete_last_line_only(tmp_path: Path) -> None:
    torn: list[tuple[int, bytes]] = []
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2')  # still being written
    assert list(iter_plain_lines(path, lambda n, line: torn.append((n, line)))) == [(1, b'{"a":1}')]
    assert torn == [(2, b'{"a":2')]
    path.write_bytes(b'{"a":1}\n{"a":2}')  # complete JSON, only the newline is missing
    assert list(iter_plain_lines(path, lambda n, line: torn.append((n, line)))) == [
        (1, b'{"a":1}'),
        (2, b'{"a":2}'),
    ]
    assert len(torn) == 1


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_a_last_line_taken_without_its_newline_is_not_counted_again(
    tmp_path: Path, newline: bytes
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"a":1}\n{"a":2}')
    t = Tailer(path)
    assert t.poll() == [(1, b'{"a":1}')]
    assert t.tail_line() == (2, b'{"a":2}')
    t.take_tail()
    saved = t.state
    assert (saved.offset, saved.lineno, saved.owed) == (15, 2, True)
    assert t.poll() == [] and t.tail_line() is None
    assert list(iter_head_lines(path, saved.offset)) == [(1, b'{"a":1}'), (2, b'{"a":2}')]
    append(path, newline + b'{"a":3}\n')
    # A restart from the saved state, and the tailer that took it, go on alike.
    again = Tailer(path, TailState.from_dict(saved.to_dict()))
    for tailer in (t, again):
        assert tailer.poll() == [(3, b'{"a":3}')] and not tailer.reset
        assert tailer.state.offset == path.stat().st_size and not tailer.state.owed
