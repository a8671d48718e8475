"""Ending a terminal program cleanly on SIGTERM, SIGHUP, SIGINT or the loss of its terminal,
even when its event loop no longer turns (the dashboard and the demo, `fleet-hub [demo]`).

On the first request the program is asked to end (the dashboard's exit, posted thread-safely
to its loop); its own path then runs the cleanup (end the demo's children, stop the embedded
hub). A loop that cannot turn is the case this exists for: once the terminal is gone, a
Textual app's output thread dies on EIO and its bounded queue then blocks the loop's next
write for good (Textualize/textual#6692 shows the same wedge), so the exit is never read and
SIGTERM was ignored for an hour. So a request also arms a timer: after `grace` seconds the
cleanup runs on the timer's thread and the process exits with 128 + the signal. A second
signal forces that at once. With nothing to ask yet (the demo still starting its fleet), a
signal raises SystemExit in the main thread, which unwinds through the caller's cleanup.

The terminal is watched too (poll for POLLHUP on the tty every WATCH_EVERY_S): a process that
is not the terminal's controlling one gets no SIGHUP when the terminal closes.

No Textual here: the hub's core must not import it; the dashboard hands in its way to ask.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Final

log = logging.getLogger(__name__)

SIGNALS: Final = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
GRACE_S: Final = 10.0  # for the asked program to end and clean up before it is forced
CLEANUP_BOUND_S: Final = 60.0  # a forced end waits this long for a cleanup already running
EXIT_GRACE_S: Final = 2.0  # after the cleanup, for the main thread to exit by itself
WATCH_EVERY_S: Final = 0.5
REPEAT_S: Final = 1.0  # the same signal again within this is one hangup told twice, not a plea
HANGUP: Final = select.POLLHUP | select.POLLERR | select.POLLNVAL

Ask = Callable[[], bool]  # asks the program to end; False: nothing to ask yet


class Shutdown:
    """Use as a context manager around the program's run (the main thread only: signal
    handlers are installed there); its exit runs `cleanup` (once, whoever asks first)."""

    def __init__(
        self,
        cleanup: Callable[[], None],
        *,
        grace: float = GRACE_S,
        terminal: int | None = None,
    ) -> None:
        """`terminal`: the tty's fd to watch (default: stdin's or stdout's when a tty)."""
        self._cleanup = cleanup
        self._grace = grace
        self._terminal = _tty_fd() if terminal is None else terminal
        self._ask: Ask | None = None
        self._cleaning = threading.RLock()  # a forcing signal may come while it runs
        self._cleaned = False
        self._requested: int | None = None  # the signal number of the first request
        self._requested_at = 0.0
        self._done = threading.Event()  # the context was left: no watching, no forcing
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self._requested is not None

    def asks(self, ask: Ask | None) -> None:
        """How to ask the program to end from now on (None: nothing to ask)."""
        self._ask = ask
        if ask is not None and self._requested is not None:
            ask()  # a request that came before there was anyone to ask

    def cleanup(self) -> None:
        """Run the cleanup once; a second caller waits (bounded) for the first one."""
        if not self._cleaning.acquire(timeout=CLEANUP_BOUND_S):
            log.error("the cleanup did not end within %g s", CLEANUP_BOUND_S)
            return
        try:
            if not self._cleaned:
                self._cleaned = True
                self._cleanup()
        finally:
            self._cleaning.release()

    # -- the context -----------------------------------------------------------------------------

    def __enter__(self) -> Shutdown:
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        if self._terminal is not None:
            threading.Thread(
                target=self._watch, args=(self._terminal,), name="terminal-watch", daemon=True
            ).start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.cleanup()
        finally:
            self._done.set()
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)  # type: ignore[arg-type]

    # -- requests --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if not self.request(signum) and not self._cleaned:
            # Nothing to ask: unwind through the cleanup. Not once it has begun: unwinding
            # would cut it short (the forced end armed by the request bounds it instead).
            raise SystemExit(128 + signum)

    def request(self, signum: int) -> bool:
        """Ask the program to end (any thread) and arm the forced end; a second request
        forces it now. False when there is nothing to ask yet."""
        if self._requested is not None:
            again = signum == self._requested and time.monotonic() - self._requested_at < REPEAT_S
            if not again:
                log.warning("asked again to end (signal %d): ending now", signum)
                self._force(signum, 0.0)
            return True
        self._requested, self._requested_at = signum, time.monotonic()
        log.info("ending on signal %d", signum)
        threading.Thread(
            target=self._force, args=(signum, self._grace), name="forced-end", daemon=True
        ).start()
        ask = self._ask
        if ask is None:
            return False
        try:
            return ask()
        except Exception:  # a program that cannot be asked is ended by the timer
            log.exception("could not ask the program to end")
            return True

    def _force(self, signum: int, after: float) -> None:
        if self._done.wait(after):
            return
        log.warning("the program did not end within %g s of signal %d: forcing it", after, signum)
        self.cleanup()
        if not self._done.wait(EXIT_GRACE_S):
            os._exit(128 + signum)

    def _watch(self, fd: int) -> None:
        poller = select.poll()
        poller.register(fd, 0)  # no events asked: POLLHUP, POLLERR and POLLNVAL come anyway
        while not self._done.wait(WATCH_EVERY_S):
            try:
                events = poller.poll(0)
            except OSError:
                events = [(fd, select.POLLNVAL)]
            if any(mask & HANGUP for _, mask in events):
                log.warning("the terminal is gone: ending")
                if self._requested is not None:
                    return  # ending already (its SIGHUP may have come first)
                if self._ask is None:
                    os.kill(os.getpid(), signal.SIGHUP)  # the main thread unwinds
                else:
                    self.request(signal.SIGHUP)
                return


def _tty_fd() -> int | None:
    for stream in (sys.stdin, sys.stdout):
        try:
            if stream is not None and stream.isatty():
                return stream.fileno()
        except (OSError, ValueError):
            continue
    return None
