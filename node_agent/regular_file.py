"""Reading the scan's own cache files whole, safely: a pipe or a device put in a file's place
must neither block the scan nor fill its memory."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmap import mmap


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file at `path`; OSError (EINVAL) for anything else, and
    FileNotFoundError when there is none."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def map_regular(path: Path) -> bytes | mmap:
    """`read_regular`, the file mapped read-only where the system maps files (POSIX) instead of
    copied: a reader that keeps views into it (the scan index's readings) spares the copy of
    the whole file, and the faults of fresh memory for it (~2.8 ms of a scan for the 6.5 MB
    index of 200 MB of transcripts). Only for files replaced whole by a rename, never cut
    short in place: a truncation would take mapped pages from under the reader (SIGBUS)."""
    if os.name != "posix":  # (Windows would refuse to replace a file mapped)
        return read_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        import mmap  # here: only the scan index is mapped

        try:
            return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty (nothing to map), or a file system that can't
            with os.fdopen(fd, "rb", closefd=False) as fh:
                return fh.read()
    finally:
        os.close(fd)
