"""Ending whole process trees, paused ones and ones still forking included: freeze every
process first (a stopped process cannot fork, so nothing escapes), then SIGTERM, continue, and
SIGKILL what outlives the grace time."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence

import psutil


def end_trees(trees: Iterable[Iterable[psutil.Process]], grace: float) -> None:
    """Freeze, then SIGTERM and continue each (a stopped process only acts on SIGTERM once
    continued: a paused agent too), then SIGKILL what is left after `grace` seconds."""
    procs = _freeze(trees)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.resume()
    _wait(procs, lambda p: not _alive(p), grace)
    left = [p for p in procs if _alive(p)]
    for proc in left:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _wait(left, lambda p: not _alive(p), grace)


def _freeze(trees: Iterable[Iterable[psutil.Process]]) -> list[psutil.Process]:
    """SIGSTOP every process of the trees, then their children, until no new one appears: a
    stopped process cannot fork, so nothing escapes the list (an agent may be starting tools)."""
    seen: dict[int, psutil.Process] = {}
    batch = [p for tree in trees for p in tree]
    while batch:
        batch = [p for p in {p.pid: p for p in batch}.values() if p.pid not in seen and _alive(p)]
        for proc in batch:
            seen[proc.pid] = proc
            with contextlib.suppress(psutil.Error):
                proc.suspend()
        _wait(batch, _stopped, 1.0)
        batch = [child for proc in batch for child in _children(proc)]
    return list(seen.values())


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (an orphan's zombie waits for init, which may reap it late)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _stopped(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() in (
            psutil.STATUS_STOPPED,
            psutil.STATUS_TRACING_STOP,
            psutil.STATUS_ZOMBIE,
            psutil.STATUS_DEAD,
        )
    except psutil.Error:
        return True


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _wait(
    procs: Sequence[psutil.Process], done: Callable[[psutil.Process], bool], t: float
) -> None:
    deadline = time.monotonic() + t
    while not all(done(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.01)
