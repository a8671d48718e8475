"""A kept answer's dependencies stat'ed ahead by a second thread, when the disk is cold.

A repeat scan stats every file and folder its kept answer depends on (`scan_answer`): ~900 for
a home of 600 transcripts in 200 folders. On a cold page cache each stat may wait for the disk
(a directory's blocks, an inode's), one at a time: ~25-30 ms. A second thread stat'ing them
from the last one back keeps a second read in flight, and the two meet half way (~15 ms).

Advice only: the helper's results are thrown away (the check stats everything itself, so
nothing the helper does can change what is served), and it is started only when the first
stats show the disk being read (`scan_answer`): a warm check would pay for the thread and its
turns at the GIL for nothing. Imports only what the interpreter has loaded at start-up.

(Tried: the same for the folders a full scan lists, while it loads its code. On this machine
the disk served the two threads' reads no faster than one's: the listing took ~18 ms less and
the imports ~18 ms more.)
"""

from __future__ import annotations

import _thread
import os

# Not `typing.TYPE_CHECKING`: typing and collections.abc are not loaded at start-up.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence


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
