"""Pause, resume and kill an agent's whole process tree, addressed by (pid, create_time).

Rules (research/stack.md §5):
- A command names the process by pid AND start time; if the pid now belongs to another
  process (or none), nothing is signalled. pid 1, the node-agent and its ancestors are never
  touched.
- Signals go through a pidfd where the kernel has them (Linux ≥ 5.1): the fd is opened, the
  start time checked again, and from then on the fd can only reach that very process, so a
  recycled pid is never hit.
- Pause stops the tree top-down and lists it again until no new process appears, waiting for
  each batch to be really stopped first (a process that is still running can fork).
- Kill freezes the tree first (its snapshot must be taken before the root can exit and orphan
  the tools), then SIGTERM + SIGCONT each (a stopped process only sees SIGTERM once
  continued), waits `grace` seconds, SIGKILLs what is left, and reports survivors.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import psutil

STOP_WAIT: Final = 2.0  # seconds for one batch of SIGSTOPs to take effect
KILL_WAIT: Final = 2.0  # seconds for SIGKILLed processes to exit
MAX_ROUNDS: Final = 100  # freeze rounds (each stops the children forked in the previous)
SAME_START: Final = 0.01  # start times closer than this are one process (psutil: 10 ms ticks)


@dataclass(frozen=True, slots=True)
class CommandResult:
    ok: bool
    outcome: str  # paused | resumed | killed | refused | failed
    detail: str  # why, in words, for the operator
    pids: tuple[int, ...] = ()  # what was signalled, in order


class _Refused(Exception):
    """The command cannot be carried out; the message says why."""


class _Handle:
    """One process we may signal: psutil's identity plus, on Linux, a pidfd pinned to it."""

    def __init__(self, proc: psutil.Process, fd: int | None) -> None:
        self.proc = proc
        self.fd = fd

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, sig: signal.Signals) -> None:
        """Raises psutil.NoSuchProcess when it is gone, psutil.AccessDenied when not ours."""
        if self.fd is None:
            self.proc.send_signal(sig)  # psutil checks the start time first
            return
        try:
            signal.pidfd_send_signal(self.fd, sig)
        except ProcessLookupError:
            raise psutil.NoSuchProcess(self.pid) from None
        except PermissionError:
            raise psutil.AccessDenied(self.pid) from None

    def exited(self) -> bool:
        """Dead (a zombie not yet reaped counts: it runs nothing any more)."""
        if self.fd is not None:
            # A pidfd polls readable once its process has exited (poll: fds may be > 1024).
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            return bool(poller.poll(0))
        try:
            return self.proc.status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
        except psutil.NoSuchProcess:
            return True

    def stopped(self) -> bool:
        if self.exited():
            return True
        try:
            status = self.proc.status()
        except psutil.NoSuchProcess:
            return True
        return status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _open(proc: psutil.Process) -> _Handle | None:
    """A handle on `proc`, or None when it is gone (or its pid already belongs to another)."""
    fd: int | None = None
    if hasattr(os, "pidfd_open"):
        try:
            fd = os.pidfd_open(proc.pid)
        except ProcessLookupError:
            return None
        except OSError:
            fd = None  # no pidfd support: psutil's own start-time check remains
    # Checked after pinning: a pid recycled before pidfd_open shows a different start time.
    if not proc.is_running():
        if fd is not None:
            os.close(fd)
        return None
    return _Handle(proc, fd)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def _guard(pid: int) -> None:
    if pid <= 0:
        raise _Refused(f"pid {pid} is not a process id")
    if pid == 1:
        raise _Refused("pid 1 is the init process")
    me = psutil.Process()
    if pid == me.pid:
        raise _Refused(f"pid {pid} is the node-agent itself")
    if pid in {p.pid for p in me.parents()}:
        raise _Refused(f"pid {pid} is an ancestor of the node-agent")


def _target(pid: int, create_time: float) -> _Handle:
    _guard(pid)
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        status = proc.status()
    except psutil.NoSuchProcess:
        raise _Refused(f"pid {pid}: no such process") from None
    except psutil.AccessDenied:
        raise _Refused(f"pid {pid}: permission denied") from None
    if abs(started - create_time) >= SAME_START:
        raise _Refused(
            f"pid {pid} now belongs to another process (started at {_when(started)},"
            f" not {_when(create_time)})"
        )
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        raise _Refused(f"pid {pid} has already exited")
    handle = _open(proc)
    if handle is None:
        raise _Refused(f"pid {pid}: no such process (it has just exited)")
    return handle


class _Tree:
    """The processes of one tree we have signalled, root first, each pinned by a handle."""

    def __init__(self, root: _Handle) -> None:
        self.root = root
        self.handles: dict[int, _Handle] = {root.pid: root}
        self.signalled: list[int] = []
        self.denied: set[int] = set()

    def __iter__(self) -> Iterator[_Handle]:
        return iter(list(self.handles.values()))

    def alive(self) -> list[_Handle]:
        return [h for h in self if not h.exited()]

    def send(self, handle: _Handle, sig: signal.Signals) -> bool:
        try:
            handle.send(sig)
        except psutil.NoSuchProcess:
            return False
        except psutil.AccessDenied:
            self.denied.add(handle.pid)
            return False
        if handle.pid not in self.signalled:
            self.signalled.append(handle.pid)
        return True

    def discover(self) -> list[_Handle]:
        """Descendants of the living members not yet known, parents before children."""
        ppids: dict[int, list[int]] = {}
        for proc in psutil.process_iter(["ppid"]):
            ppid = proc.info["ppid"]
            if isinstance(ppid, int):
                ppids.setdefault(ppid, []).append(proc.pid)
        me = os.getpid()
        found: list[_Handle] = []
        queue = [h for h in self if not h.exited()]
        while queue:
            parent = queue.pop(0)
            for pid in ppids.get(parent.pid, ()):
                if pid in self.handles or pid == me:
                    continue
                try:
                    proc = psutil.Process(pid)
                    if proc.create_time() < parent.proc.create_time():
                        continue  # listed under a recycled pid: not a child of ours
                except psutil.Error:
                    continue
                handle = _open(proc)
                if handle is None:
                    continue
                self.handles[pid] = handle
                found.append(handle)
                queue.append(handle)
        return found

    def freeze(self) -> list[int]:
        """SIGSTOP every member, then every new descendant, until none appears. Returns the
        pids that had not stopped when their wait ran out (in uninterruptible sleep)."""
        batch = [h for h in self if not h.exited()]
        slow: list[int] = []
        for _ in range(MAX_ROUNDS):
            if not batch:
                return slow
            stopped = [h for h in batch if self.send(h, signal.SIGSTOP)]
            slow += [h.pid for h in _wait(stopped, _Handle.stopped, STOP_WAIT)]
            batch = self.discover()
        return slow + [h.pid for h in batch]

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def _wait(handles: list[_Handle], done: Callable[[_Handle], bool], timeout: float) -> list[_Handle]:
    """Poll until `done` holds for every handle or `timeout` passes; returns the others."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    pending = [h for h in handles if not done(h)]
    while pending and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
        pending = [h for h in pending if not done(h)]
    return pending


@contextmanager
def _tree(pid: int, create_time: float) -> Iterator[_Tree]:
    tree = _Tree(_target(pid, create_time))
    try:
        yield tree
    finally:
        tree.close()


def _signal_root(tree: _Tree, sig: signal.Signals) -> None:
    """Signal the root before anything else: if it is not ours, no descendant is touched."""
    if not tree.send(tree.root, sig):
        pid = tree.root.pid
        why = "permission denied" if pid in tree.denied else "no such process (it has just exited)"
        raise _Refused(f"pid {pid}: {why}")


def _denied(tree: _Tree) -> str:
    if not tree.denied:
        return ""
    return f"; permission denied for pid(s) {', '.join(map(str, sorted(tree.denied)))}"


def pause(pid: int, create_time: float) -> CommandResult:
    """SIGSTOP the agent and every descendant, including ones forked while we stop them."""
    try:
        with _tree(pid, create_time) as tree:
            _signal_root(tree, signal.SIGSTOP)
            slow = tree.freeze()
            detail = f"stopped {len(tree.signalled)} process(es)"
            if slow:
                detail += f"; not yet stopped: {', '.join(map(str, slow))}"
            return CommandResult(True, "paused", detail + _denied(tree), tuple(tree.signalled))
    except _Refused as why:
        return CommandResult(False, "refused", str(why))


def resume(pid: int, create_time: float) -> CommandResult:
    """SIGCONT the agent, then its descendants (a paused tree cannot fork: one listing)."""
    try:
        with _tree(pid, create_time) as tree:
            _signal_root(tree, signal.SIGCONT)
            for handle in tree.discover():
                tree.send(handle, signal.SIGCONT)
            detail = f"continued {len(tree.signalled)} process(es)" + _denied(tree)
            return CommandResult(True, "resumed", detail, tuple(tree.signalled))
    except _Refused as why:
        return CommandResult(False, "refused", str(why))


def kill(pid: int, create_time: float, grace: float = 2.0) -> CommandResult:
    """Freeze the tree, SIGTERM + SIGCONT each, wait `grace` s, SIGKILL what remains."""
    try:
        with _tree(pid, create_time) as tree:
            _signal_root(tree, signal.SIGSTOP)
            tree.freeze()
            members = tree.alive()
            for handle in members:
                tree.send(handle, signal.SIGTERM)
            for handle in members:
                tree.send(handle, signal.SIGCONT)
            _wait(members, _Handle.exited, grace)
            # Children spawned while handling SIGTERM: freeze them too, then SIGKILL all.
            tree.freeze()
            forced = tree.alive()
            for handle in forced:
                tree.send(handle, signal.SIGKILL)
            survivors = _wait(forced, _Handle.exited, KILL_WAIT)
            pids = tuple(tree.signalled)
            if survivors:
                alive = ", ".join(str(h.pid) for h in survivors)
                return CommandResult(
                    False, "failed", f"still alive after SIGKILL: {alive}" + _denied(tree), pids
                )
            detail = f"ended {len(tree.handles)} process(es)"
            if forced:
                detail += f", {len(forced)} needed SIGKILL after {grace:g} s"
            return CommandResult(True, "killed", detail + _denied(tree), pids)
    except _Refused as why:
        return CommandResult(False, "refused", str(why))
