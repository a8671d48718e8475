"""A scan's file-system metadata read ahead by a second thread, when the disk is cold.

A repeat scan stats every file and folder its kept answer depends on (`scan_answer`), and a
full scan lists every folder below its paths before it reads anything. On a cold page cache
each of those is a wait for the disk (a directory's blocks, an inode's), taken one at a time:
~20-30 ms for a home of 600 transcripts in 200 folders. A second thread doing the same work
from the other end (the answer's dependencies) or while the scan loads its code (the folders of
a full scan) keeps more than one read in flight, and the main thread then finds them cached.

Advice only: the helper's results are thrown away (the scan stats and lists everything itself,
so nothing it does can change a figure), and it is started only when the main thread's first
steps show the disk being read; a warm scan would pay for the thread and its turns at the GIL
for nothing. Imports only what the interpreter has loaded at start-up: it runs before the rest
of a scan is loaded.
"""

from __future__ import annotations

import _thread
import os
import time

# Not `typing.TYPE_CHECKING`: typing and collections.abc are not loaded at start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Final

# A folder listed slower than this was read from the disk.
COLD_LISTING_NS: Final = 100_000
# How deep below a scanned path folders are listed ahead (a Claude home's projects/SLUG/SESSION/
# subagents, a Codex home's sessions/YYYY/MM/DD), and at most how many.
WALK_DEPTH: Final = 4
WALK_FOLDERS: Final = 20_000


class Helper:
    """A helper thread's work, which stops at its next step once told to."""

    def __init__(self) -> None:
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


def _start(work: Callable[[Helper], None]) -> Helper:
    helper = Helper()
    try:
        _thread.start_new_thread(work, (helper,))
    except RuntimeError:  # no thread to be had: the scan reads as it would have anyway
        helper.stopped = True
    return helper


def stat_behind(names: Sequence[str]) -> Helper:
    """Stat `names` from the last one back, in a helper thread: the main thread stats them
    from the first one on and meets what the helper has read."""

    def work(helper: Helper) -> None:
        for name in reversed(names):
            if helper.stopped:
                return
            try:  # noqa: SIM105 (contextlib is not loaded at start-up)
                os.stat(name)
            except (OSError, ValueError):
                pass

    return _start(work)


def walk_ahead(roots: Sequence[str]) -> Helper | None:
    """List the folders below `roots` (those that are folders) in a helper thread, to
    `WALK_DEPTH` levels and at most `WALK_FOLDERS` of them, when listing the first root shows a
    cold disk; None when it does not (or no root is a folder)."""
    for at, root in enumerate(roots):
        started = time.perf_counter_ns()
        found = _folders(root)
        if found is None:
            continue
        if time.perf_counter_ns() - started <= COLD_LISTING_NS:
            return None
        return _start(_walker([*found, *((later, 0) for later in roots[at + 1 :])]))
    return None


def _folders(folder: str, depth: int = 0) -> list[tuple[str, int]] | None:
    """The folders in `folder` (not links to folders), with their depth; None when it cannot
    be listed (not a folder, say)."""
    try:
        with os.scandir(folder) as entries:
            return [
                (entry.path, depth + 1) for entry in entries if entry.is_dir(follow_symlinks=False)
            ]
    except (OSError, ValueError):
        return None


def _walker(todo: list[tuple[str, int]]) -> Callable[[Helper], None]:
    """A helper's work: list the folders of `todo` (with their depth below a root) and those
    found in them."""

    def work(helper: Helper) -> None:
        listed = 0
        while todo and listed < WALK_FOLDERS and not helper.stopped:
            folder, depth = todo.pop()
            if depth <= WALK_DEPTH:
                todo.extend(_folders(folder, depth) or [])
                listed += 1

    return work
