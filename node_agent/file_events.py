"""File events (Linux inotify, through inotify_simple) that wake the daemon's reader as soon as a
watched log is written, instead of at its next poll.

The watches are on directories: the folders holding the followed files and those between them
and their home, so a new session file or project folder is seen as well. An event names a file
written to (read it now), or tells that something appeared, moved or was lost (look for files
again: `rescan`). The kernel's queue overflowing says events were dropped: rescan too. Where
inotify cannot be used (another OS, no watches left) `open()` gives None and the reader polls.

`interrupt()` (from another thread) ends a `wait` at once: the reader can then wait for events
until its next poll is due, not wake every half second to look whether it should stop.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from inotify_simple import INotify

log = logging.getLogger(__name__)

# After the first event of a burst, wait this long for the rest (one read for one write).
GATHER_MS: Final = 2


@dataclass(slots=True)
class Changes:
    written: set[str] = field(default_factory=set)  # paths of files written to
    rescan: bool = False  # files may have appeared or gone: look again


class FileEvents:
    def __init__(self, inotify: INotify) -> None:
        from inotify_simple import flags

        self._inotify = inotify
        self._flags = flags
        self._mask = (
            flags.MODIFY
            | flags.CLOSE_WRITE
            | flags.CREATE
            | flags.MOVED_TO
            | flags.MOVED_FROM
            | flags.DELETE
            | flags.DELETE_SELF
            | flags.MOVE_SELF
        )
        self._appeared = flags.CREATE | flags.MOVED_TO | flags.MOVED_FROM | flags.DELETE
        self._dirs: dict[int, str] = {}  # watch descriptor -> directory
        self._watched: set[str] = set()
        self._refused: set[str] = set()
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._closing = threading.Lock()
        self._closed = False
        self._poller = select.poll()
        self._poller.register(inotify.fileno(), select.POLLIN)
        self._poller.register(self._wake_read, select.POLLIN)

    @classmethod
    def open(cls) -> FileEvents | None:
        try:
            from inotify_simple import INotify

            return cls(INotify())
        except (ImportError, OSError, AttributeError) as exc:
            log.info("no file events (%s): the reader polls", exc)
            return None

    def watch(self, directories: Iterable[str]) -> set[str]:
        """Watch these directories too (those already watched are left as they are); returns
        the ones newly watched (what was written there before is the caller's to read)."""
        added: set[str] = set()
        for directory in directories:
            if directory in self._watched or directory in self._refused:
                continue
            try:
                wd = self._inotify.add_watch(directory, self._mask)
            except OSError as exc:
                # Out of watches, or the folder went: polling still covers it.
                self._refused.add(directory)
                log.warning("cannot watch %s for changes (%s): it is polled", directory, exc)
                continue
            self._dirs[wd] = directory
            self._watched.add(directory)
            added.add(directory)
        return added

    def interrupt(self) -> None:
        """End the current (or the next) `wait` now; safe from any thread."""
        with self._closing:  # never a write to a closed fd (its number may be reused)
            if self._closed:
                return
            with contextlib.suppress(BlockingIOError):  # full: a wake-up is pending anyway
                os.write(self._wake_write, b"x")

    def wait(self, timeout: float) -> Changes:
        """What changed, as soon as something did, after `timeout` seconds, or when
        interrupted (nothing)."""
        changes = Changes()
        flags = self._flags
        ready = {fd for fd, _ in self._poller.poll(max(0, math.ceil(timeout * 1000)))}
        if self._wake_read in ready:
            while True:
                try:
                    if not os.read(self._wake_read, 4096):
                        break
                except BlockingIOError:
                    break
        if self._inotify.fileno() not in ready:
            return changes
        time.sleep(GATHER_MS / 1000)  # the rest of the burst: one read for one write
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                changes.rescan = True  # events were dropped
                continue
            directory = self._dirs.get(event.wd)
            if event.mask & flags.IGNORED:
                # The folder was removed or moved: forget it; a rescan watches what is there.
                if directory is not None:
                    del self._dirs[event.wd]
                    self._watched.discard(directory)
                changes.rescan = True
                continue
            if directory is None:
                continue
            if event.mask & (self._appeared | flags.DELETE_SELF | flags.MOVE_SELF):
                changes.rescan = True
            if event.name:
                changes.written.add(os.path.join(directory, event.name))
        return changes

    def close(self) -> None:
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._inotify.close()
            os.close(self._wake_read)
            os.close(self._wake_write)
