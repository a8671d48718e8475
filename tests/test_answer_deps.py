"""A kept answer's dependencies (`answer_deps`) are stat'ed while the scan reads, not in its
serial end: only the code loaded since is stat'ed after `build_report` returns, and the answer
kept still depends on all of it. A scan that ends its process leaves its readings to the exit."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from node_agent import entry, scan_answer
from node_agent import report as report_module
from node_agent.scan_answer import Dependency, Signature
from pricing import PriceBook
from shared.config import NodeConfig
from tests.test_scan_answer import Scans, make_scans
from tests.test_scan_index import NAMES, _home


def test_the_homes_are_stat_ed_while_the_scan_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    scans: Scans = make_scans(tmp_path, monkeypatch, capsysbinary)
    home = _home(tmp_path)
    reading = [False]
    walked: list[tuple[list[str], bool]] = []  # (trees, while reading)
    kept: list[Sequence[Dependency]] = []
    real_build, real_gathered, real_keep = (
        report_module.build_report,
        scan_answer.gathered,
        scan_answer.keep,
    )

    def build(*args: Any, **kwargs: Any) -> Any:
        reading[0] = True
        try:
            return real_build(*args, **kwargs)
        finally:
            reading[0] = False

    def gathered(
        trees: Iterable[str], paths: Iterable[str], started_ns: int, found: dict[str, Signature]
    ) -> bool:
        trees = list(trees)
        walked.append((trees, reading[0]))
        return real_gathered(trees, paths, started_ns, found)

    def keep(argv: Sequence[str], deps: Sequence[Dependency], out: bytes | str) -> None:
        kept.append(deps)
        real_keep(argv, deps, out)

    monkeypatch.setattr(report_module, "build_report", build)
    monkeypatch.setattr(scan_answer, "gathered", gathered)
    monkeypatch.setattr(scan_answer, "keep", keep)
    scans.changed()
    try:
        code, _ = scans.run(["scan", "--json", str(home)])
    finally:
        PriceBook.reload_default()  # the tables as the rest of the session has them
    assert code == 0 and scans.served == [False]
    # The walk of the home while reading; after it, only the code loaded since (the scan's own
    # process loads orjson for --json once the report is built).
    assert [while_reading for trees, while_reading in walked if trees] == [True]
    assert walked[-1] == ([], False)
    (deps,) = kept
    names = {name for name, _ in deps}
    assert {str(home), str(home / "projects" / NAMES[0])} <= names
    assert sys.modules["orjson"].__file__ in names


def test_a_scan_that_ends_its_process_leaves_its_readings_to_the_exit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The console script's scan hands its readings and index to `entry.left_at_exit` rather
    than free them (`entry._leave` exits without teardown); a process that goes on (a test,
    `main` given its arguments) frees them as before."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    home = _home(tmp_path)
    held: list[object] = []
    query = report_module.Query(("day",), UTC)
    built = report_module.build_report([home], NodeConfig(), query, jobs=1, held=held)
    alone = report_module.build_report([home], NodeConfig(), query, jobs=1)
    assert held and built.rollup == alone.rollup
    assert entry.main(["scan", "--json", "--no-cache", str(home)]) == 0
    assert entry.left_at_exit() is None
