"""Read-ahead for cold scans: which files it asks for, and that the kernel really reads them."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from node_agent import readahead


def test_plan_keeps_reading_order_and_stops_at_the_budget(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert readahead.plan([(a, 10), (b, 20), (c, 5)], 30) == [a, b]
    assert readahead.plan([(a, 10), (b, 20), (c, 5)], 35) == [a, b, c]
    # A file past the budget ends the plan: later files would be evicted before they are read.
    assert readahead.plan([(a, 50), (b, 1)], 30) == []


def test_missing_and_unreadable_files_are_left_to_the_reader(tmp_path: Path) -> None:
    present = tmp_path / "x.jsonl"
    present.write_bytes(b"{}\n")
    readahead.advise([tmp_path / "gone.jsonl", tmp_path, present])  # no exception


def resident_pages(path: Path) -> int:
    out = subprocess.run(
        ["fincore", "--raw", "--noheadings", "--output", "PAGES", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.split()[0])


@pytest.mark.skipif(shutil.which("fincore") is None, reason="needs util-linux fincore")
@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_the_kernel_reads_the_files_ahead(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    path.write_bytes(os.urandom(4 << 20))
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)  # dirty pages cannot be dropped
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    if resident_pages(path) > 64:
        pytest.skip("this file system keeps the pages (tmpfs?)")

    thread = readahead.start([(path, 4 << 20)])
    assert thread is not None
    thread.join(10)
    pages = 0
    for _ in range(200):  # WILLNEED queues the reads; they land soon after
        pages = resident_pages(path)
        if pages >= 1024:
            break
        time.sleep(0.01)
    assert pages >= 1024  # the whole 4 MiB, not a default read-ahead window
