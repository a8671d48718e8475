"""Reading a program's own cache files whole, safely: a pipe or a device put in a file's place
must neither block the reader nor fill its memory, and a file of another user's is not read
(the scan's caches hold pickles and marshalled answers: one another user could write, in a
shared cache folder or a user's cache read by root, would run their code or print their
figures). Imports nothing but the interpreter's own start-up modules: a scan's kept answer is
read with it before anything else loads."""

from __future__ import annotations

import errno
import os
import stat

TYPE_CHECKING = False  # (not typing's: it is not loaded at a scan's start-up)
if TYPE_CHECKING:
    from os import PathLike


def read_regular(path: str | PathLike[str]) -> bytes:
    """The bytes of the regular file at `path`; OSError (EINVAL) for anything else, EPERM
    for a file of another user's, and FileNotFoundError when there is none."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise OSError(errno.EPERM, "owned by another user")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)
