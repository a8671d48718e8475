"""Continuous reading of every watched home into the outbox: the daemon's ingest loop.

One source instance per agent holds the dedupe state of every home of that agent (as in a
scan). Append-only files are followed by a `Tailer` each; whole files (an OpenCode database, a
Cursor CSV, a legacy Gemini chat, a compressed Codex rollout) are read again when their
signature (inode, size, mtime; for SQLite also the `-wal` file's) changes.

The events read and the positions they were read up to go into the outbox in one transaction
(`Outbox.commit`), so a crash loses nothing and repeats nothing. After a restart, each file
whose saved position still matches is *primed*: its lines up to the saved offset are fed to
the source again with the output dropped, so cross-file dedupe state (Claude's streaming
snapshots and sidechain replays, Codex's cumulative totals) is as it was; reading then goes on
from the offset. A whole file whose signature is unchanged is primed the same way; a changed
one is read again in full (the hub keeps one row per event id, so a repeat adds nothing).

Cadence: `poll()` reads the hot files (written to in the last `HOT_SECONDS`); `rescan()` finds
new files, polls every file and releases the descriptors of files idle for `IDLE_CLOSE_SECONDS`;
`read_paths()` reads the files that file events name at once (`file_events`).
When the outbox is full, reading stops (positions stay where they are) until the hub has
acknowledged enough: nothing is dropped. When the disk is full, the same, and reading tries
again after a wait that doubles each time (`recovery.Backoff`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import msgpack
import msgspec

from node_agent.outbox import Outbox, OutboxDiskFull, OutboxFull
from node_agent.recovery import Backoff
from node_agent.scan import Target, resolve_targets
from node_agent.sources.base import FileKind, ParseProblem, Source, SourceFile
from node_agent.sources.registry import all_sources
from node_agent.tailer import (
    CorruptStreamError,
    Tailer,
    TailState,
    is_json,
    iter_head_lines,
    iter_zst_lines,
    still_describes,
)
from shared.config import NodeConfig, Profile
from shared.events import Agent, Event, LimitEvent, UsageEvent

log = logging.getLogger(__name__)

COMMIT_EVENTS: Final = 2000  # events per outbox transaction at most (plus one file's worth)
HOT_SECONDS: Final = 120.0  # a file written to this recently is polled every tick
IDLE_CLOSE_SECONDS: Final = 600.0  # release the fd of a file quiet for this long

# Who an event belongs to when its directory does not say: (agent, home, ts) -> profile name.
ProfileAt = Callable[[Agent, Path, float], str | None]


class _Buffer:
    """A Sink that keeps what one read produced, until it is committed."""

    def __init__(self) -> None:
        self.events: list[UsageEvent | LimitEvent] = []
        self.problems: list[ParseProblem] = []
        self.skipped: Counter[str] = Counter()

    def usage(self, event: UsageEvent) -> None:
        self.events.append(event)

    def limit(self, event: LimitEvent) -> None:
        self.events.append(event)

    def problem(self, problem: ParseProblem) -> None:
        self.problems.append(problem)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1


class _Discard:
    """A Sink for priming: the source's state is rebuilt, its output was already committed."""

    def __init__(self, keep_ids: dict[str, int] | None = None) -> None:
        self.keep_ids = keep_ids

    def usage(self, event: UsageEvent) -> None:
        if self.keep_ids is not None:
            self.keep_ids[event.event_id] = max(
                event.revision, self.keep_ids.get(event.event_id, -1)
            )

    def limit(self, event: LimitEvent) -> None:
        if self.keep_ids is not None:
            self.keep_ids.setdefault(event.event_id, 0)

    def problem(self, problem: ParseProblem) -> None:
        pass

    def skip(self, reason: str) -> None:
        pass


@dataclass(slots=True)
class _Watched:
    """One file being followed."""

    file: SourceFile
    target: Target
    source: Source
    tailer: Tailer | None = None  # for plain JSONL
    signature: tuple[int, ...] | None = None  # for whole files: what was last read
    emitted: dict[str, int] = field(default_factory=dict)  # whole files: id -> revision sent
    last_change: float = 0.0  # monotonic time the file last gave lines or changed

    @property
    def key(self) -> str:
        return str(self.file.path)


@dataclass(slots=True)
class LiveStats:
    files: int = 0
    events: int = 0  # committed to the outbox since start
    problems: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    blocked: bool = False  # the outbox is full: reading waits for acknowledgements
    last_problem: str | None = None
    stalled: str | None = None  # the disk is full: reading waits and retries


def whole_signature(path: Path) -> tuple[int, ...] | None:
    """What tells that a whole file changed: its identity, size and mtime, and its WAL's."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    sig = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]
    try:
        wal = os.stat(f"{path}-wal")
        sig += [wal.st_size, wal.st_mtime_ns]
    except OSError:
        pass
    return tuple(sig)


def watched_targets(
    config: NodeConfig, sources: Sequence[Source]
) -> tuple[list[Target], list[ParseProblem]]:
    """The configured profiles' homes; with none configured, each agent's default home."""
    if config.profiles:
        return [Target(p.home, p.agent, p) for p in config.profiles], []
    return resolve_targets([], config, sources)


class LiveReader:
    """Follows the configured profiles' homes (and the agents' default homes) into an outbox."""

    def __init__(
        self,
        config: NodeConfig,
        outbox: Outbox,
        *,
        sources: Sequence[Source] | None = None,
        profile_at: ProfileAt | None = None,
        on_events: Callable[[Sequence[Event]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.sources = list(sources) if sources is not None else all_sources()
        self.profile_at = profile_at
        self.on_events = on_events  # told about every committed event (profile timelines)
        self.clock = clock
        self.stats = LiveStats()
        self._by_agent = {s.agent: s for s in self.sources}
        self._accounts = {p.name: p.account for p in config.profiles}
        self._files: dict[str, _Watched] = {}
        self._saved: dict[str, bytes] = {}
        self._targets: list[Target] = []
        self._logged: set[tuple[str, str]] = set()
        self.disk = Backoff()  # waits while the disk is full
        # Commit in slices well below the outbox's bound, so a full outbox stops reading early.
        self._commit_every = max(1, min(COMMIT_EVENTS, outbox.max_events // 10))

    # -- the two cadences --------------------------------------------------------------------

    def start(self) -> int:
        """Load saved positions, find every file, prime it and read what is new. Returns events."""
        self._saved = self.outbox.positions()
        return self.rescan()

    def rescan(self) -> int:
        """Find new files (and homes that appeared), then read every file."""
        self._targets, problems = watched_targets(self.config, self.sources)
        for problem in problems:
            self._log_problem(problem)
        found: list[_Watched] = []
        for target in self._targets:
            source = self._by_agent[target.agent]
            try:
                files = source.discover(target.path)
            except OSError as exc:
                self._log_problem(ParseProblem(str(target.path), 0, f"cannot list: {exc}"))
                continue
            for file in files:
                if str(file.path) not in self._files:
                    found.append(_Watched(file, target, source))
        for watched in sorted(found, key=lambda w: (w.file.order, w.key)):
            self._files[watched.key] = watched
            self._prime(watched)
        self.stats.files = len(self._files)
        now = self.clock()
        count = self._read(self._ordered(self._files.values()))
        for watched in self._files.values():
            if (
                watched.tailer is not None
                and watched.tailer.is_open
                and now - watched.last_change > IDLE_CLOSE_SECONDS
            ):
                watched.tailer.close()
        return count

    def poll(self) -> int:
        """Read the files written to recently. Returns the number of events committed."""
        now = self.clock()
        hot = [w for w in self._files.values() if now - w.last_change <= HOT_SECONDS]
        return self._read(self._ordered(hot))

    def read_paths(self, paths: Iterable[str]) -> int:
        """Read now the followed files among `paths` (file events said they were written to)."""
        found: dict[str, _Watched] = {}
        for path in paths:
            # A SQLite store is written through its journal: the event names that file.
            base = path.removesuffix("-wal").removesuffix("-journal").removesuffix("-shm")
            watched = self._files.get(path) or self._files.get(base)
            if watched is not None:
                found[watched.key] = watched
        return self._read(self._ordered(found.values())) if found else 0

    def read_in(self, dirs: set[str]) -> int:
        """Read now the followed files directly in `dirs` (just watched: what was written there
        before the watch started gave no event)."""
        return self.read_paths(
            w.key for w in self._files.values() if w.key.rpartition(os.sep)[0] in dirs
        )

    def watched_dirs(self) -> set[str]:
        """The folders whose changes concern the reader: the homes, and every folder from a
        followed file up to its home (a new session or project folder appears in one)."""
        dirs = {str(t.path) for t in self._targets if t.path.is_dir()}
        for watched in self._files.values():
            home, folder = watched.target.path, watched.file.path.parent
            while str(folder) not in dirs and folder != folder.parent:
                dirs.add(str(folder))
                if folder == home or not folder.is_relative_to(home):
                    break
                folder = folder.parent
        return dirs

    @staticmethod
    def _ordered(files: Iterable[_Watched]) -> list[_Watched]:
        return sorted(files, key=lambda w: (w.file.order, w.key))

    # -- reading -----------------------------------------------------------------------------

    def _read(self, files: Sequence[_Watched]) -> int:
        """Read `files` and commit their events with their positions, a batch at a time."""
        if self.outbox.is_full:
            self.stats.blocked = True
            return 0
        if self.disk.waiting(self.clock()):
            return 0
        committed = 0
        events: list[Event] = []
        positions: dict[str, bytes | None] = {}
        for watched in files:
            buffer = _Buffer()
            position = self._read_one(watched, buffer)
            if position is None:
                continue
            events.extend(self._attribute(watched, e) for e in buffer.events)
            positions[watched.key] = position
            self._account(buffer)
            if len(events) >= self._commit_every:
                if not self._commit(events, positions):
                    return committed
                committed += len(events)
                events, positions = [], {}
        if positions and self._commit(events, positions):
            committed += len(events)
        return committed

    def _commit(self, events: list[Event], positions: dict[str, bytes | None]) -> bool:
        try:
            self.outbox.commit(events, positions)
        except OutboxFull as exc:
            # Nothing was committed: forget what this read did in memory, so the same lines
            # are read again (from the saved positions) once the hub has caught up.
            if not self.stats.blocked:
                log.warning("%s; reading pauses until the hub acknowledges", exc)
            self.stats.blocked = True
            self._restart_from_saved()
            return False
        except OutboxDiskFull as exc:
            wait = self.disk.failed(str(exc), self.clock())
            if self.disk.failures == 1:
                log.warning("%s; reading waits and tries again (next in %.0f s)", exc, wait)
            self.stats.stalled = f"{exc}; retrying every {self.disk.longest:.0f} s at most"
            self._restart_from_saved()  # nothing was committed, as for a full outbox
            return False
        if self.disk.failures:
            log.info("room on the disk again after %d tries; reading goes on", self.disk.failures)
            self.disk.succeeded()
            self.stats.stalled = None
        self.stats.blocked = False
        self.stats.events += len(events)
        for key, value in positions.items():
            if value is None:
                self._saved.pop(key, None)
            else:
                self._saved[key] = value
        if self.on_events is not None and events:
            self.on_events(events)
        return True

    def _restart_from_saved(self) -> None:
        """Forget in-memory progress past the saved positions. Sources hold state that cannot
        be unwound line by line, so they start fresh and every file is primed again at the
        next rescan: the exact way back to what the outbox holds."""
        for watched in self._files.values():
            if watched.tailer is not None:
                watched.tailer.close()
        self._files.clear()
        self.sources = [type(source)() for source in self.sources]
        self._by_agent = {source.agent: source for source in self.sources}

    def _read_one(self, watched: _Watched, sink: _Buffer) -> bytes | None:
        """New output of one file into `sink`; returns its new position, None if unchanged."""
        if watched.file.kind is FileKind.JSONL:
            return self._read_tail(watched, sink)
        return self._read_whole(watched, sink)

    def _read_tail(self, watched: _Watched, sink: _Buffer) -> bytes | None:
        tailer = watched.tailer
        assert tailer is not None
        before = tailer.state
        lines: list[tuple[int, bytes]] = []
        try:
            while True:
                batch = tailer.poll()
                if tailer.reset:
                    watched.source.reset_file(watched.file.path)
                lines.extend(batch)
                for lineno, line in batch:
                    watched.source.feed_line(watched.file.path, lineno, line, sink)
                if not tailer.more:
                    break
            tail = tailer.tail_line()
            if tail is not None and is_json(tail[1]):
                # A complete last line without its newline: a file at rest may end so (the
                # Codex writer adds it only before its next append), and a scan counts it.
                tailer.take_tail()
                lines.append(tail)
                watched.source.feed_line(watched.file.path, *tail, sink)
        except OSError as exc:
            self._log_problem(ParseProblem(watched.key, 0, f"cannot read: {exc}"))
        watched.source.flush(sink)
        after = tailer.state
        if not lines and after == before:
            return None
        watched.last_change = self.clock()
        return _pack_state(after)

    def _read_whole(self, watched: _Watched, sink: _Buffer) -> bytes | None:
        signature = whole_signature(watched.file.path)
        if signature is None or signature == watched.signature:
            return None
        produced = _Buffer()
        self._feed_whole(watched, produced)
        for event in produced.events:
            revision = event.revision if isinstance(event, UsageEvent) else 0
            if watched.emitted.get(event.event_id, -1) >= revision:
                continue
            watched.emitted[event.event_id] = revision
            sink.events.append(event)
        sink.problems.extend(produced.problems)
        sink.skipped.update(produced.skipped)
        watched.signature = signature
        watched.last_change = self.clock()
        return msgpack.packb(list(signature))  # type: ignore[no-any-return]

    def _feed_whole(self, watched: _Watched, sink: _Buffer | _Discard) -> None:
        source, path = watched.source, watched.file.path
        if watched.file.kind is FileKind.WHOLE:
            source.reset_file(path)
            source.read_whole(path, sink)
        else:  # a compressed rollout: finished, read as a whole
            try:
                for lineno, line in iter_zst_lines(path):
                    source.feed_line(path, lineno, line, sink)
            except (OSError, CorruptStreamError) as exc:
                sink.problem(ParseProblem(str(path), 0, f"cannot read further: {exc}"))
        source.flush(sink)

    # -- restart -----------------------------------------------------------------------------

    def _prime(self, watched: _Watched) -> None:
        """Rebuild the source's state for what was committed before; set up the reader."""
        saved = self._saved.get(watched.key)
        watched.last_change = self.clock()
        if watched.file.kind is FileKind.JSONL:
            state = _unpack_state(saved, watched.key) if saved is not None else None
            tailer = Tailer(watched.file.path, state)
            watched.tailer = tailer
            if state is not None and state.offset > 0 and still_describes(state):
                _prime_lines(watched.source, watched.file.path, state.offset)
            return
        if saved is None:
            return
        try:
            signature = tuple(msgpack.unpackb(saved))
        except (ValueError, TypeError, msgpack.UnpackException):
            return
        if signature == whole_signature(watched.file.path):
            self._feed_whole(watched, _Discard(watched.emitted))
            watched.signature = signature

    # -- attribution and bookkeeping ---------------------------------------------------------

    def _attribute(self, watched: _Watched, event: UsageEvent | LimitEvent) -> Event:
        """Stamp machine, profile and account. Where several profiles share one home (one
        config dir, several logins), the timeline tells which was in use at the event's time."""
        profile: Profile | None = watched.target.profile
        name = profile.name if profile is not None else None
        if self.profile_at is not None:
            name = self.profile_at(watched.target.agent, watched.target.path, event.ts) or name
        return msgspec.structs.replace(
            event, machine=self.config.node, profile=name, account=self._account_of(name)
        )

    def _account_of(self, name: str | None) -> str | None:
        return self._accounts.get(name) if name is not None else None

    def _account(self, buffer: _Buffer) -> None:
        self.stats.skipped.update(buffer.skipped)
        for problem in buffer.problems:
            self.stats.problems += 1
            self.stats.last_problem = str(problem)
            self._log_problem(problem)

    def _log_problem(self, problem: ParseProblem) -> None:
        # Once per file and reason: a file with a thousand torn lines is one log line.
        key = (problem.path, problem.reason)
        if key not in self._logged and len(self._logged) < 10_000:
            self._logged.add(key)
            log.warning("%s", problem)


def _pack_state(state: TailState) -> bytes:
    return msgpack.packb(state.to_dict())  # type: ignore[no-any-return]


def _unpack_state(data: bytes, key: str) -> TailState | None:
    try:
        state = TailState.from_dict(msgpack.unpackb(data))
    except (ValueError, TypeError, KeyError, msgpack.UnpackException):
        log.warning("%s: saved position unreadable; reading the file again from the start", key)
        return None
    return state if state.path == key else None


def _prime_lines(source: Source, path: Path, offset: int) -> None:
    """Feed the lines of `path` below `offset` to `source`, dropping the output."""
    sink = _Discard()
    try:
        for lineno, line in iter_head_lines(path, offset):
            source.feed_line(path, lineno, line, sink)
    except OSError as exc:
        log.warning("%s: cannot prime from saved position: %s", path, exc)
    source.flush(sink)
