"""The scan index's journal: a scan after an append writes only what it changed, and whatever
happens to the journal or the whole index (cut short by a kill, damaged, left by an older
generation, grown past its bound) a scan's figures equal a full re-read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node_agent import report as report_module
from node_agent import scan_index, scan_journal
from node_agent.render import render_json
from node_agent.report import build_report
from shared.config import NodeConfig
from tests.test_scan_index import NAMES, QUERY, _home, _reads, apply, ops, usage_line


def _scan(home: Path, cache: Path) -> report_module.Report:
    return build_report([home], NodeConfig(), QUERY, jobs=1, cache_dir=cache)


def _full(home: Path) -> Any:
    return render_json(build_report([home], NodeConfig(), QUERY, jobs=1))


def _grow(home: Path, msg: int) -> None:
    """An append to a transcript, an hour ago (a file read in the clock tick of a write is
    read from its start the next time: `Entry.racy`)."""
    grown = home / "projects" / NAMES[0]
    with grown.open("ab") as fh:
        fh.write(usage_line(msg, 7) + b"\n")
    old = time.time() - 1800
    os.utime(grown, (old, old))


def _files(cache: Path) -> tuple[Path, Path]:
    return cache / scan_index.INDEX_NAME, cache / scan_journal.JOURNAL_NAME


def test_a_scan_after_an_append_writes_the_journal_not_the_whole_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, cache = _home(tmp_path), tmp_path / "cache"
    _scan(home, cache)
    whole, journal = _files(cache)
    before = whole.read_bytes()
    assert not journal.exists()  # written whole: nothing to go on from yet
    seen = _reads(monkeypatch)
    starts = []
    for msg in (40, 41):
        _grow(home, msg)
        seen.clear()
        got = _scan(home, cache)
        assert [name for name, _ in seen] == [Path(NAMES[0]).name]
        starts.append(seen[0][1])
        assert got.warnings == [] and render_json(got) == _full(home)
    assert 0 < starts[0] < starts[1]  # each read on from where the last stopped
    assert whole.read_bytes() == before  # not written again
    generation = scan_index.ScanIndex.load(cache)[0]._generation
    replay = scan_journal.replay(journal.read_bytes(), generation)
    assert len(replay.bodies) == 2 and replay.end == journal.stat().st_size
    seen.clear()
    again = _scan(home, cache)  # the journal's entries are the index: nothing read again
    grown = home / "projects" / NAMES[0]
    assert all(start == grown.stat().st_size for _, start in seen)  # (a young file is looked at)
    assert render_json(again) == _full(home)


def test_a_journal_grown_past_half_the_index_makes_the_next_scan_write_it_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_index, "JOURNAL_MIN_BYTES", 0)
    home, cache = _home(tmp_path), tmp_path / "cache"
    _scan(home, cache)
    whole, journal = _files(cache)
    generations = set()
    for msg in range(40, 46):
        _grow(home, msg)
        got = _scan(home, cache)
        assert got.warnings == [] and render_json(got) == _full(home)
        generations.add(scan_index.ScanIndex.load(cache)[0]._generation)
        if journal.exists():
            assert journal.stat().st_size <= whole.stat().st_size  # bounded
    assert len(generations) > 1  # written whole again along the way


def test_a_record_that_does_not_match_its_crc_is_dropped_with_one_warning(
    tmp_path: Path,
) -> None:
    home, cache = _home(tmp_path), tmp_path / "cache"
    _scan(home, cache)
    _grow(home, 40)
    _scan(home, cache)
    _grow(home, 41)
    _scan(home, cache)
    _, journal = _files(cache)
    data = bytearray(journal.read_bytes())
    data[-3] ^= 0xFF  # the last record's body
    journal.write_bytes(bytes(data))
    got = _scan(home, cache)
    assert len(got.warnings) == 1 and "journal" in got.warnings[0] and "damaged" in got.warnings[0]
    assert render_json(got) == _full(home)
    again = _scan(home, cache)  # written whole: no more warning
    assert again.warnings == [] and render_json(again) == _full(home)


@pytest.mark.parametrize("part", ["head", "length", "digest"])
def test_damage_in_each_part_of_the_journal_never_gives_figures(tmp_path: Path, part: str) -> None:
    """A damaged head (an older generation's journal, as far as a scan can tell) is not used;
    a damaged length or hash drops the records from there on."""
    home, cache = _home(tmp_path), tmp_path / "cache"
    _scan(home, cache)
    _grow(home, 40)
    _scan(home, cache)
    _, journal = _files(cache)
    data = bytearray(journal.read_bytes())
    first = len(scan_journal.MAGIC) + scan_journal.GENERATION_BYTES
    at = {"head": 3, "length": first + 1, "digest": first + 6}[part]
    data[at] ^= 0x5A
    journal.write_bytes(bytes(data))
    got = _scan(home, cache)
    assert render_json(got) == _full(home)
    assert len(got.warnings) <= 1
    again = _scan(home, cache)
    assert again.warnings == [] and render_json(again) == _full(home)


def test_a_journal_cut_short_anywhere_is_the_index_before_the_cut(tmp_path: Path) -> None:
    """What a scan killed while appending leaves: every cut point gives a full re-read's
    figures, without a warning, and reads again only what the kept records do not hold."""
    home, cache = _home(tmp_path), tmp_path / "cache"
    _scan(home, cache)
    _grow(home, 40)
    _scan(home, cache)
    _grow(home, 41)
    _scan(home, cache)
    whole, journal = _files(cache)
    saved_whole, saved_journal = whole.read_bytes(), journal.read_bytes()
    step = max(1, len(saved_journal) // 40)
    for cut in range(0, len(saved_journal) + 1, step):
        whole.write_bytes(saved_whole)
        journal.write_bytes(saved_journal[:cut])
        got = _scan(home, cache)
        assert got.warnings == [], cut
        assert render_json(got) == _full(home), cut


STALE = msgspec.msgpack.encode(scan_index._IndexFile("older rules", {}))
_KILLED_MID_WRITE = """
import os, sys, time
from pathlib import Path
from node_agent import scan_index, scan_journal
from node_agent.report import Query, build_report
from shared.config import NodeConfig
from datetime import UTC

where, home, cache, marker = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

def half_then_wait(fd, data):
    os.write(fd, bytes(data[: len(data) // 2]))
    Path(marker).write_text("half written")
    time.sleep(120)  # killed here

class Slow:
    def __init__(self, fh): self.fh = fh
    def __enter__(self): return self
    def __exit__(self, *exc): self.fh.close()
    def write(self, data): half_then_wait(self.fh.fileno(), data)

real_open = os.fdopen
def slow_open(fd, *args, **kwargs):
    fh = real_open(fd, *args, **kwargs)
    named = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
    writing = "w" in (args[0] if args else kwargs.get("mode", "r"))
    return Slow(fh) if writing and "scan-index.msgpack" in named else fh

if where == "journal":
    scan_journal._write_all = half_then_wait
else:  # the whole index, written to a file aside (then renamed over the index)
    os.fdopen = slow_open
query = Query(("day", "session", "role", "model"), UTC)
build_report([home], NodeConfig(), query, jobs=1, cache_dir=cache)
"""


@pytest.mark.parametrize("where", ["journal", "whole"])
def test_a_scan_killed_while_writing_leaves_the_index_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A real process killed (SIGKILL) half way through writing its journal record, or the
    whole index: the next scan finds the index the scan before left, says nothing and gives
    a full re-read's figures."""
    home, cache = _home(tmp_path), tmp_path / "cache"
    _scan(home, cache)
    _grow(home, 40)
    _scan(home, cache)
    whole, journal = _files(cache)
    before = (whole.read_bytes(), journal.read_bytes())
    if where == "whole":  # a rules stamp of no use: the killed scan writes the index whole
        whole.write_bytes(STALE)
        journal.unlink()
    _grow(home, 41)
    marker = tmp_path / "marker"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_MID_WRITE, where, str(home), str(cache), str(marker)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert child.poll() is None, "the scan ended before it wrote"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    if where == "journal":
        assert journal.read_bytes().startswith(before[1])  # the torn record after the good
        assert len(journal.read_bytes()) > len(before[1])
    else:
        assert whole.read_bytes() == STALE  # not renamed over: as it was
    seen = _reads(monkeypatch)
    got = _scan(home, cache)
    read = list(seen)
    assert got.warnings == []
    assert render_json(got) == _full(home)
    if where == "journal":  # the records before the torn one hold the first append's reading
        assert [start > 0 for _, start in read] == [True]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(ops, min_size=1, max_size=12), st.sampled_from([0, 1 << 20]))
def test_a_journaled_index_always_equals_a_full_re_read(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    steps: list[tuple[Any, ...]],
    bound: int,
) -> None:
    """Random appends, truncations, renames, replacements and deletions, the index written
    whole whenever its journal passes half its size (bound 0) or almost never."""
    monkeypatch.setattr(scan_index, "JOURNAL_MIN_BYTES", bound)
    root = tmp_path_factory.mktemp("home")
    home, cache = root / "claude", root / "cache"
    (home / "projects").mkdir(parents=True)
    for step in steps:
        apply(home, step)
        indexed = _scan(home, cache)
        assert indexed.warnings == []
        assert render_json(indexed) == _full(home), step


def test_a_journal_left_by_an_older_whole_index_is_not_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan killed between renaming a new whole index into place and removing the old
    journal leaves that journal: its records are not read over the new index."""
    home, cache = _home(tmp_path), tmp_path / "cache"
    _scan(home, cache)
    _grow(home, 40)
    _scan(home, cache)
    whole, journal = _files(cache)
    older = journal.read_bytes()
    _grow(home, 41)
    old = time.time() - 3600
    os.utime(home / "projects" / NAMES[0], (old, old))
    _scan(home, cache)  # reads the second append
    index, _ = scan_index.ScanIndex.load(cache)
    assert index.save(whole=True) is None  # a new generation; the journal removed
    journal.write_bytes(older)  # as if the removal never happened
    seen = _reads(monkeypatch)
    got = _scan(home, cache)
    assert seen == []  # not read on from the older journal's entry (the first append's end)
    assert got.warnings == [] and render_json(got) == _full(home)
