"""A priced cost report over agent homes: what `node-agent scan` prints.

Claude Code transcripts (most of the bytes) go through the reading engine: each file is read on
its own into a `FileReading` (in worker processes when there is much to read, or taken from the
scan index when the file has not changed), and one source merges the readings in reading order,
so dedupe across files needs no file read twice.

The other agents' files are cut into units that share no dedupe keys (`Source.partition`: a
Codex rollout with its compressed and archived copies, say). Each unit is read by its own source
instance, priced and rolled up; unit reports add up exactly (integer tokens, Decimal money), so
units may run in worker processes. Only the small rollups and each unit's dedupe keys
cross process boundaries: shipping every event back would cost more than the second core saves.
The partition is a guess checked afterwards: units whose events share a dedupe key are read
again as one, so the result always equals one global read.
"""

from __future__ import annotations

import os

# blake2b from CPython's own module: `import hashlib` loads OpenSSL first (~12 ms cold).
from _blake2 import blake2b
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeVar

import msgspec

from node_agent.claude_reading import FileReading, replay
from node_agent.claude_tally import RowKeys, SoloCalls, solo_calls
from node_agent.scan import Target, nothing_to_read, resolve_targets
from node_agent.scan import read_file as feed_file
from node_agent.scan_credit import (
    NOT_TOLD,
    CreditCall,
    CreditOptions,
    CreditSum,
    apply_credit,
    call_moves,
    credit_call,
    drawing_profile,
)
from node_agent.scan_index import (
    Done,
    Entry,
    ScanIndex,
    Task,
    calls_of,
    decode_reading,
    run_task,
    unit_key,
)
from node_agent.sources._claude_line import UsageLine
from node_agent.sources.base import Collector, ParseProblem, Source, SourceFile
from node_agent.sources.claude import ClaudeSource
from node_agent.sources.registry import all_homes, source_for
from pricing.rollup import Attribution, Rollup, RowKey
from pricing.sdk_credit import Draw, Moved, draw_at
from shared.config import Billing, NodeConfig
from shared.events import Agent, Tokens, UsageEvent

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext
    from multiprocessing.pool import Pool

    from pricing import PricedCall

# Below this much data a worker process costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 1024 * 1024
# The same for the agents read faster per byte. Codex (rollouts are mostly lines the prefilter
# drops): `--jobs 1` beat `--jobs 2` up to 90 MB of generated rollouts, lost at 180 MB.
_PARALLEL_MIN_BYTES_OF: Final = {Agent.CODEX: 128 * 1024 * 1024}
# Groups of files whose reports are also kept summed, in reading order: a scan after an append
# to a few files takes the sums of the blocks around them, not every other group's report.
BLOCK_GROUPS: Final = 32
# Files with fewer solo calls than this are priced whole after an append: keeping the priced
# report of their settled calls in the index would cost more than it saves.
SETTLED_MIN_CALLS: Final = 100


class Query(msgspec.Struct, frozen=True):
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


class Report(msgspec.Struct):
    rollup: Rollup
    files: int = 0
    bytes: int = 0
    skipped: Counter[str] = msgspec.field(default_factory=Counter)
    problems: list[ParseProblem] = msgspec.field(default_factory=list)
    unknown_models: Counter[str] = msgspec.field(default_factory=Counter)
    path_problems: list[ParseProblem] = msgspec.field(
        default_factory=list
    )  # paths that were no home
    calls: list[tuple[UsageEvent, PricedCall]] = msgspec.field(
        default_factory=list
    )  # Query.keep_calls
    warnings: list[str] = msgspec.field(default_factory=list)  # about the scan itself (its index)
    homes: list[Path] = msgspec.field(default_factory=list)  # the homes read (kept answers' deps)
    # calls the Agent SDK credit may class (`scan_credit`): drawn once every part is merged
    credit_calls: list[CreditCall] = msgspec.field(default_factory=list)
    credit_sums: list[CreditSum] = msgspec.field(default_factory=list)
    # Query.keep_calls: what the credit moved of each kept call, by event id (`call_moves`)
    moves: dict[str, Moved] = msgspec.field(default_factory=dict)

    def merge(self, other: Report) -> None:
        for key, row in other.rollup.rows.items():
            mine = self.rollup.rows.get(key)
            if mine is None:
                self.rollup.rows[key] = row
            else:
                mine.merge(row)
        self.files += other.files
        self.bytes += other.bytes
        # (Counter.update runs in Python even when given nothing: a scan merges a report per
        # file, most of them with no skip and no unknown model.)
        if other.skipped:
            self.skipped.update(other.skipped)
        self.problems.extend(other.problems)
        if other.unknown_models:
            self.unknown_models.update(other.unknown_models)
        self.calls.extend(other.calls)
        self.credit_calls.extend(other.credit_calls)
        self.credit_sums.extend(other.credit_sums)


class Unit(msgspec.Struct, frozen=True):
    agent: Agent
    files: tuple[tuple[int, SourceFile], ...]  # (index of its target, file) in reading order
    size: int


def plan_units(targets: Sequence[Target]) -> tuple[list[Unit], list[Target]]:
    """The units to read, and the targets in which no file to read was found."""
    sources = {agent: source_for(agent) for agent in {target.agent for target in targets}}
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
        # (Claude transcripts are planned one by one from the index: their unit's size is
        # never used, and a stat of each costs an appended scan ~1 ms per 600 files.)
        size = 0 if agent is Agent.CLAUDE_CODE else sum(_size(f.path) for _, f in files)
        units.append(Unit(agent, tuple(files), size))
    units.sort(key=lambda u: u.size, reverse=True)  # biggest first: better load balance
    return units, empty


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


MAX_JOBS_PER_CPU: Final = 4


def build_report(
    paths: Sequence[Path],
    config: NodeConfig,
    query: Query,
    jobs: int | None = None,
    cache_dir: Path | None = None,
    credit: CreditOptions = NOT_TOLD,
    meanwhile: Callable[[Sequence[Path]], object] | None = None,
    held: list[object] | None = None,
) -> Report:
    """`jobs`: worker processes; None picks by data size and CPU count; 1 reads in process.
    `cache_dir`: where the scan index is kept (None: read everything, keep nothing).
    `credit`: what the scan was told of the subscriptions' Agent SDK credit terms.
    `meanwhile`: called with the homes read once the workers are up (work of the caller's
    done while they read rather than after); not called when there is nothing to read.
    `held`: where the readings and the index go once done with, instead of being freed at the
    return, for a process that ends next without teardown (`entry.left_at_exit`)."""
    sources = all_homes()  # (the readers of the agents found only are loaded, by plan_units)
    targets, path_problems = resolve_targets(paths, config, sources)
    units, empty = plan_units(targets)
    if paths:  # a path the user named that gave nothing to read says why
        by_agent = {source.agent: source for source in sources}
        path_problems += [nothing_to_read(target, by_agent[target.agent]) for target in empty]
    report = Report(Rollup(query.by, query.tz), path_problems=path_problems)
    report.homes = [target.path for target in targets]
    claude = sorted(
        (item for unit in units if unit.agent is Agent.CLAUDE_CODE for item in unit.files),
        key=lambda item: (item[1].order, str(item[1].path)),
    )
    units = [unit for unit in units if unit.agent is not Agent.CLAUDE_CODE]
    if not claude and not units:
        return report  # nothing to read: no index, no reader started
    index: ScanIndex | None = None
    if cache_dir is not None:
        index, warning = ScanIndex.load(cache_dir)
        report.warnings += [warning] if warning else []
    # Tool calls are read only for an outcome view (a sum has no use for them).
    tools = query.keep_calls
    plans = [
        index.plan(f.path, tools) if index else Task(str(f.path), tools=tools) for _, f in claude
    ]
    # What a priced partial report depends on besides its files (b"": none is kept).
    context = _context(targets, config.node, query, index) if index is not None and claude else b""
    tasks = [plan for plan in plans if isinstance(plan, Task)]
    if jobs is None:
        jobs = os.cpu_count() or 1 if _worth_workers(units, tasks) else 1
    # More workers than units, or than a few per CPU, only costs forks (--jobs 10000 forked for
    # minutes on a 2-core machine).
    jobs = min(jobs, max(len(units), len(tasks)), MAX_JOBS_PER_CPU * (os.cpu_count() or 1))
    if jobs > 1:
        # Load once, before workers fork, so they share it. In process it loads when a call is
        # priced first: a repeat scan with nothing changed prices none.
        from pricing import PriceBook

        PriceBook.default()
    with _runner(jobs) as run:
        # (The listing's own paths: a Path made anew from each task's name cost ~1.4 ms per
        # 600 files before the helpers start.)
        fresh = [
            file.path
            for (_, file), plan in zip(claude, plans, strict=True)
            if isinstance(plan, Task) and plan.prior is None
        ]
        ahead = fresh + [f.path for unit in units for _, f in unit.files]

        def read_ahead() -> None:
            # Once the workers are up (their start would queue behind these reads on a cold
            # disk, and a thread is not forked with them). Only files read from the start: a
            # grown one is read on for its appended bytes, which the kernel reads ahead anyway.
            if ahead:
                from node_agent import readahead  # (and threading: not for an appended scan)

                readahead.start((path, _size(path)) for path in ahead)
            if meanwhile is not None:
                meanwhile(report.homes)

        claude_work = [
            (task, item, targets, config.node, query, context)
            for item, task in zip(claude, plans, strict=True)
            if isinstance(task, Task)
        ]
        done = iter(run.read_claude(claude_work, read_ahead))
        units_done = _units_done(units, targets, config.node, query, index, run)
        for part, _keys in _regroup_overlaps(units, units_done, targets, config.node, query, run):
            report.merge(part)
    parts: list[_Claude] = []
    for (_, file), plan in zip(claude, plans, strict=True):
        if isinstance(plan, Task):
            read = next(done)
            if index is not None:
                index.keep(file.path, read.entry)
            parts.append(read)
        else:
            parts.append(_Claude.unchanged(plan))
    report.merge(_merge_claude(claude, parts, targets, config.node, query, index, context))
    if index is not None and (warning := index.save()):
        report.warnings.append(warning)
    report.problems.sort(key=lambda p: (p.path, p.line))
    report.warnings += apply_credit(report.rollup, report.credit_calls, report.credit_sums, credit)
    if query.keep_calls:  # the outcome view classes its calls one by one, by the same rule
        report.moves = call_moves(report.credit_calls, credit)
    if held is not None:
        held += [parts, index, plans, claude, claude_work]
    return report


def _worth_workers(units: Sequence[Unit], tasks: Sequence[Task]) -> bool:
    """Whether there is enough to read for worker processes to pay for their start: the
    bytes left to read, each agent's against its own threshold. Files read from the start
    are only stat'ed until they are enough on their own (a first scan of 600 files stat'ed
    them all before any worker started)."""
    unread = sum(_unread(task) for task in tasks if task.prior is not None)  # may be < 0
    for task in tasks:
        if task.prior is None:
            unread += _size(Path(task.path))
            if unread >= PARALLEL_MIN_BYTES:  # the rest (>= 0 each) can only add to it
                return True
    share = unread / PARALLEL_MIN_BYTES
    for unit in units:
        share += unit.size / _PARALLEL_MIN_BYTES_OF.get(unit.agent, PARALLEL_MIN_BYTES)
    return share >= 1


def _unread(task: Task) -> int:
    return _size(Path(task.path)) - (task.prior.end if task.prior else 0)


def _merge_claude(
    files: Sequence[tuple[int, SourceFile]],
    parts: Sequence[_Claude],
    targets: Sequence[Target],
    node: str,
    query: Query,
    index: ScanIndex | None,
    context: bytes,
) -> Report:
    """The Claude part of the report: each group of files that share calls merged and priced on
    its own (groups share no dedupe key, and integer tokens and Decimal amounts add up exactly),
    or taken from the index when none of its files changed since it was priced, or, for a file
    that shares no call, its report priced alone where it was read."""
    report = Report(Rollup(query.by, query.tz))
    if not files:
        return report
    groups = connected(part.calls for part in parts)
    keys = [
        parts[members[0]].key
        if len(members) == 1 and parts[members[0]].key is not None
        else _key(context, [files[m] for m in members], [parts[m] for m in members])
        for members in groups
    ]
    whole_key = _whole_key(b"whole", keys) if index is not None else None
    blocks = [
        (groups[at : at + BLOCK_GROUPS], keys[at : at + BLOCK_GROUPS])
        for at in range(0, len(groups), BLOCK_GROUPS)
    ]
    block_keys = [_whole_key(b"block", block) if index is not None else None for _, block in blocks]
    if index is not None and whole_key is not None:
        # Nothing changed since a scan with this query: its whole Claude part, one blob. The
        # blocks' and groups' own reports are kept too, for the scan after the next append.
        for key in [*keys, *block_keys]:
            if key is not None:
                index.report(key)
        kept_whole = index.report(whole_key)
        whole = _unpickled(kept_whole) if kept_whole is not None else None
        if whole is not None:
            return whole
    for (block_groups, keys_of_groups), block_key in zip(blocks, block_keys, strict=True):
        kept = index.report(block_key) if index is not None and block_key is not None else None
        part = _unpickled(kept) if kept is not None else None
        if part is not None and index is not None:
            for key in keys_of_groups:  # kept for the scan after an append in this block
                if key is not None:
                    index.report(key)
        if part is None:
            part = _merge_groups(
                files, parts, block_groups, keys_of_groups, index, targets, node, query
            )
            if index is not None and block_key is not None:
                # Pickled before it is merged: the sum adopts its rows and adds to them.
                index.keep_report(block_key, _pickled(part))
        report.merge(part)
    if index is not None and whole_key is not None:
        index.keep_report(whole_key, _pickled(report))
    return report


def _merge_groups(
    files: Sequence[tuple[int, SourceFile]],
    parts: Sequence[_Claude],
    groups: Sequence[Sequence[int]],
    keys: Sequence[bytes | None],
    index: ScanIndex | None,
    targets: Sequence[Target],
    node: str,
    query: Query,
) -> Report:
    """The report of some groups of files that share calls: each group's taken from the index,
    or priced (and kept)."""
    report = Report(Rollup(query.by, query.tz))
    for members, key in zip(groups, keys, strict=True):
        kept = index.report(key) if index is not None and key is not None else None
        part = _unpickled(kept) if kept is not None else None
        if part is None:
            solo = parts[members[0]].solo if len(members) == 1 else None
            blob: bytes | None = None
            if solo is not None:
                part, blob = solo
            else:
                group = [files[m] for m in members]
                readings = [_reading(files[m], parts[m], index) for m in members]
                part = _merge_files(group, readings, targets, node, query)
            if index is not None and key is not None:
                index.keep_report(key, blob or _pickled(part))
        report.merge(part)
    return report


def _whole_key(kind: bytes, keys: Sequence[bytes | None]) -> bytes | None:
    """The key of the reports of `keys` added up: None when one of them cannot be kept."""
    digest = blake2b(kind, digest_size=16)
    for key in keys:
        if key is None:
            return None
        digest.update(key)
    return digest.digest()


# A file's report priced on its own, and pickled when it came from a worker.
_Solo = tuple["Report", bytes | None]
_ClaudeWork = tuple[Task, tuple[int, SourceFile], Sequence[Target], str, Query, bytes]


class _Claude(msgspec.Struct):
    """What the merge needs of one transcript: the message ids of its calls (to group the files
    that share calls), and its reading, still msgpack (`raw`) until a group merges it."""

    calls: list[str]
    whole: FileReading | None
    raw: memoryview | bytes | None
    size: int | None  # None: the file could not be opened
    entry: Entry | None  # in the index
    keepable: bool  # the whole reading is the entry's (no unterminated tail): may be kept priced
    solo: _Solo | None = None
    # `_key` of the file as a group of its own, worked out where it was read (in parallel, not
    # by the merge after the reading); None: not worked out, or none (then `_key` tells why).
    key: bytes | None = None

    @classmethod
    def unchanged(cls, entry: Entry) -> _Claude:
        return cls(entry.calls, None, entry.reading, entry.size, entry, True)


class _Shipped(msgspec.Struct, array_like=True, gc=False):
    """A worker's reading of one transcript on its way back, as msgpack: the parent decodes only
    the message ids of its calls, and the reading when its file shares calls (unpickling every
    reading cost the parent ~0.1 s per 200 MB). `whole` is None when it is the entry's reading."""

    calls: list[str]  # empty when `whole` is None: the entry's
    whole: bytes | None  # msgpack (a Raw cannot be optional)
    size: int | None
    entry: Entry | None
    solo: bytes
    key: bytes | None = None  # `_Claude.key`


_decode_shipped = msgspec.msgpack.Decoder(_Shipped).decode


def _read_claude(work: _ClaudeWork) -> _Claude:
    """Read one transcript and price it alone: most files share no call with another, so the
    merge only adds their reports up (the pricing is spread over the workers with the
    reading)."""
    task, file, targets, node, query, context = work
    done = run_task(task)
    outcome, entry = done.outcome, done.entry
    solo = _file_report(task, done, file, targets, node, query, context)
    keepable = entry is not None and outcome.kept is outcome.whole
    calls = entry.calls if entry is not None and keepable else calls_of(outcome.whole)
    # Pickled here for the index (`context`: one is kept), where the files are read in
    # parallel, not by the merge after them; not when its group cannot be kept (`_key`).
    blob = _pickled(solo) if context and keepable and entry is not None and not entry.racy else None
    if keepable and entry is not None:
        # Held as the index's msgpack, as a helper's reading is: its objects are freed here,
        # while the files are read in parallel, not all at the end of the scan (~8 ms for
        # 200 MB). A file that shares calls with another has it decoded again (`_reading`).
        read = _Claude(calls, None, entry.reading, outcome.size, entry, True, (solo, blob))
    else:
        read = _Claude(calls, outcome.whole, None, outcome.size, entry, keepable, (solo, blob))
    read.key = _key(context, [file], [read])
    return read


def _file_report(
    task: Task,
    done: Done,
    file: tuple[int, SourceFile],
    targets: Sequence[Target],
    node: str,
    query: Query,
    context: bytes,
) -> Report:
    """`_merge_files` of one file. A long file whose calls need no dedupe keeps in its entry
    the priced report of its settled calls (all but those its next lines may still change),
    so that after an append only the calls from there on are priced again."""
    outcome, entry = done.outcome, done.entry
    reading = outcome.whole
    keep = bool(context) and not query.keep_calls and entry is not None and outcome.kept is reading
    count = _settled_count(reading) if keep else 0
    solo = solo_calls(reading) if keep and count >= SETTLED_MIN_CALLS else None
    if solo is None or entry is None:
        return _merge_files([file], [(reading, outcome.size)], targets, node, query)
    key = blake2b(context + repr((file[0], str(file[1].path))).encode(), digest_size=16).digest()
    settled = None
    if done.resumed and task.settled_key == key and task.settled_count <= count:
        settled = _unpickled(task.settled)
    start = task.settled_count if settled is not None else 0
    settled = settled or Report(Rollup(query.by, query.tz))
    target = targets[file[0]]
    _price_lines(settled, solo.lines[start:count], target, node, query)
    entry.settled = _pickled(settled)  # before rows are added on
    entry.settled_count, entry.settled_key = count, key
    report = _solo_report(
        file[1].path, reading, outcome.size, SoloCalls([], solo.snapshots), target, node, query
    )
    report.merge(settled)
    _price_lines(report, solo.lines[count:], target, node, query)
    return report


def _settled_count(reading: FileReading) -> int:
    """How many of the solo calls of `reading` (`solo_calls`, in order) come before its last
    run: an append may extend that run, and the call held before it is given out at the next."""
    count = 0
    held = False
    for run in reading.runs[:-1]:
        if run.best.group is None:
            count += 1
        else:
            count += held
            held = True
    return count


def _read_claude_shipped(work: _ClaudeWork) -> bytes:
    """`_read_claude` in a worker, shipped as msgpack bytes."""
    read = _read_claude(work)
    whole = None if read.keepable else msgspec.msgpack.encode(read.whole)
    assert read.solo is not None
    blob = read.solo[1] or _pickled(read.solo[0])
    # The entry's calls are not shipped twice (their strings decoded twice by the parent).
    calls = [] if whole is None else read.calls
    return msgspec.msgpack.encode(_Shipped(calls, whole, read.size, read.entry, blob, read.key))


def _received(got: bytes | memoryview) -> _Claude:
    """A worker's `_read_claude_shipped`, taken back."""
    shipped = _decode_shipped(got)
    entry = shipped.entry
    kept = shipped.whole is None and entry is not None
    solo = _unpickled(shipped.solo)
    return _Claude(
        entry.calls if kept and entry is not None else shipped.calls,
        None,
        entry.reading if kept and entry is not None else shipped.whole,
        shipped.size,
        entry,
        kept,
        (solo, shipped.solo) if solo is not None else None,
        shipped.key,
    )


def _reading(
    file: tuple[int, SourceFile], part: _Claude, index: ScanIndex | None
) -> tuple[FileReading, int | None]:
    """The whole reading of a file whose group is merged; one the index kept damaged is read
    afresh instead (a damaged index never gives figures)."""
    if part.whole is None and part.raw is not None:
        try:
            part.whole = decode_reading(part.raw)
        except (msgspec.DecodeError, RecursionError):
            path = file[1].path
            done = run_task(Task(str(path)))
            part.whole, part.size, part.keepable = done.outcome.whole, done.outcome.size, False
            if index is not None:
                index.keep(path, done.entry)
    return part.whole or FileReading([], [], {}), part.size


def _pickled(value: object) -> bytes:
    import pickle  # here: a scan with nothing to read keeps nothing

    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


def _unpickled(blob: bytes) -> Report | None:
    """A kept partial report; None (priced anew) when the blob is not one."""
    import pickle

    try:
        found = pickle.loads(blob)  # our own cache, in an owner-only folder
    except Exception:  # a damaged pickle can raise nearly anything
        return None
    return found if isinstance(found, Report) else None


def connected(keys: Iterable[Collection[Hashable]]) -> list[list[int]]:
    """The indices of the items (each given by its keys), in groups such that items sharing a
    key are in one group; groups and their members in the items' order."""
    items = list(keys)
    if sum(map(len, items)) == len(set().union(*items)):
        # No key met twice (most transcripts share no call): each item is a group of its own,
        # told at C speed (the union-find below took ~4 ms of a scan's merge for 600 files).
        return [[index] for index in range(len(items))]
    parent: list[int] = []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[Hashable, int] = {}
    for index, item in enumerate(items):
        parent.append(index)
        for key in item:
            if (other := owner.setdefault(key, index)) != index:
                parent[root(index)] = root(other)
    groups: dict[int, list[int]] = {}
    for index in range(len(parent)):
        groups.setdefault(root(index), []).append(index)
    return list(groups.values())


# The reading rules of the other agents' units: a unit kept priced depends on them too.
_SOURCES: Final = ("sources", "scan.py", "tailer.py")


def _context(
    targets: Sequence[Target],
    node: str,
    query: Query,
    index: ScanIndex | None,
    rules: Sequence[str] = (),
) -> bytes:
    """What a priced partial report depends on besides its files' readings (and `rules`, more
    of fleetmeter's own source under node_agent/); the digest of the code and tables read is
    kept in `index` by their stat (`file_digest`)."""
    from node_agent.file_digest import contents_digest

    digest = blake2b(digest_size=16)
    root = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    mine = [os.path.join(root, "node_agent", name) for name in rules]
    code = [found for p in mine for found in (_files(p, ".py") if os.path.isdir(p) else [p])]
    pricing = os.path.join(root, "pricing")
    # The user's installed tables price over the shipped ones (`fleet-hub prices install`).
    from pricing._installed import installed_files, prices_dir  # (not .installed: its install)

    sources = [
        *_files(pricing, ".py"),
        *_files(os.path.join(pricing, "tables"), ".toml", deep=False),
        *code,
        *map(str, installed_files(prices_dir())),
        __file__,
    ]
    digest.update(contents_digest(sources, index))
    # keep_calls too: a report kept without its calls must not answer an outcome view
    digest.update(
        repr((node, query.by, str(query.tz), query.since, query.until, query.keep_calls)).encode()
    )
    digest.update(_zone_rules(query.tz))
    for target in targets:
        profile = target.profile
        who = (profile.name, profile.account) if profile else None
        digest.update(repr((who, target.billing.value)).encode())
    return digest.digest()


def _zone_rules(tz: tzinfo) -> bytes:
    """What a zone's days depend on: its file where zoneinfo finds it (updated tz data moves
    them), else the tzdata package's version; a fixed zone is its own name."""
    key = getattr(tz, "key", None)
    if not isinstance(key, str):
        return b""
    from zoneinfo import TZPATH

    for folder in TZPATH:
        try:
            with open(os.path.join(folder, key), "rb") as fh:
                return fh.read()
        except OSError:
            continue
    from importlib import import_module

    try:
        tzdata = import_module("tzdata")  # where zoneinfo looks next
    except ImportError:
        return b"no rules"
    return str(getattr(tzdata, "IANA_VERSION", "tzdata")).encode()


def _files(folder: str, suffix: str, deep: bool = True) -> list[str]:
    """The files named *`suffix` in `folder` (and below it, with `deep`), sorted: what
    `Path.rglob` gives, without the pattern compiled for it (~10 ms of a short scan)."""
    found: list[str] = []
    for at, dirs, names in os.walk(folder):
        found += [os.path.join(at, name) for name in names if name.endswith(suffix)]
        if not deep:
            dirs.clear()
    return sorted(found)


def _key(
    context: bytes, files: Sequence[tuple[int, SourceFile]], parts: Sequence[_Claude]
) -> bytes | None:
    """The key of a group's priced report: None when there is no index (`context` b""), or
    one of its files has no kept reading, an unterminated last line (read afresh each time,
    so never kept) or a reading made in the clock tick of a write (`Entry.racy`: the key could
    not tell a change in that tick)."""
    if not context:
        return None
    digest = blake2b(context, digest_size=16)
    for (target, file), part in zip(files, parts, strict=True):
        entry = part.entry
        if entry is None or not part.keepable or entry.racy:
            return None
        # (Formatted, not a tuple's repr: a Path's repr cost ~1 us a file more.)
        identity = f"{file.path}\0{target}\0{entry.dev}\0{entry.ino}\0{entry.size}\0"
        identity += f"{entry.mtime_ns}\0{entry.end}\0"
        digest.update(identity.encode("utf-8", "surrogateescape") + entry.window)
    return digest.digest()


def _merge_files(
    files: Sequence[tuple[int, SourceFile]],
    readings: Sequence[tuple[FileReading, int | None]],
    targets: Sequence[Target],
    node: str,
    query: Query,
) -> Report:
    """One source takes the files' whole readings (with the size read, None for a file that
    could not be opened) in reading order (the dedupe of one global read), then their calls
    are priced."""
    if len(files) == 1 and not query.keep_calls:
        (index, file), (reading, size) = files[0], readings[0]
        solo = solo_calls(reading)
        if solo is not None:
            return _solo_report(file.path, reading, size, solo, targets[index], node, query)
    source = ClaudeSource()
    sinks: dict[int, Collector] = {}
    report = Report(Rollup(query.by, query.tz))
    for (index, file), (reading, size) in zip(files, readings, strict=True):
        sink = sinks.setdefault(index, Collector())
        replay(source, file.path, reading, sink)
        if size is not None:
            report.files += 1
            report.bytes += size
    _price(source, sinks, targets, node, query, report)
    return report


def _solo_report(
    path: Path,
    reading: FileReading,
    size: int | None,
    solo: SoloCalls,
    target: Target,
    node: str,
    query: Query,
) -> Report:
    """`_merge_files` of one file whose calls need no dedupe (`claude_tally`): priced from its
    lines, with the same rows, sums, skips and problems, and no event built."""
    report = Report(Rollup(query.by, query.tz))
    if size is not None:
        report.files, report.bytes = 1, size
    name = str(path)
    report.problems.extend(ParseProblem(name, line, reason) for line, reason in reading.problems)
    skipped = report.skipped
    for reason, times in reading.skipped.items():
        if times > 0:
            skipped[reason] += times
    if solo.snapshots:
        skipped["snapshot"] += solo.snapshots
    _price_lines(report, solo.lines, target, node, query)
    return report


def _price_lines(
    report: Report, lines: Sequence[UsageLine], target: Target, node: str, query: Query
) -> None:
    """Solo calls (`claude_tally`) priced from their lines into `report`'s rows."""
    if not lines:  # (a long file's report after its settled calls, say)
        return
    row_of = RowKeys(report.rollup, _attribution(target, node))
    drawing = drawing_profile(target.agent, target.profile)
    alike = drawing is None and query.since is None and query.until is None
    if not alike or not _price_alike(report, lines, row_of, target.billing):
        _price_each(report, lines, row_of, target, query)


def _price_alike(
    report: Report, lines: Sequence[UsageLine], row_of: RowKeys, billing: Billing
) -> bool:
    """`_price_each` of calls that all count in a row and draw on no subscription's credit,
    priced by the sums of their counts per row and kind of call (`CallBatch.add_alike`),
    nothing per call but its bucket. False, with nothing added, when some call has no price
    (priced one by one, its unknown model and row are told in the calls' order)."""
    # (a scan with nothing to read loads no prices; the module, not the package: a package's
    # `from ... import` runs importlib's fromlist handling at every file)
    from pricing._book import CallBatch, PriceBook

    # Annotated, not subscripted: `CallBatch[RowKey](...)` builds a typing alias per call.
    batch: CallBatch[RowKey] = CallBatch(PriceBook.default())
    for row, kind, unsplit, alike in row_of.alike(lines):
        stamps = [line.ts for line in alike]
        counts = [line.tokens for line in alike]
        if not batch.add_alike(row, kind, stamps, counts, billing, unsplit):
            return False
    rollup = report.rollup
    for row, calls, tokens, priced in batch.settle():
        rollup.add_calls(row, calls, tokens, priced)
    return True


def _price_each(
    report: Report, lines: Sequence[UsageLine], row_of: RowKeys, target: Target, query: Query
) -> None:
    """`_price_lines` one call at a time: each call's row, credit drawn and unknown price."""
    billing = target.billing
    rollup = report.rollup
    from pricing._book import CallBatch, PriceBook

    # groups: a report row, or a Claude subscription row's untold calls (moved as a sum)
    batch: CallBatch[Hashable] = CallBatch(PriceBook.default())
    drawing = drawing_profile(target.agent, target.profile)
    for line in lines:
        wanted = query.wants(line.ts)
        row = row_of(line) if wanted else None
        group: Hashable | None = row
        if drawing is not None:
            draw = draw_at(line.entrypoint, line.ts)
            if draw is Draw.CREDIT:  # weighed by the hour (`scan_credit`), wanted or not
                report.credit_calls.append(
                    CreditCall(drawing.name, drawing.plan, line.ts, line.event_id,
                               line.entrypoint, None, False, row, line=line)
                )  # fmt: skip
                group = _Sdk(row, int(line.ts // 3600))
            elif draw is Draw.UNTOLD and row is not None:
                group = _Untold(row)
        if group is None:
            continue
        unknown = batch.add_counts(
            group,
            line.model,
            None,  # Claude Code logs no provider
            line.ts,
            line.tokens,
            billing,
            service_tier=line.service_tier,
            speed=line.speed,
            inference_geo=line.inference_geo,
            cache_write_unsplit=line.unsplit,
        )
        if unknown is not None and row is not None:
            report.unknown_models[line.model] += 1
            rollup.add_calls(row, 1, Tokens(*line.tokens), unknown)
    for group, calls, tokens, priced in batch.settle():
        if isinstance(group, _Sdk):
            assert drawing is not None
            if group.row is not None:
                rollup.add_calls(group.row, calls, tokens, priced)
            if priced.api_equivalent is not None:
                report.credit_sums.append(
                    CreditSum(drawing.name, group.hour, group.row, priced.estimated,
                              priced.api_equivalent)
                )  # fmt: skip
        elif isinstance(group, _Untold):
            assert drawing is not None
            rollup.add_calls(group.row, calls, tokens, priced)
            report.credit_calls.append(
                CreditCall(drawing.name, drawing.plan, 0.0, "", None, priced.api_equivalent,
                           priced.estimated, group.row, untold=True)
            )  # fmt: skip
        else:
            assert isinstance(group, tuple)
            rollup.add_calls(group, calls, tokens, priced)


# Groups of a batch beside the rows (tuples), never equal to one. Structs: a NamedTuple's
# definition execs generated code (~0.1-0.2 ms of every scan).
class _Sdk(msgspec.Struct, frozen=True, gc=False):
    """A row's SDK calls of a Claude subscription in one hour (row None: outside
    --since/--until, priced for the credit only)."""

    row: RowKey | None
    hour: int


class _Untold(msgspec.Struct, frozen=True, gc=False):
    """A row's calls that do not say how Claude Code was started: estimated as a sum."""

    row: RowKey


def _attribution(target: Target, node: str) -> Attribution:
    profile = target.profile
    return Attribution(
        machine=node,
        profile=profile.name if profile else None,
        account=profile.account if profile else None,
    )


Result = tuple["Report", frozenset[str]]
Work = tuple["Unit", Sequence[Target], str, Query]
_In = TypeVar("_In")
_Out = TypeVar("_Out")


class Runner(Protocol):
    def __call__(self, task: Callable[[_In], _Out], work: list[_In]) -> list[_Out]: ...


class _Runner:
    """Runs tasks in order: in this process, or spread over `jobs` processes. The worker pool
    is started at its first use: the Claude transcripts are shared between this process and
    forked helpers instead (`workers.share`), where that can be done."""

    def __init__(self, jobs: int, stack: ExitStack) -> None:
        self.jobs = jobs
        self._stack = stack
        self._pool: Pool | None = None

    def __call__(self, task: Callable[[_In], _Out], work: list[_In]) -> list[_Out]:
        pool = self._started() if self.jobs > 1 and work else None
        if pool is None:
            return [task(item) for item in work]
        # Work comes biggest first; chunks amortise the per-task cost of small items.
        return pool.map(task, work, chunksize=max(1, len(work) // (self.jobs * 8)))

    def _started(self) -> Pool | None:
        """The worker pool, started at its first use; None when it cannot be (no process or
        thread to be had: a limit on them), which failed the whole scan: its work is done in
        this process instead, as `workers.share` does it."""
        if self._pool is None:
            try:
                self._pool = self._stack.enter_context(worker_context().Pool(self.jobs))
            except (OSError, RuntimeError):
                self.jobs = 1
        return self._pool

    def read_claude(
        self, work: Sequence[_ClaudeWork], started: Callable[[], None]
    ) -> list[_Claude]:
        """`_read_claude` of each transcript; `started` runs once the workers are up."""
        if self.jobs <= 1 or not work:
            started()
            return [_read_claude(item) for item in work]
        from node_agent.workers import can_share, share

        if self._pool is None and can_share():
            return share(
                _read_claude, _read_claude_shipped, _received, work, self.jobs - 1, started
            )
        pool = self._started()
        started()
        if pool is None:
            return [_read_claude(item) for item in work]
        chunk = max(1, len(work) // (self.jobs * 8))
        return [_received(got) for got in pool.map(_read_claude_shipped, work, chunk)]


def worker_context() -> BaseContext:
    """`workers.worker_context`, that module loaded only by a scan that forks (struct,
    multiprocessing)."""
    from node_agent import workers

    return workers.worker_context()


@contextmanager
def _runner(jobs: int) -> Iterator[_Runner]:
    with ExitStack() as stack:
        yield _Runner(jobs, stack)


def _units_done(
    units: Sequence[Unit],
    targets: Sequence[Target],
    node: str,
    query: Query,
    index: ScanIndex | None,
    run: Runner,
) -> list[Result]:
    """Each unit's priced report and dedupe keys: taken from the index when none of its files
    changed since, else read (and kept there)."""
    if not units:
        return []  # (a scan of Claude homes only: their reading rules' digest is not needed)
    context = _context(targets, node, query, index, _SOURCES) if index is not None else b""
    keys = [unit_key(context, unit.files) if index is not None else None for unit in units]
    kept: list[Result | None] = []
    for key in keys:
        blob = index.report(key) if index is not None and key is not None else None
        kept.append(_unpickled_result(blob) if blob is not None else None)
    todo = [
        (unit, targets, node, query) for unit, got in zip(units, kept, strict=True) if got is None
    ]
    fresh = iter(run(_run_unit, todo))
    done: list[Result] = []
    for key, got in zip(keys, kept, strict=True):
        if got is None:
            got = next(fresh)
            if index is not None and key is not None:
                index.keep_report(key, _pickled(got))
        done.append(got)
    return done


def _unpickled_result(blob: bytes) -> Result | None:
    """A kept unit result; None (read anew) when the blob is not one."""
    import pickle

    try:
        found = pickle.loads(blob)  # our own cache, in an owner-only folder
    except Exception:  # a damaged pickle can raise nearly anything
        return None
    if isinstance(found, tuple) and len(found) == 2 and isinstance(found[0], Report):
        return found if isinstance(found[1], frozenset) else None
    return None


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
    groups = connected(
        [(unit.agent, key) for key in keys] for unit, (_, keys) in zip(units, done, strict=True)
    )
    results: list[Result] = []
    merged: list[Unit] = []
    for members in groups:
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
    return results + run(_run_unit, [(unit, targets, node, query) for unit in merged])


def _run_unit(item: tuple[Unit, Sequence[Target], str, Query]) -> Result:
    unit, targets, node, query = item
    source = source_for(unit.agent)
    source.wants_quota_readings = False  # the report counts spend only
    source.wants_tool_calls = query.keep_calls  # only an outcome view attributes tool calls
    sinks: dict[int, Collector] = {}
    report = Report(Rollup(query.by, query.tz))
    for index, file in unit.files:
        sink = sinks.setdefault(index, Collector())
        size = feed_file(source, file, sink)
        if size is not None:
            report.files += 1
            report.bytes += size
    keys = frozenset(source.dedupe_key(e) for s in sinks.values() for e in s.events.usage.values())
    _price(source, sinks, targets, node, query, report)
    return report, keys


def _price(
    source: Source,
    sinks: dict[int, Collector],
    targets: Sequence[Target],
    node: str,
    query: Query,
    report: Report,
) -> None:
    """The counted calls of each target's sink, priced into `report`'s rows."""
    from pricing import CallBatch, PriceBook

    batch: CallBatch[RowKey] = CallBatch(PriceBook.default())
    for index, sink in sinks.items():
        target = targets[index]
        attribution = _attribution(target, node)
        report.skipped.update(sink.skipped)
        report.problems.extend(sink.problems)
        drawing = drawing_profile(target.agent, target.profile)
        for event in sink.events.counted_usage():
            wanted = query.wants(event.ts)
            if drawing is not None:  # drawn over the whole month, wanted or not
                priced = PriceBook.default().price(event, Billing.API)
                call = credit_call(
                    drawing,
                    event.ts,
                    event.event_id,
                    event.entrypoint,
                    (priced.api_equivalent, priced.estimated),
                    report.rollup.key(event, attribution) if wanted else None,
                )
                if call is not None:
                    report.credit_calls.append(call)
                    if not call.untold and call.amount is not None:
                        report.credit_sums.append(
                            CreditSum(call.profile, int(event.ts // 3600), call.row,
                                      call.estimated, call.amount)
                        )  # fmt: skip
            if not wanted:
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
