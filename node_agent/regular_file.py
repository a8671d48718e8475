"""Reading the scan's own cache files whole, safely: a pipe or a device put in a file's place
must neither block the scan nor fill its memory, and a file of another user's is not read."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def read_regular(path: Path) -> bytes:
    """The bytes of the regular file at `path`; OSError (EINVAL) for anything else, EPERM
    for a file of another user's, and FileNotFoundError when there is none."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            # Its priced reports are pickles: one another user could write (a shared cache
            # folder, a scan run by root in a user's) would run their code in this process.
            raise OSError(errno.EPERM, "owned by another user")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)
