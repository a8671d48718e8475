"""`node-agent scan` keeps the cyclic collector off while its modules load (`entry.main`), reads
with it on (`cli._batch_gc`), and leaves it as it found it for a caller that goes on."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_agent import report, scan_answer
from node_agent.entry import main


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_a_scan_loads_with_the_collector_off_and_reads_with_it_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    collector_on: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    seen: dict[str, bool] = {}
    serve, build = scan_answer.serve, report.build_report

    def serving(argv: Any) -> bool:
        seen["start-up"] = gc.isenabled()
        return serve(argv)

    def building(*args: Any, **kwargs: Any) -> report.Report:
        seen["reading"] = gc.isenabled()
        return build(*args, **kwargs)

    monkeypatch.setattr(scan_answer, "serve", serving)
    monkeypatch.setattr(report, "build_report", building)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    main(["scan", "--json", str(empty)])
    capsys.readouterr()
    assert seen == {"start-up": False, "reading": True}
    assert gc.isenabled()  # as it was found


def test_a_scan_leaves_a_collector_found_off_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    empty = tmp_path / "empty"
    empty.mkdir()
    was = gc.isenabled()
    gc.disable()
    try:
        main(["scan", "--json", str(empty)])
        assert not gc.isenabled()
    finally:
        if was:
            gc.enable()
    capsys.readouterr()
