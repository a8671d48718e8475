"""The metadata read ahead on a cold disk: what the helper thread reads, that it stops when
told, and that a scan's results never depend on it (it only reads what the scan reads too)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from node_agent import metadata_ahead, scan_answer


def _wait(helper: metadata_ahead.Helper | None, seen: list[str], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    if helper is not None:
        helper.stop()


def test_stat_behind_goes_from_the_last_name_back(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def spy(name: str) -> None:
        seen.append(name)
        if name == "b":
            raise FileNotFoundError(name)  # passed over

    monkeypatch.setattr(metadata_ahead.os, "stat", spy)
    helper = metadata_ahead.stat_behind(["a", "b", "c"])
    _wait(helper, seen, 3)
    assert seen == ["c", "b", "a"]


def test_a_stopped_helper_reads_no_more(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []
    helper = metadata_ahead.Helper()
    helper.stop()
    monkeypatch.setattr(metadata_ahead, "Helper", lambda: helper)
    monkeypatch.setattr(metadata_ahead.os, "stat", seen.append)
    metadata_ahead.stat_behind(["a", "b"])
    time.sleep(0.1)
    assert seen == []


def _tree(tmp_path: Path) -> Path:
    home = tmp_path / "claude"
    for rel in ("projects/p1/s1/subagents", "projects/p2", "projects/p1/s1/subagents/x/too-deep"):
        (home / rel).mkdir(parents=True)
    (home / "projects" / "p2" / "t.jsonl").write_bytes(b"{}\n")
    os.symlink(tmp_path, home / "projects" / "link")  # not walked into
    return home


def test_a_cold_first_listing_walks_the_folders_below(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = _tree(tmp_path)
    monkeypatch.setattr(metadata_ahead, "COLD_LISTING_NS", -1)  # every listing "cold"
    listed: list[str] = []
    real = metadata_ahead._folders

    def spy(folder: str, depth: int = 0) -> list[tuple[str, int]] | None:
        found = real(folder, depth)
        if found is not None:  # (the option, its value and the file are tried, not listed)
            listed.append(os.path.relpath(folder, home))
        return found

    monkeypatch.setattr(metadata_ahead, "_folders", spy)
    helper = metadata_ahead.walk_ahead(
        ["--by", "day", str(home / "projects" / "p2" / "t.jsonl"), str(home)]
    )
    assert helper is not None
    _wait(helper, listed, 6)
    time.sleep(0.05)
    assert sorted(listed) == [
        ".",
        "projects",
        "projects/p1",
        "projects/p1/s1",
        "projects/p1/s1/subagents",
        "projects/p2",
    ]  # four levels below the home; the file given, the option and the link are not listed


def test_a_warm_listing_starts_no_helper(tmp_path: Path) -> None:
    home = _tree(tmp_path)
    assert metadata_ahead.walk_ahead([str(home)]) is None  # just made: in the page cache
    assert metadata_ahead.walk_ahead([str(tmp_path / "none"), "day"]) is None  # no folder


def test_a_cold_answer_check_serves_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With every check taken for a cold one, the helper stats the dependencies from the last
    back while the answer is checked: served when all are alike, not when one changed."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(scan_answer, "_PROBE", 1)
    monkeypatch.setattr(scan_answer, "_COLD_NS", -1)
    started: list[list[str]] = []
    real = metadata_ahead.stat_behind

    def spy(names: list[str]) -> metadata_ahead.Helper:
        started.append(list(names))
        return real(names)

    monkeypatch.setattr(metadata_ahead, "stat_behind", spy)
    files = [tmp_path / f"f{n}" for n in range(4)]
    for path in files:
        path.write_bytes(b"x")
    argv = ["scan", str(tmp_path)]
    scan_answer.keep(argv, [(str(p), scan_answer.signature(str(p))) for p in files], "kept\n")
    assert scan_answer.serve(argv) is True and capsys.readouterr().out == "kept\n"
    assert started == [[str(p) for p in files[1:]]]
    files[3].write_bytes(b"xy")
    assert scan_answer.serve(argv) is False and capsys.readouterr().out == ""
