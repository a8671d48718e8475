"""Interrupt a Codex CLI turn: the clean stop that comes before a budget's pause (issue 14).

Codex's hooks gate a turn's start and some tools, not the model calls inside a turn, so a turn
that keeps calling the model is stopped from outside (research/agent-integration.md §5.4, §7):
- SIGINT to the Codex process aborts the turn (`codex exec` and the TUI; the npm wrapper
  passes it on to the native binary). The rollout then records `turn_aborted` (reason
  `interrupted`); `codex exec` exits after it. That line (or the process's exit) is the proof
  the turn ended; without either within `wait` seconds the outcome is `failed` and the pause
  that follows is the brake.
- A Codex app-server the node can reach (`--listen unix://PATH` or a loopback `ws://`) is
  asked `turn/interrupt` for each turn in progress in the rollouts it holds open (SIGINT would
  end the server and all its threads); one on stdio is refused: only its client reaches it,
  and the pause that follows is the brake (`codex_appserver`).
- A Codex with no turn in progress (its rollout's last turn has ended) is left alone: SIGINT
  there is a keypress-less Ctrl+C that the TUI may read as "quit".
- Interrupting leaves a running tool shell alive (openai/codex#42717; the app-server too, in
  0.171.0): once the turn has ended, what it started (below Codex, seen before the signal,
  started since the turn's `started_at`) and still runs is ended with its tree, as is
  everything left below a Codex that exited. What an earlier turn left running and the MCP
  servers of a Codex that goes on are left alone.

Addressed by (pid, create_time) and refused on a recycled pid like the other commands (`halt`).
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import orjson
import psutil

from node_agent.procs.codex_appserver import (
    AppServerError,
    interrupt_turns,
    is_app_server,
    listener,
    reachable,
)
from node_agent.procs.halt import (
    CommandResult,
    _Handle,
    _open,
    _Refused,
    _target,
    _wait,
    kill,
)
from node_agent.procs.identify import agent_of
from shared.events import Agent

INTERRUPT_WAIT: Final = 3.0  # seconds for the rollout to record the aborted turn
EXIT_GRACE: Final = 1.0  # then for `codex exec` to exit, as it does after an aborted turn
LEFTOVER_GRACE: Final = 0.5  # SIGTERM grace of a tool shell left running
TAIL_BYTES: Final = 1 << 20  # how much of a rollout's end is read for the turn's state
SHELLS: Final = frozenset({"bash", "sh", "zsh", "dash", "fish", "ksh"})
TURN_ENDS: Final = frozenset({"turn_aborted", "task_complete"})
SAME_START_S: Final = 1.0  # task_started's started_at is in whole seconds


@dataclass(frozen=True, slots=True)
class TurnState:
    """The last turn of a rollout: its id, and how it ended (None: still in progress)."""

    turn_id: str | None
    ended: str | None
    started_at: float | None = None  # epoch seconds, as task_started says


@dataclass(frozen=True, slots=True)
class _Member:
    handle: _Handle
    create_time: float
    name: str


def turn_state(lines: list[bytes]) -> TurnState | None:
    """The state of the last turn the rollout's `lines` tell of; None when they tell of none."""
    state: TurnState | None = None
    for line in lines:
        if b'"event_msg"' not in line:
            continue  # most lines are items and context: skip their parse
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a line cut by the tail's start, or still being written
        payload = record.get("payload") if isinstance(record, dict) else None
        if not isinstance(payload, dict):
            continue
        kind = payload.get("type")
        turn = payload.get("turn_id")
        turn = turn if isinstance(turn, str) else None
        if kind == "task_started":
            at = payload.get("started_at")
            started = (
                float(at) if isinstance(at, (int, float)) and not isinstance(at, bool) else None
            )
            state = TurnState(turn, None, started)
        elif kind in TURN_ENDS:
            reason = payload.get("reason")
            ended = f"{kind} ({reason})" if isinstance(reason, str) else str(kind)
            before = state if state is not None else TurnState(None, None)
            state = TurnState(turn or before.turn_id, ended, before.started_at)
    return state


def read_from(path: Path, offset: int) -> list[bytes]:
    """The whole lines of `path` from byte `offset` (at most TAIL_BYTES of its end)."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(offset, size - TAIL_BYTES)
            f.seek(start)
            data = f.read(size - start)
    except OSError:
        return []
    lines = data.split(b"\n")
    if start > offset:
        lines = lines[1:]  # the first is cut
    return lines[:-1]  # the last is not finished until its newline


def rollouts_of(procs: list[psutil.Process]) -> list[Path]:
    """The rollouts a Codex tree holds open for writing (an app-server: one per thread)."""
    found: dict[Path, None] = {}
    for proc in procs:
        try:
            files = proc.open_files()
        except psutil.Error:
            continue
        for f in files:
            name = Path(f.path).name
            if f.mode != "r" and name.startswith("rollout-") and name.endswith(".jsonl"):
                found[Path(f.path)] = None
    return list(found)


def thread_of(rollout: Path) -> str:
    """The thread a rollout is of: its name ends with the thread's id (a UUID)."""
    return rollout.stem[-36:]


def _members(root: _Handle) -> list[_Member]:
    """The descendants as they are now, each pinned (they may be orphaned by the interrupt)."""
    out: list[_Member] = []
    try:
        children = root.proc.children(recursive=True)
    except psutil.Error:
        return out
    for child in children:
        try:
            ctime, name = child.create_time(), child.name()
        except psutil.Error:
            continue
        handle = _open(child)
        if handle is not None:
            out.append(_Member(handle, ctime, name))
    return out


def _is_codex(proc: psutil.Process) -> bool:
    try:
        return agent_of(proc.name(), proc.cmdline()) is Agent.CODEX
    except psutil.Error:
        return False


def _wait_for_end(
    root: _Handle, rollout: Path | None, offset: int, wait: float
) -> tuple[str | None, bool]:
    """(how the turn ended, whether Codex exited) once either shows, or (None, False)."""
    deadline = time.monotonic() + wait
    pause = 0.005
    while True:
        ended = None
        if rollout is not None:
            state = turn_state(read_from(rollout, offset))
            ended = state.ended if state is not None else None
        exited = root.exited()
        if ended is not None or exited:
            if ended is None and rollout is not None:
                # exited: its last lines may have been written as it went
                state = turn_state(read_from(rollout, offset))
                ended = state.ended if state is not None else None
            return ended, exited
        if time.monotonic() >= deadline:
            return None, False
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _end_leftovers(members: list[_Member], codex_exited: bool, since: float | None) -> list[str]:
    """End what the interrupted turn left running, with their trees: everything below a Codex
    that exited (orphans now); else the processes started since the turn began (`since`, its
    `started_at`: a tool's shell may have exec'd into its command by now), or, when the rollout
    does not say when, the shells. A process an earlier turn left running on purpose (a dev
    server) and the MCP servers are not the interrupt's to end. Returns what was ended."""
    ended: list[str] = []
    for member in members:
        if member.handle.exited() or _is_codex(member.handle.proc):
            continue  # gone, or Codex itself (the native binary under the npm wrapper)
        if not codex_exited:
            if since is not None and member.create_time < since - SAME_START_S:
                continue
            if since is None and member.name not in SHELLS:
                continue
        result = kill(member.handle.pid, member.create_time, grace=LEFTOVER_GRACE)
        if result.ok:
            ended.append(f"{member.name} pid {member.handle.pid}")
    return ended


def interrupt(pid: int, create_time: float, wait: float = INTERRUPT_WAIT) -> CommandResult:
    """SIGINT the Codex process's turn, wait for the rollout (or its exit) to show the turn
    ended, then end the tool shells it left running."""
    try:
        root = _target(pid, create_time)
    except _Refused as why:
        return CommandResult(False, "refused", str(why))
    members: list[_Member] = []
    try:
        if not _is_codex(root.proc):
            raise _Refused(f"pid {pid} is not Codex CLI: only a Codex turn is interrupted")
        members = _members(root)
        procs = [root.proc, *(m.handle.proc for m in members)]
        cmdline = root.proc.cmdline()
        if is_app_server(cmdline):
            return _app_server(root, cmdline, members, rollouts_of(procs), wait)
        rollout = next(iter(rollouts_of(procs)), None)
        offset = 0
        since = None
        if rollout is not None:
            offset = rollout.stat().st_size
            state = turn_state(read_from(rollout, 0))
            since = state.started_at if state is not None else None
            if state is not None and state.ended is not None:
                detail = f"no turn in progress: the last one ended with {state.ended}"
                return CommandResult(True, "idle", detail)
        started = time.monotonic()
        try:
            root.send(signal.SIGINT)
        except psutil.NoSuchProcess:
            raise _Refused(f"pid {pid}: no such process (it has just exited)") from None
        except psutil.AccessDenied:
            raise _Refused(f"pid {pid}: permission denied") from None
        ended, exited = _wait_for_end(root, rollout, offset, wait)
        took = time.monotonic() - started
        if ended is None and not exited:
            where = f"in {rollout}" if rollout is not None else "(no rollout open to read)"
            detail = f"SIGINT sent; no end of the turn {where} within {wait:g} s"
            return CommandResult(False, "failed", detail, (pid,))
        if not exited:
            exited = not _wait([root], _Handle.exited, EXIT_GRACE)
        words = [f"SIGINT: the turn ended in {took:.1f} s"]
        words.append(f"rollout: {ended}" if ended else "Codex exited before its rollout said so")
        leftovers = _end_leftovers(members, exited, since)
        if exited:
            words.append("Codex exited")
        if leftovers:
            words.append(f"ended {len(leftovers)} left running ({', '.join(leftovers)})")
        outcome = "exited" if exited else "interrupted"
        return CommandResult(True, outcome, "; ".join(words), (pid,))
    except _Refused as why:
        return CommandResult(False, "refused", str(why))
    except psutil.Error as exc:
        return CommandResult(False, "refused", f"pid {pid}: {exc}")
    except OSError as exc:  # the rollout vanished between the listing and the stat
        return CommandResult(False, "failed", f"pid {pid}: {exc}")
    finally:
        root.close()
        for member in members:
            member.handle.close()


def _app_server(
    root: _Handle, cmdline: list[str], members: list[_Member], rollouts: list[Path], wait: float
) -> CommandResult:
    """`turn/interrupt` each turn in progress in the app-server's open rollouts, then wait for
    each rollout to record its end."""
    pid = root.pid
    where = listener(cmdline)
    if where is None:
        raise _Refused(
            f"pid {pid} is a Codex app-server on stdio: only its client can interrupt its turns"
        )
    if (why := reachable(where)) is not None:
        raise _Refused(f"pid {pid} is a Codex app-server the node cannot reach: {why}")
    running: list[tuple[Path, int, str, str]] = []
    starts: list[float | None] = []
    for rollout in rollouts:
        state = turn_state(read_from(rollout, 0))
        if state is not None and state.ended is None and state.turn_id is not None:
            running.append((rollout, rollout.stat().st_size, thread_of(rollout), state.turn_id))
            starts.append(state.started_at)
    if not running:
        return CommandResult(True, "idle", f"no turn in progress in its {len(rollouts)} thread(s)")
    started = time.monotonic()
    try:
        failed = interrupt_turns(where, [(thread, turn) for _, _, thread, turn in running])
    except AppServerError as exc:
        return CommandResult(False, "failed", f"turn/interrupt: {exc}", (pid,))
    deadline = started + wait
    ended: list[str] = []
    for rollout, offset, _thread, _turn in running:
        end, _ = _wait_for_end(root, rollout, offset, max(0.0, deadline - time.monotonic()))
        if end is not None:
            ended.append(end)
    took = time.monotonic() - started
    words = [f"turn/interrupt over {where.url}: {len(ended)} of {len(running)} turn(s) ended"]
    words.append(f"in {took:.1f} s (rollout: {', '.join(sorted(set(ended)))})" if ended else "")
    words += failed
    known = [at for at in starts if at is not None]
    since = min(known) if len(known) == len(starts) else None
    leftovers = _end_leftovers(members, codex_exited=False, since=since)
    if leftovers:
        words.append(f"ended {len(leftovers)} left running ({', '.join(leftovers)})")
    ok = len(ended) == len(running)
    return CommandResult(ok, "interrupted" if ok else "failed", "; ".join(w for w in words if w))
