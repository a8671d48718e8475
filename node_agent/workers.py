"""The start method for worker processes (parallel scan, corpus generation).

fork is fastest (a scan's workers start with the price tables already loaded), but nng panics
("nng is not fork-reentrant safe") in a forked child of a process that has used it, as soon as
the child touches an inherited socket (a finaliser is enough). So a process that has loaded
pynng (the daemon, the hub, a test session) starts its workers with forkserver instead.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext


def worker_context() -> BaseContext:
    import multiprocessing  # here: a small scan runs in process and never needs it

    if "pynng" in sys.modules:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("fork")
