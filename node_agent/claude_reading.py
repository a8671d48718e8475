"""The reading of one Claude Code transcript, kept so that it can be merged and resumed.

A scan reads every file on its own (in any process, in any order) into a `FileReading`: the
file's runs of usage lines (one per call's consecutive snapshots: see `claude.Run`), its problems
and its skip counts. One `ClaudeSource` then takes the readings in reading order, exactly as if
it had been fed the lines, so the dedupe across files (forks, replays, copies between homes) is
the same as one global read, with nothing read twice.

A reading made without tool calls (`tools` False: a report that only sums) says so, so that
it never serves a reader that needs them (an outcome view); the daemon reads lines with them.

A reading covers the file up to its last newline (`end`), so the scan index can keep it and a
later scan go on from there when the file only grew. The unterminated rest of a file is read on
top of a copy each time (it is most likely still being written).
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from node_agent.sources._claude_line import (
    FileFacts,
    ToolUses,
    UsageLine,
    tool_calls_of,
    typed_record,
    typed_usage,
)
from node_agent.sources.base import ParseProblem, Sink
from node_agent.sources.claude import ClaudeSource, Run, number_kept_lines
from node_agent.tailer import LinesFrom, is_json
from shared.events import LimitEvent, UsageEvent

TORN_TAIL = "incomplete last line (still being written)"


class FileReading(msgspec.Struct, array_like=True, gc=False):
    runs: list[Run]
    problems: list[tuple[int, str]]  # (line, reason)
    skipped: dict[str, int]
    lineno: int = 0  # of the last complete line
    end: int = 0  # just past the last complete line
    mismatch_reported: bool = False  # the file's one cache-split problem was told
    tools: bool = True  # its lines carry their `tool_calls` (False: read without them)


class _Lines:
    """A Sink for the reading of one file: problems and skips kept, limit hits dropped (a scan
    counts spend); usage lines come back from `read_line`, never through here."""

    def __init__(self, reading: FileReading) -> None:
        self.reading = reading

    def usage(self, event: UsageEvent) -> None:  # pragma: no cover (never called)
        raise AssertionError(event.event_id)

    def limit(self, event: LimitEvent) -> None:
        pass

    def problem(self, problem: ParseProblem) -> None:
        self.reading.problems.append((problem.line, problem.reason))

    def skip(self, reason: str) -> None:
        skipped = self.reading.skipped
        skipped[reason] = skipped.get(reason, 0) + 1


class Outcome(msgspec.Struct, gc=False):
    """What one scan learned of a file: `kept` to save in the index (None when it could not be
    read to the end), `whole` with the unterminated rest on top, `size` at the time of reading
    (None: the file could not be opened, and `whole` holds why)."""

    whole: FileReading
    kept: FileReading | None
    size: int | None


def read_file(path: Path, prior: FileReading | None = None, tools: bool = True) -> Outcome:
    """Read `path` from the start, or on from `prior` (a reading of its first `prior.end` bytes,
    which the caller has checked are unchanged). Without `tools`, tool uses are not read; with
    them, a `prior` read without them is not read on from (its lines lack them)."""
    if prior is not None and tools and not prior.tools:
        prior = None
    reading = _copy(prior) if prior is not None else FileReading([], [], {}, tools=tools)
    reading.tools = reading.tools and tools
    sink = _Lines(reading)
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        sink.problem(ParseProblem(str(path), 0, f"cannot stat: {exc.strerror}"))
        return Outcome(reading, None, None)
    source = ClaudeSource()
    source.wants_tool_calls = tools
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            lines = LinesFrom(fd, reading.end, reading.lineno, None, number_kept_lines)
            _feed(source, path, reading, lines, sink)
        finally:
            os.close(fd)
    except OSError as exc:
        # Lines before the damage were read; say what stopped the rest.
        sink.problem(ParseProblem(str(path), 0, f"cannot read further: {exc}"))
        return Outcome(reading, None, size)
    reading.lineno, reading.end = lines.lineno, lines.end
    tail = lines.tail_lines()
    if not tail:
        return Outcome(reading, reading, size)
    whole = _copy(reading)
    if is_json(tail[0][1]):
        _feed(source, path, whole, tail, _Lines(whole))
    else:
        _Lines(whole).skip(TORN_TAIL)
    return Outcome(whole, reading, size)


def _feed(
    source: ClaudeSource,
    path: Path,
    reading: FileReading,
    lines: LinesFrom | list[tuple[int, bytes]],
    sink: Sink,
) -> None:
    if source.wants_tool_calls:
        _feed_tools(source, path, reading, lines, sink)
    else:
        _feed_bare(source, path, reading, lines, sink)


def _feed_tools(
    source: ClaudeSource,
    path: Path,
    reading: FileReading,
    lines: LinesFrom | list[tuple[int, bytes]],
    sink: Sink,
) -> None:
    """`_feed` with tool uses: a call's are signed once its best snapshot is known."""
    facts = FileFacts(path)
    facts.split_mismatch_reported = reading.mismatch_reported
    runs = reading.runs
    last = runs[-1] if runs else None
    tools: ToolUses = []
    # The tool uses of `last.best` when it came from these lines: signed once its run is over
    # (a streamed reply's later snapshots often take the best line's place).
    best_tools: ToolUses | None = None
    for lineno, line in lines:
        tools.clear()
        usage = source.read_line(facts, lineno, line, sink, tools)
        if usage is None:
            continue
        if last is not None and usage.group is not None and last.best.event_id == usage.event_id:
            # The next snapshot of the same call (a line without message.id is its own call).
            last.revisions.append(usage.revision)
            if usage.revision > last.best.revision:
                last.best = usage
                best_tools, tools = tools, []
            continue
        if last is not None and best_tools:
            last.best = _with_tools(last.best, best_tools)
        last = Run(usage, [usage.revision], usage.is_sub)
        best_tools, tools = tools, []
        runs.append(last)
    if last is not None and best_tools:
        last.best = _with_tools(last.best, best_tools)
    reading.mismatch_reported = facts.split_mismatch_reported


def _feed_bare(
    source: ClaudeSource,
    path: Path,
    reading: FileReading,
    lines: LinesFrom | list[tuple[int, bytes]],
    sink: Sink,
) -> None:
    """`_feed` without tool uses (a scan that sums: its hot loop): each line straight through
    the typed path, the checked path only for what that declines, and no tool uses to carry
    from a call's best snapshot (`read_line` would take the same steps, one call deeper)."""
    facts = FileFacts(path)
    facts.split_mismatch_reported = reading.mismatch_reported
    runs = reading.runs
    last = runs[-1] if runs else None
    for lineno, line in lines:
        typed = typed_record(line, False)
        best = last.best if last is not None else None
        usage = typed_usage(typed, facts, lineno, sink, None, best) if typed is not None else False
        if usage is False:
            usage = source.checked_line(facts, lineno, line, sink)
        if usage is None:
            continue
        if isinstance(usage, int):
            # A snapshot of the last run's call that does not beat its best line (`best`).
            if last is not None:
                last.revisions.append(usage)
            continue
        if last is not None and usage.group is not None and last.best.event_id == usage.event_id:
            # The next snapshot of the same call (a line without message.id is its own call).
            last.revisions.append(usage.revision)
            if usage.revision > last.best.revision:
                last.best = usage
            continue
        last = Run(usage, [usage.revision], usage.is_sub)
        runs.append(last)
    reading.mismatch_reported = facts.split_mismatch_reported


def _with_tools(usage: UsageLine, tools: ToolUses) -> UsageLine:
    """The line with its tool uses' signatures: made only for a run's best line, as the other
    snapshots of a call are dropped (most lines of a streamed reply repeat its usage)."""
    return msgspec.structs.replace(usage, tool_calls=tool_calls_of(tools)) if tools else usage


def _copy(reading: FileReading) -> FileReading:
    """A copy that reading on cannot change (only the last run may grow)."""
    runs = list(reading.runs)
    if runs:
        last = runs[-1]
        runs[-1] = Run(last.best, list(last.revisions), last.side)
    return FileReading(
        runs,
        list(reading.problems),
        dict(reading.skipped),
        reading.lineno,
        reading.end,
        reading.mismatch_reported,
        reading.tools,
    )


def replay(source: ClaudeSource, path: Path, reading: FileReading, sink: Sink) -> None:
    """Hand a file's reading to the source that dedupes across files, as `scan.read_file`
    would have fed it the lines."""
    name = str(path)
    for line, reason in reading.problems:
        sink.problem(ParseProblem(name, line, reason))
    for reason, times in reading.skipped.items():
        for _ in range(times):
            sink.skip(reason)
    for run in reading.runs:
        source.take(run, path, sink)
    source.flush(sink)
