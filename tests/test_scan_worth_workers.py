"""Whether a scan starts worker processes: the bytes left to read against each agent's
threshold. A first scan stats its transcripts only until they are enough on their own, and the
answer is the one the sum over every file gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent import report as report_module
from node_agent.claude_reading import FileReading
from node_agent.report import _PARALLEL_MIN_BYTES_OF, PARALLEL_MIN_BYTES, Unit, _worth_workers
from node_agent.scan_index import Task
from shared.events import Agent

MB = 1024 * 1024


def _summed(units: list[Unit], tasks: list[Task], sizes: dict[str, int]) -> bool:
    """The decision as the sum over every file gives it (the reference)."""
    unread = sum(sizes[t.path] - (t.prior.end if t.prior else 0) for t in tasks)
    share = unread / PARALLEL_MIN_BYTES
    for unit in units:
        share += unit.size / _PARALLEL_MIN_BYTES_OF.get(unit.agent, PARALLEL_MIN_BYTES)
    return share >= 1


def _task(n: int, prior_end: int | None) -> Task:
    prior = None if prior_end is None else FileReading([], [], {}, end=prior_end)
    return Task(f"/logs/{n}.jsonl", prior)


FILE = st.tuples(
    st.integers(0, 40 * MB),  # its size now
    st.one_of(
        st.none(), st.integers(0, 40 * MB)
    ),  # where a prior reading ended (a shrunk file too)
)
UNIT = st.builds(
    lambda agent, size: Unit(agent, (), size),
    st.sampled_from([Agent.CODEX, Agent.GEMINI]),
    st.integers(0, 200 * MB),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(FILE, max_size=12), st.lists(UNIT, max_size=3))
def test_the_decision_is_the_sum_over_every_file(
    files: list[tuple[int, int | None]], units: list[Unit]
) -> None:
    tasks = [_task(n, prior) for n, (_size, prior) in enumerate(files)]
    sizes = {task.path: size for task, (size, _prior) in zip(tasks, files, strict=True)}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_module, "_size", lambda path: sizes[str(path)])
        assert _worth_workers(units, tasks) == _summed(units, tasks, sizes)


def test_a_first_scan_stats_its_files_only_until_they_are_enough() -> None:
    tasks = [_task(n, None) for n in range(600)]
    stated: list[Path] = []

    def size(path: Path) -> int:
        stated.append(path)
        return 3 * MB

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report_module, "_size", size)
        assert _worth_workers([], tasks)
    assert len(stated) == 6  # 18 MB: past the 16 MB a worker pays for
