"""What an idle node-agent keeps resident: the daemon runs for months, mostly idle, beside the
agents it watches, so what its start-up left behind is handed back once the start is done.

- `limit_arenas`: glibc gives each thread that mallocs an arena of its own (up to 8 per core);
  the daemon's ~18 threads (6 of its own, the rest nng's) each kept a few hundred KB in theirs.
  One arena suffices: Python's threads allocate under the GIL anyway, and nng's rarely.
- `settle`: after the first read of every log and the backlog sent, empty the outboxes' page
  caches, free the start-up garbage, freeze what is left out of the cyclic collector's scans
  (fewer, shorter collections), and return the heap's free pages to the OS (`malloc_trim`).

Both do nothing where the C library has no such calls (musl, another OS).
"""

from __future__ import annotations

import ctypes
import gc
import logging
from typing import Final

from node_agent.outbox import Outbox

log = logging.getLogger(__name__)

M_ARENA_MAX: Final = -8  # glibc's mallopt parameter
ARENAS: Final = 1


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None)  # the process's own symbols: libc among them
    except OSError:
        return None


def limit_arenas(arenas: int = ARENAS) -> None:
    """Call before the threads start: an arena, once made, stays."""
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is not None:
        mallopt(M_ARENA_MAX, arenas)


def settle() -> int:
    """Free start-up garbage and give the free heap pages back; returns the objects frozen."""
    for outbox in Outbox.open_ones():
        outbox.shrink_memory()
    gc.collect()
    gc.freeze()
    libc = _libc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
    frozen = gc.get_freeze_count()
    log.debug("start-up settled: %d objects frozen, free heap returned", frozen)
    return frozen
