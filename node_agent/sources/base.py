"""What every agent source implements, and the sink it reports into.

A source knows one agent's on-disk layout: where its homes are, which files under a home hold
usage, and how to turn their records into events. It never prices (that is `pricing`) and never
touches sockets. One source instance holds the cross-file state of a whole read (dedupe keys,
per-file cursors), so a scan creates one instance per agent and feeds it every file.

Files come in two kinds. Append-only JSONL files (plain or zstd-compressed) are fed line by
line through `feed_line`, by a one-shot reader in `node-agent scan` and by the tailer in the
daemon; `lineno` is 1-based. Whole files (a SQLite database, a CSV export, a legacy JSON chat)
are handed to `read_whole`, which may be called again after the file changed: it must emit the
same event ids for the same records.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import msgspec

from node_agent.sources.homes import Homes
from shared.events import EventSet, LimitEvent, UsageEvent

if TYPE_CHECKING:
    from node_agent.tailer import Numberer


class FileKind(StrEnum):
    JSONL = "jsonl"
    JSONL_ZST = "jsonl.zst"
    WHOLE = "whole"


class SourceFile(msgspec.Struct, frozen=True):
    path: Path
    kind: FileKind
    # Files are read in ascending order of (order, path). Sources use it where order decides
    # dedupe (a main transcript before the subagent files that may replay it).
    order: int = 0


class ParseProblem(msgspec.Struct, frozen=True):
    """Something in a log that could not be read. Reported with its place; never fatal."""

    path: str
    line: int  # 1-based; 0 when it concerns the whole file
    reason: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.reason}"


class Sink(Protocol):
    def usage(self, event: UsageEvent) -> None: ...

    def limit(self, event: LimitEvent) -> None: ...

    def problem(self, problem: ParseProblem) -> None: ...

    def skip(self, reason: str) -> None:
        """Count a record deliberately not turned into an event (e.g. "synthetic", "replayed")."""
        ...


class Collector(msgspec.Struct):
    """A Sink that keeps everything in memory: for scans and tests."""

    events: EventSet = msgspec.field(default_factory=EventSet)
    problems: list[ParseProblem] = msgspec.field(default_factory=list)
    skipped: Counter[str] = msgspec.field(default_factory=Counter)

    def usage(self, event: UsageEvent) -> None:
        self.events.add(event)

    def limit(self, event: LimitEvent) -> None:
        self.events.add(event)

    def problem(self, problem: ParseProblem) -> None:
        self.problems.append(problem)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1


class Source(Homes, ABC):
    """An agent's reader; where its homes are and how one is told comes from its `Homes`."""

    # A one-shot cost report has no use for quota readings: a source may skip building them
    # (rate-limit hits are still read: they are rare and cheap).
    wants_quota_readings: bool = True
    # Nor for the tool calls each call asked for (only outcome views read them): a source may
    # skip hashing their arguments.
    wants_tool_calls: bool = True

    @abstractmethod
    def discover(self, home: Path) -> list[SourceFile]:
        """Every file under `home` that may hold usage, in reading order."""

    def discover_under(self, home: Path, under: Path) -> list[SourceFile]:
        """`discover(home)`, limited to `under` (a file or folder inside the home)."""
        return [f for f in self.discover(home) if f.path == under or under in f.path.parents]

    def partition(self, path: Path) -> str:
        """A guess at groups of files that share no dedupe keys, so that separate instances of
        this source may read them in parallel. Default: one partition. The guess is checked
        with `dedupe_key`: partitions whose events share a key are read again together."""
        return ""

    def dedupe_key(self, event: UsageEvent) -> str:
        """What this source's dedupe decisions about `event` hang on: two events with different
        keys never affect each other, whatever files they came from."""
        return event.event_id

    def ignores(self, data: bytes, start: int, end: int) -> bool:
        """True when the line `data[start:end]` is one `feed_line` would drop without a word (no
        event, no problem, no skip count), so a reader need not copy it out. Must be cheap: it
        sees every line of a scan. Default: no line is known to be ignorable."""
        return False

    def line_test(self) -> Callable[[bytes, int, int], bool] | None:
        """`ignores`, when this source has one worth calling."""
        return None if type(self).ignores is Source.ignores else self.ignores

    def line_numberer(self) -> Numberer | None:
        """`tailer._number` with `line_test` written into its loop (the same lines kept, the
        same numbers), when this source has one: the test runs on every line of a scan, and
        a call per line can cost more than the test. Default: None (`_number` calls it)."""
        return None

    def feed_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        """One complete line (without its newline) of a JSONL file."""
        raise NotImplementedError(f"{type(self).__name__} reads no JSONL files")

    def feed_kept_line(self, path: Path, lineno: int, line: bytes, sink: Sink) -> None:
        """`feed_line` for a line that the reader already tested with `ignores` and kept, so
        the source need not test it again. Same events, problems and skips as `feed_line`."""
        self.feed_line(path, lineno, line, sink)

    def read_whole(self, path: Path, sink: Sink) -> None:
        """A whole-file source, read from the start."""
        raise NotImplementedError(f"{type(self).__name__} reads no whole files")

    def flush(self, sink: Sink) -> None:  # noqa: B027 (optional hook, default: nothing)
        """Emit what the source holds back (e.g. the latest streaming snapshot of a call).

        Called after the last line of a file and after every batch a tailer hands over: a
        source may defer building an event until it knows no later line supersedes it.
        """

    def reset_file(self, path: Path) -> None:  # noqa: B027 (optional hook, default: nothing)
        """The file was truncated or replaced: forget per-file cursors (not dedupe keys)."""
