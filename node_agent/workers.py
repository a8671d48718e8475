"""Worker processes: the start method (parallel scan, corpus generation), and `share`, which
spreads a list of work over this process and forked helpers.

fork is fastest (a scan's workers start with the price tables already loaded), but nng panics
("nng is not fork-reentrant safe") in a forked child of a process that has used it, as soon as
the child touches an inherited socket (a finaliser is enough). So a process that has loaded
pynng (the daemon, the hub, a test session) starts its workers with forkserver instead.
"""

from __future__ import annotations

import os
import struct
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from functools import partial
from typing import TYPE_CHECKING, BinaryIO, TypeVar

if TYPE_CHECKING:
    from multiprocessing.context import BaseContext

In = TypeVar("In")
Out = TypeVar("Out")


def worker_context() -> BaseContext:
    import multiprocessing  # here: a small scan runs in process and never needs it

    return multiprocessing.get_context("fork" if can_share() else "forkserver")


def can_share() -> bool:
    """Whether this process may fork (see the module doc), and so `share`. Told without
    importing multiprocessing, which `share` does not use (~10 ms of a scan's start)."""
    return hasattr(os, "fork") and "pynng" not in sys.modules


class _Claims:
    """The next items to take, shared by the processes: a few at a time, so that the work
    spreads evenly to the end whatever each item costs. The next index is kept in an unnamed
    file under a POSIX record lock (`lockf`): the kernel lets go of it when its holder dies,
    so a helper killed while taking items never stalls the others, and none of
    multiprocessing's shared values and semaphores need loading."""

    def __init__(self, count: int, chunk: int) -> None:
        import fcntl  # here: there is none where there is no fork (Windows), nor `share`

        self._lockf = fcntl.lockf
        self._exclusive, self._unlocked = fcntl.LOCK_EX, fcntl.LOCK_UN
        self._file = _unnamed_file()
        self._fd = self._file.fileno()
        self._count = count
        self._chunk = chunk
        os.pwrite(self._fd, _NEXT.pack(0), 0)

    def take(self) -> range:
        """The next items (empty when all are taken)."""
        fd = self._fd
        self._lockf(fd, self._exclusive)
        try:
            (start,) = _NEXT.unpack(os.pread(fd, _NEXT.size, 0))
            stop = min(self._count, start + self._chunk)
            os.pwrite(fd, _NEXT.pack(stop), 0)
        finally:
            self._lockf(fd, self._unlocked)
        return range(start, stop)

    def close(self) -> None:
        self._file.close()


_NEXT = struct.Struct("<q")


def share(
    here: Callable[[In], Out],
    there: Callable[[In], bytes],
    back: Callable[[memoryview], Out],
    work: Sequence[In],
    helpers: int,
    started: Callable[[], object] = lambda: None,
    chunk: int = 4,
) -> list[Out]:
    """`here(item)`, or `back(there(item))`, of each item, in the order of `work`: this
    process and `helpers` forked processes take items in turn.

    A helper inherits `work` and the functions (nothing is pickled: call this only where
    `can_share()`), and writes its results (`there`, bytes) to a file of its own, unnamed, that
    this process reads once the helper is done: a helper never waits for this one (through a
    pipe it would wait on every result for this process's thread to get the GIL). Items a
    helper took and did not write whole (it died) are done here at the end: a lost helper
    costs time, never results. `started` runs once the helpers are forked (a thread started
    before a fork is not in the child)."""
    got: dict[int, Out] = {}
    with ExitStack() as stack:
        claims = _Claims(len(work), chunk)
        stack.callback(claims.close)
        outputs = [stack.enter_context(_unnamed_file()) for _ in range(helpers)]
        forked: list[_Helper] = []
        stack.callback(_stop_all, forked)  # (an error here: none is left running)
        for output in outputs:
            try:
                forked.append(_Helper(partial(_help, there, work, claims, output.fileno())))
            except OSError:  # no process to be had (a limit on them): fewer helpers, or none
                break
        results = [_Results(output.fileno()) for output in outputs[: len(forked)]]
        started()
        while taken := claims.take():
            for index in taken:
                got[index] = here(work[index])
            # The helpers' results so far, taken back between items: the helpers read more
            # meanwhile, and less is left to take back once they are done.
            for found in results:
                found.collect(got, back)
        for helper, found in zip(forked, results, strict=True):
            helper.join()
            found.collect(got, back)
    return [got[index] if index in got else here(work[index]) for index in range(len(work))]


class _Helper:
    """A forked process that runs `task` and exits, as multiprocessing's fork start method
    would run it, without loading multiprocessing (~10 ms of a scan's start)."""

    def __init__(self, task: Callable[[], object]) -> None:
        for stream in (sys.stdout, sys.stderr):
            # Else the child could write the parent's buffer again. A stream that is None,
            # closed or broken is the parent's to tell of, at its own writes.
            with suppress(AttributeError, OSError, ValueError):
                stream.flush()
        import signal  # here: only where helpers are forked (its enums cost ~0.4 ms)

        # Ctrl-C reaches the whole process group, helpers too, and the parent alone answers
        # it (it kills its helpers and says it was interrupted). SIGINT stays blocked in the
        # child from before the fork, so it cannot land in the child's after-fork hooks
        # (random's reseed), which printed an 'Exception ignored ... KeyboardInterrupt'.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            self._pid: int | None = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            raise
        if self._pid == 0:
            code = 1
            try:
                task()
                code = 0
            except BaseException as exc:  # noqa: BLE001 (its items are done again by the parent)
                _say_failed(exc)
            finally:
                os._exit(code)  # nothing of the parent's (atexit, buffers) runs twice
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # (a Ctrl-C meanwhile: here)
        except BaseException:
            self.stop()  # not yet the caller's to stop
            raise

    def join(self) -> None:
        if self._pid is not None:
            os.waitpid(self._pid, 0)
            self._pid = None

    def stop(self) -> None:
        """Kill it, if it has not been waited for yet (an error in this process)."""
        if self._pid is not None:
            import signal  # (loaded already, by the fork)

            os.kill(self._pid, signal.SIGKILL)
            self.join()


def _say_failed(exc: BaseException) -> None:
    """One line, no traceback: the parent reads the helper's unfinished items itself."""
    if sys.stderr is not None:
        with suppress(OSError, ValueError):
            print(
                f"node-agent: a helper process failed ({type(exc).__name__}: {exc});"
                " its items were done again in the main process",
                file=sys.stderr,
                flush=True,
            )


def _stop_all(helpers: list[_Helper]) -> None:
    for helper in helpers:
        helper.stop()


class _Results:
    """The whole records a helper has written to its file so far, read on from the last."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._read = 0  # through the last whole record taken

    def collect(self, got: dict[int, Out], back: Callable[[memoryview], Out]) -> None:
        # pread: the helper writes through the same open file (one offset for both).
        data = os.pread(self._fd, os.fstat(self._fd).st_size - self._read, self._read)
        records, whole = _records(data)
        for index, result in records:
            got[index] = back(result)
        self._read += whole


def _unnamed_file() -> BinaryIO:
    """A file with no name, gone once closed: in memory where Linux offers it (no disk, and
    no `tempfile` import, which costs a scan's start-up several ms)."""
    if hasattr(os, "memfd_create"):
        try:
            return os.fdopen(os.memfd_create("fleetmeter-share", os.MFD_CLOEXEC), "w+b")
        except OSError:  # an old kernel or a seccomp filter refusing it: a file on disk
            pass
    import tempfile

    return tempfile.TemporaryFile()


_HEAD = struct.Struct("<IQ")  # a result's index in the work, and its length


def _records(data: bytes) -> tuple[list[tuple[int, memoryview]], int]:
    """The whole records at the start of `data` (the last may be still being written, or
    left in part by a helper killed while writing it), and how many bytes they take."""
    view = memoryview(data)
    records = []
    at = 0
    while at + _HEAD.size <= len(view):
        index, length = _HEAD.unpack_from(view, at)
        if at + _HEAD.size + length > len(view):
            break
        records.append((index, view[at + _HEAD.size : at + _HEAD.size + length]))
        at += _HEAD.size + length
    return records, at


def _help(there: Callable[[In], bytes], work: Sequence[In], claims: _Claims, fd: int) -> None:
    while taken := claims.take():
        for index in taken:
            result = there(work[index])
            _write_all(fd, _HEAD.pack(index, len(result)) + result)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
