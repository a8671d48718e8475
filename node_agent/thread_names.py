"""OS-level names for the daemon's threads, so that `top -H`, `ps -L` and the idle bench can
tell them apart: Python 3.11 names its threads only for itself, and the kernel sees every one of
them as the program's name."""

from __future__ import annotations

import threading
from collections.abc import Callable

COMM_MAX = 15  # the kernel keeps 15 bytes of a thread's name


def name_os_thread(name: str) -> None:
    """Name the calling thread in /proc (its `comm`); silently nothing where that is refused."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as fh:
            fh.write(name[:COMM_MAX])
    except OSError:  # another OS, or a /proc mounted read-only: only the name is lost
        pass


def named(name: str, target: Callable[[], None]) -> Callable[[], None]:
    """`target`, run under the OS thread name `name`."""

    def run() -> None:
        name_os_thread(name)
        target()

    return run
