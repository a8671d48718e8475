"""A priced cost report over agent homes: what `node-agent scan` prints.

The files are cut into units that share no dedupe keys (`Source.partition`: for Claude Code one
project slug across every home; for the other agents all their files). Each unit is read by its
own source instance, priced and rolled up; unit reports add up exactly (integer tokens, Decimal
money), so units may run in worker processes. Only the small rollups and each unit's dedupe keys
cross process boundaries: shipping every event back would cost more than the second core saves.
The partition is a guess checked afterwards: units whose events share a dedupe key are read
again as one, so the result always equals one global read.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Final

from node_agent import readahead
from node_agent.scan import Target, nothing_to_read, read_file, resolve_targets
from node_agent.sources.base import Collector, ParseProblem, SourceFile
from node_agent.sources.registry import all_sources, source_for
from node_agent.workers import worker_context
from pricing import CallBatch, PriceBook, PricedCall
from pricing.rollup import Attribution, Rollup, RowKey
from shared.config import NodeConfig
from shared.events import Agent, UsageEvent

# Below this much data a worker process costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Query:
    by: tuple[str, ...]
    tz: tzinfo
    since: date | None = None
    until: date | None = None
    keep_calls: bool = False  # keep each priced call (an outcome view attributes them one by one)

    def wants(self, ts: float) -> bool:
        if self.since is None and self.until is None:
            return True
        day = datetime.fromtimestamp(ts, self.tz).date()
        return (self.since is None or day >= self.since) and (
            self.until is None or day <= self.until
        )


@dataclass(slots=True)
class Report:
    rollup: Rollup
    files: int = 0
    bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    problems: list[ParseProblem] = field(default_factory=list)
    unknown_models: Counter[str] = field(default_factory=Counter)
    path_problems: list[ParseProblem] = field(default_factory=list)  # paths that were no home
    calls: list[tuple[UsageEvent, PricedCall]] = field(default_factory=list)  # Query.keep_calls

    def merge(self, other: Report) -> None:
        for key, row in other.rollup.rows.items():
            mine = self.rollup.rows.get(key)
            if mine is None:
                self.rollup.rows[key] = row
            else:
                mine.merge(row)
        self.files += other.files
        self.bytes += other.bytes
        self.skipped.update(other.skipped)
        self.problems.extend(other.problems)
        self.unknown_models.update(other.unknown_models)
        self.calls.extend(other.calls)


@dataclass(frozen=True, slots=True)
class Unit:
    agent: Agent
    files: tuple[tuple[int, SourceFile], ...]  # (index of its target, file) in reading order
    size: int


def plan_units(targets: Sequence[Target]) -> tuple[list[Unit], list[Target]]:
    """The units to read, and the targets in which no file to read was found."""
    sources = {s.agent: s for s in all_sources()}
    groups: dict[tuple[Agent, str], list[tuple[int, SourceFile]]] = {}
    seen: set[tuple[Agent, Path]] = set()  # a file named twice (its home and itself) is read once
    empty: list[Target] = []
    for index, target in enumerate(targets):
        source = sources[target.agent]
        found = target.files(source)
        if not found:
            empty.append(target)
        for file in found:
            if (target.agent, file.path) in seen:
                continue
            seen.add((target.agent, file.path))
            groups.setdefault((target.agent, source.partition(file.path)), []).append((index, file))
    units = []
    for (agent, _), files in groups.items():
        files.sort(key=lambda item: (item[1].order, str(item[1].path)))
        units.append(Unit(agent, tuple(files), sum(_size(f.path) for _, f in files)))
    units.sort(key=lambda u: u.size, reverse=True)  # biggest first: better load balance
    return units, empty


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


MAX_JOBS_PER_CPU: Final = 4


def build_report(
    paths: Sequence[Path], config: NodeConfig, query: Query, jobs: int | None = None
) -> Report:
    """`jobs`: worker processes; None picks by data size and CPU count; 1 reads in process."""
    sources = all_sources()
    targets, path_problems = resolve_targets(paths, config, sources)
    units, empty = plan_units(targets)
    if paths:  # a path the user named that gave nothing to read says why
        by_agent = {source.agent: source for source in sources}
        path_problems += [nothing_to_read(target, by_agent[target.agent]) for target in empty]
    if jobs is None:
        big = sum(u.size for u in units) >= PARALLEL_MIN_BYTES
        jobs = min(os.cpu_count() or 1, len(units)) if big else 1
    PriceBook.default()  # load once, before workers fork, so they share it
    report = Report(Rollup(query.by, query.tz), path_problems=path_problems)
    # More workers than units, or than a few per CPU, only costs forks (--jobs 10000 forked for
    # minutes on a 2-core machine).
    jobs = min(jobs, len(units), MAX_JOBS_PER_CPU * (os.cpu_count() or 1))
    with _runner(jobs) as run:
        # Once the workers are up (their start would queue behind these reads on a cold disk).
        readahead.start((f.path, _size(f.path)) for unit in units for _, f in unit.files)
        done = run([(unit, targets, config.node, query) for unit in units])
        for part, _keys in _regroup_overlaps(units, done, targets, config.node, query, run):
            report.merge(part)
    report.problems.sort(key=lambda p: (p.path, p.line))
    return report


Result = tuple["Report", frozenset[str]]
Work = tuple["Unit", Sequence[Target], str, Query]
Runner = Callable[[list[Work]], list[Result]]


@contextmanager
def _runner(jobs: int) -> Iterator[Runner]:
    """Runs units in order: in this process, or spread over `jobs` worker processes that stay up
    for the regrouped units too."""
    if jobs <= 1:
        yield lambda work: [_run_unit(item) for item in work]
        return
    with worker_context().Pool(jobs) as pool:

        def run(work: list[Work]) -> list[Result]:
            # Units are sorted biggest first; chunks amortise the per-task cost of small ones.
            return pool.map(_run_unit, work, chunksize=max(1, len(work) // (jobs * 8)))

        yield run


def _regroup_overlaps(
    units: Sequence[Unit],
    done: list[Result],
    targets: Sequence[Target],
    node: str,
    query: Query,
    run: Runner,
) -> list[Result]:
    """Units whose events share a dedupe key were wrongly read apart (a fork copied into
    another project dir, say): read each such set again as one unit, in place of its parts."""
    owner: dict[tuple[Agent, str], int] = {}
    parent = list(range(len(units)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for index, (unit, (_, keys)) in enumerate(zip(units, done, strict=True)):
        for key in keys:
            other = owner.setdefault((unit.agent, key), index)
            if other != index:
                parent[root(index)] = root(other)
    groups: dict[int, list[int]] = {}
    for index in range(len(units)):
        groups.setdefault(root(index), []).append(index)
    results: list[Result] = []
    merged: list[Unit] = []
    for members in groups.values():
        if len(members) == 1:
            results.append(done[members[0]])
            continue
        files = sorted(
            (item for m in members for item in units[m].files),
            key=lambda item: (item[1].order, str(item[1].path)),
        )
        merged.append(
            Unit(units[members[0]].agent, tuple(files), sum(units[m].size for m in members))
        )
    merged.sort(key=lambda u: u.size, reverse=True)
    return results + run([(unit, targets, node, query) for unit in merged])


def _run_unit(item: tuple[Unit, Sequence[Target], str, Query]) -> Result:
    unit, targets, node, query = item
    source = source_for(unit.agent)
    source.wants_quota_readings = False  # the report counts spend only
    sinks: dict[int, Collector] = {}
    report = Report(Rollup(query.by, query.tz))
    for index, file in unit.files:
        sink = sinks.setdefault(index, Collector())
        size = read_file(source, file, sink)
        if size is not None:
            report.files += 1
            report.bytes += size
    batch = CallBatch[RowKey](PriceBook.default())
    keys = frozenset(source.dedupe_key(e) for s in sinks.values() for e in s.events.usage.values())
    for index, sink in sinks.items():
        target = targets[index]
        profile = target.profile
        attribution = Attribution(
            machine=node,
            profile=profile.name if profile else None,
            account=profile.account if profile else None,
        )
        report.skipped.update(sink.skipped)
        report.problems.extend(sink.problems)
        for event in sink.events.counted_usage():
            if not query.wants(event.ts):
                continue
            # Priced per row in sums (exact, and far cheaper than a price per call).
            row = report.rollup.key(event, attribution)
            unknown = batch.add(row, event, target.billing)
            if query.keep_calls:
                report.calls.append((event, PriceBook.default().price(event, target.billing)))
            if unknown is not None:
                report.unknown_models[event.model] += 1
                report.rollup.add_calls(row, 1, event.tokens, unknown)
    for group, calls, tokens, priced in batch.settle():
        report.rollup.add_calls(group, calls, tokens, priced)
    return report, keys
