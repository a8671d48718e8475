"""The cheap ways a Codex scan takes: it reads in process below its own size threshold (a Codex
rollout is mostly lines nobody decodes, so workers pay later than for Claude transcripts), and a
report that only sums leaves tool calls unread, with every other figure as a full read's."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from node_agent import report
from node_agent.scan import read_file
from node_agent.simulate.fleet import generate_fleet
from node_agent.sources.base import Collector
from node_agent.sources.codex import CodexSource
from shared.config import NodeConfig
from shared.events import Agent


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("codexfast") / "fleet"
    generate_fleet(root, seed=23, machines=1, start=datetime(2026, 10, 12, tzinfo=UTC), days=2)
    return root / "spark01"


def _pools(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The worker pools `build_report` starts from now on (their sizes)."""
    asked: list[int] = []
    real = multiprocessing.get_context("fork")

    class Recording:
        def Pool(self, processes: int) -> Any:  # noqa: N802 (multiprocessing's name)
            asked.append(processes)
            return real.Pool(min(processes, 2))

    monkeypatch.setattr(report, "worker_context", Recording)
    return asked


def _home(machine: Path, agent: str) -> Path:
    return min(p for p in machine.iterdir() if p.name.startswith(agent))


def test_each_agent_is_weighed_against_its_own_threshold(
    monkeypatch: pytest.MonkeyPatch, machine: Path
) -> None:
    """Thresholds set just below and above the homes' sizes: the Codex home alone stays in
    process under the Codex threshold, the Claude home goes to workers over the general one."""
    asked = _pools(monkeypatch)
    codex, claude = _home(machine, "codex"), _home(machine, "claude")
    codex_size = sum(f.stat().st_size for f in codex.rglob("*") if f.is_file())
    monkeypatch.setattr(report, "PARALLEL_MIN_BYTES", 1024)
    # (raising=False: before there were per-agent thresholds, the Codex home went to workers)
    monkeypatch.setattr(report, "_PARALLEL_MIN_BYTES_OF", {Agent.CODEX: codex_size + 1}, False)
    query = report.Query(("day",), UTC)
    alone = report.build_report([codex], NodeConfig(), query)
    assert alone.rollup.total.calls > 0
    assert asked == []  # read in process
    both = report.build_report([codex, claude], NodeConfig(), query)
    assert both.rollup.total.calls > alone.rollup.total.calls
    assert len(asked) == 1  # the Claude bytes alone are over the general threshold
    monkeypatch.setattr(report, "_PARALLEL_MIN_BYTES_OF", {Agent.CODEX: codex_size // 2})
    again = report.build_report([codex], NodeConfig(), query)
    assert len(asked) == 2  # twice the Codex threshold: workers
    assert msgspec.json.encode(again.rollup.total) == msgspec.json.encode(alone.rollup.total)


def _read(files: list[Path], *, tools: bool) -> Collector:
    source = CodexSource()
    source.wants_quota_readings = False
    source.wants_tool_calls = tools
    sink = Collector()
    for file in sorted((f for p in files for f in source.discover(p)), key=lambda f: str(f.path)):
        read_file(source, file, sink)
    return sink


def test_a_read_without_tool_calls_differs_from_a_full_read_only_in_them(machine: Path) -> None:
    home = _home(machine, "codex")
    full, summed = _read([home], tools=True), _read([home], tools=False)
    assert any(e.tool_calls for e in full.events.usage.values())  # not a vacuous comparison
    assert all(e.tool_calls is None for e in summed.events.usage.values())
    assert {
        k: msgspec.structs.replace(e, tool_calls=None) for k, e in full.events.usage.items()
    } == (summed.events.usage)
    assert full.problems == summed.problems
    assert full.skipped == summed.skipped
