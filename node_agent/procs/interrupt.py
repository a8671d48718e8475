"""Interrupt a Codex CLI turn: the clean stop that comes before a budget's pause (issue 14).

Codex's hooks gate a turn's start and some tools, not the model calls inside a turn, so a turn
that keeps calling the model is stopped from outside (research/agent-integration.md §5.4, §7):
- SIGINT to the Codex process aborts the turn (`codex exec` and the TUI; the npm wrapper
  passes it on to the native binary). The rollout then records `turn_aborted` (reason
  `interrupted`); `codex exec` exits after it. That line (or the process's exit) is the proof
  the turn ended; without either within `wait` seconds the outcome is `failed` and the pause
  that follows is the brake.
- A Codex with no turn in progress (its rollout's last turn has ended) is left alone: SIGINT
  there is a keypress-less Ctrl+C that the TUI may read as "quit".
- Interrupting leaves a running tool shell alive (openai/codex#42717): once the turn has
  ended, the shells Codex had started (`bash`, `sh`, `zsh`... below it, seen before the
  signal) that still run are ended with their trees, as is everything left below a Codex
  that exited. Other children (MCP servers) of a Codex that goes on are left running.

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


@dataclass(frozen=True, slots=True)
class TurnState:
    """The last turn of a rollout: its id, and how it ended (None: still in progress)."""

    turn_id: str | None
    ended: str | None


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
            state = TurnState(turn, None)
        elif kind in TURN_ENDS:
            reason = payload.get("reason")
            ended = f"{kind} ({reason})" if isinstance(reason, str) else str(kind)
            state = TurnState(turn or (state.turn_id if state else None), ended)
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


def rollout_of(procs: list[psutil.Process]) -> Path | None:
    """The rollout a Codex tree holds open for writing."""
    for proc in procs:
        try:
            files = proc.open_files()
        except psutil.Error:
            continue
        for f in files:
            name = Path(f.path).name
            if f.mode != "r" and name.startswith("rollout-") and name.endswith(".jsonl"):
                return Path(f.path)
    return None


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


def _end_leftovers(members: list[_Member], codex_exited: bool) -> list[str]:
    """End the tool shells still running after the turn (all that is left when Codex itself
    exited); their trees go with them. Returns what was ended, in words."""
    ended: list[str] = []
    for member in members:
        if member.handle.exited():
            continue
        if _is_codex(member.handle.proc):
            continue  # the native binary under the npm wrapper: Codex itself
        if not codex_exited and member.name not in SHELLS:
            continue  # an MCP server of a Codex that goes on
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
        rollout = rollout_of(procs)
        offset = 0
        if rollout is not None:
            offset = rollout.stat().st_size
            state = turn_state(read_from(rollout, 0))
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
        leftovers = _end_leftovers(members, exited)
        if exited:
            words.append("Codex exited")
        if leftovers:
            words.append(f"ended {len(leftovers)} left running ({', '.join(leftovers)})")
        outcome = "exited" if exited else "interrupted"
        return CommandResult(True, outcome, "; ".join(words), (pid,))
    except _Refused as why:
        return CommandResult(False, "refused", str(why))
    except OSError as exc:  # the rollout vanished between the listing and the stat
        return CommandResult(False, "failed", f"pid {pid}: {exc}")
    finally:
        root.close()
        for member in members:
            member.handle.close()
