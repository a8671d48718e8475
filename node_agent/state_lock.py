"""One daemon per state dir: two `node-agent run` on one config would both read the logs into
one outbox and both answer the hub's commands.

An exclusive `flock` on `<state_dir>/node.lock`, held for the daemon's life; the kernel drops it
when the process dies (kill -9 included), so a stale lock cannot outlive its holder. The file
names the holder's pid, for the error the second daemon prints.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

LOCK_NAME: Final = "node.lock"


class StateDirBusy(Exception):
    """Another process holds the state dir."""

    def __init__(self, state_dir: Path, holder: int | None) -> None:
        who = f"pid {holder}" if holder is not None else "another process"
        super().__init__(
            f"{state_dir} is in use by {who} (another `node-agent run` on this config); "
            "stop it first, or give this node its own state_dir"
        )
        self.holder = holder


class StateDirUnusable(Exception):
    """The state dir cannot be made or written (a file in its place, a read-only place)."""

    def __init__(self, state_dir: Path, exc: OSError) -> None:
        # mkdir says "File exists" when a file is in the way
        why = "not a directory" if isinstance(exc, FileExistsError) else exc.strerror or exc
        super().__init__(
            f"cannot use state_dir {state_dir}: {why}"
            + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(state_dir) else "")
            + "; set state_dir in the node config to a directory this user can write"
        )


@contextmanager
def state_dir_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state dir's lock inside the block; raises StateDirBusy when another process
    holds it, StateDirUnusable when there is no writable directory there."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StateDirUnusable(state_dir, exc) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateDirBusy(state_dir, _read_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (unlinking it would race)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
