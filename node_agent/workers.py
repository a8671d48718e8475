"""Worker processes: the start method (parallel scan, corpus generation), and `share`, which
spreads a list of work over this process and forked helpers.

fork is fastest (a scan's workers start with the price tables already loaded), but nng panics
("nng is not fork-reentrant safe") in a forked child of a process that has used it, as soon as
the child touches an inherited socket (a finaliser is enough). So a process that has loaded
pynng (the daemon, the hub, a test session) starts its workers with forkserver instead.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import BaseContext

In = TypeVar("In")
Out = TypeVar("Out")

_INDEX_BYTES = 4
# How long this process waits for the claims' lock before it checks that no helper died.
_PATIENCE = 1.0


def worker_context() -> BaseContext:
    import multiprocessing  # here: a small scan runs in process and never needs it

    if "pynng" in sys.modules:
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("fork")


def can_share() -> bool:
    """Whether `share` may fork here (see the module doc)."""
    return worker_context().get_start_method() == "fork"


class _Claims:
    """The next items to take, shared by the processes: a few at a time, so that the work
    spreads evenly to the end whatever each item costs."""

    def __init__(self, context: BaseContext, count: int, chunk: int) -> None:
        self._next = context.RawValue("q", 0)
        self._lock = context.Lock()
        self._count = count
        self._chunk = chunk

    def take(self, timeout: float | None = None) -> range | None:
        """The next items (empty when all are taken); None when the lock could not be had in
        `timeout` seconds (a helper killed while holding it never lets it go)."""
        if not self._lock.acquire(timeout=timeout):
            return None
        try:
            start = self._next.value
            stop = min(self._count, start + self._chunk)
            self._next.value = stop
        finally:
            self._lock.release()
        return range(start, stop)


def share(
    here: Callable[[In], Out],
    there: Callable[[In], bytes],
    work: Sequence[In],
    helpers: int,
    started: Callable[[], object] = lambda: None,
    chunk: int = 4,
) -> list[Out | bytes]:
    """`here(item)` or `there(item)` of each item, in the order of `work`: this process and
    `helpers` forked processes take items in turn; a helper's results (`there`, bytes) come
    back through a pipe. The helpers inherit `work` and the functions (nothing is pickled),
    so call this only where `can_share()`. Items a helper took and did not send back (it
    died) are done here at the end: a lost helper costs time, never results. `started` runs
    once the helpers are forked (a thread started before a fork is not in the child)."""
    context = worker_context()
    claims = _Claims(context, len(work), chunk)
    got: dict[int, Out | bytes] = {}
    processes, pipes = [], []
    for _ in range(helpers):
        receive, send = context.Pipe(duplex=False)
        process = context.Process(  # type: ignore[attr-defined]
            target=_help, args=(there, work, claims, send), daemon=True
        )
        process.start()
        send.close()  # the helper's own copy is the pipe's only writer: its end is our EOF
        processes.append(process)
        pipes.append(receive)
    # Each pipe is drained while this process works, so that no helper waits on a full pipe;
    # the threads start after the last fork (a fork takes only the thread that makes it).
    threads = [
        threading.Thread(target=_Reader(receive, got).run, name="share-reader", daemon=True)
        for receive in pipes
    ]
    for thread in threads:
        thread.start()
    started()
    while True:
        taken = claims.take(timeout=_PATIENCE)
        if taken is None:
            if all(process.is_alive() for process in processes):
                continue  # only slow: this machine is busy
            # A helper died, maybe holding the lock: stop sharing, do the rest here.
            for process in processes:
                process.kill()
            break
        if not taken:
            break
        for index in taken:
            got[index] = here(work[index])
    for thread in threads:
        thread.join()
    for process in processes:
        process.join()
    return [got[index] if index in got else here(work[index]) for index in range(len(work))]


class _Reader:
    """Takes a helper's results off its pipe as they come."""

    def __init__(self, receive: Connection, got: dict[int, Any]) -> None:
        self._receive = receive
        self._got = got

    def run(self) -> None:
        try:
            while True:
                message = self._receive.recv_bytes()
                index = int.from_bytes(message[:_INDEX_BYTES], "little")
                self._got[index] = message[_INDEX_BYTES:]
        except (EOFError, OSError):
            pass  # the helper is done (or gone: its items are redone)
        finally:
            self._receive.close()


def _help(there: Callable[[In], bytes], work: Sequence[In], claims: _Claims, send: Any) -> None:
    try:
        while taken := claims.take():  # never None: no timeout
            for index in taken:
                send.send_bytes(index.to_bytes(_INDEX_BYTES, "little") + there(work[index]))
    finally:
        send.close()
