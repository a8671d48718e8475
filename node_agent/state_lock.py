"""One daemon per state dir: two `node-agent run` on one config would both read the logs into
one outbox and both answer the hub's commands.

An exclusive `flock` on `<state_dir>/node.lock`, held for the daemon's life; the kernel drops it
when the process dies (kill -9 included), so a stale lock cannot outlive its holder. The file
names the holder's pid, for the error the second daemon prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType
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


class StateDirLock:
    """Context manager; raises StateDirBusy on entry when another process holds the lock."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> StateDirLock:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateDirBusy(self.state_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock; the file stays (unlinking it would race)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None
