"""A kept answer's dependencies stat'ed ahead on a cold disk: what the helper thread reads,
that it stops when told, and that what is served never depends on it."""

from __future__ import annotations

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
