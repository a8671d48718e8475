"""A kept answer's dependencies are checked last changed first: after an append to the
transcript written last, the check stops at its first stat."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from node_agent import scan_answer


def test_the_newest_dependency_is_checked_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    tree = tmp_path / "projects"
    tree.mkdir()
    old = time.time() - 3600
    for n in range(20):
        (tree / f"s{n:02}.jsonl").write_bytes(b"{}\n")
    for n in range(20):
        at = old + 60 * (n if n != 7 else 50)  # s07 written last
        os.utime(tree / f"s{n:02}.jsonl", (at, at))
    started = time.time_ns() + 10 * scan_answer.RACY_NS  # (their ctimes are now)
    deps = scan_answer.dependencies([str(tree)], [], started)
    assert deps is not None and len(deps) == 21
    assert deps[0][0] == str(tree)  # the folder: made now
    assert deps[1][0] == str(tree / "s07.jsonl")
    argv = ["scan", str(tree)]
    scan_answer.keep(argv, deps, "kept\n")
    with (tree / "s07.jsonl").open("ab") as fh:
        fh.write(b"{}\n")
    stats: list[str] = []
    real = scan_answer.signature

    def spy(path: str) -> scan_answer.Signature:
        stats.append(path)
        return real(path)

    monkeypatch.setattr(scan_answer, "signature", spy)
    assert scan_answer.serve(argv) is False
    assert len(stats) <= 2  # not the other 19 first
