"""Subagent fan-out: a session starting more subagents than a stated count in a short time.

Per parent session: the subagents (distinct subagent ids) whose first call falls within the
last WINDOW_S seconds. More than MAX_CHILDREN of them is a fan-out: each child reads its own
context and writes its own cache, so a fan-out multiplies the session's spend (one session
with 36 subagents cost $322 where its main transcript showed $22). One finding per session
and happening (it ends when the window holds MAX_CHILDREN or fewer again).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final

from hub.detectors._base import MAX_THREADS, Call, Recent
from hub.findings import Finding, Severity
from shared.events import Role

KIND: Final = "subagent_fanout"
WINDOW_S: Final = 600.0
MAX_CHILDREN: Final = 10
KNOWN_CHILDREN: Final = 256  # subagent ids remembered per session


@dataclass(slots=True)
class _Session:
    known: OrderedDict[str, None] = field(default_factory=OrderedDict)
    started: deque[float] = field(default_factory=deque)  # first-call times in the window
    happening: bool = False


class SubagentFanout:
    kind = KIND

    def __init__(self) -> None:
        self._sessions: Recent[_Session] = Recent(_Session, MAX_THREADS)

    def observe(self, call: Call) -> list[Finding]:
        e = call.event
        child = e.subagent_id
        if e.role is not Role.SUBAGENT or child is None:
            return []
        parent = e.parent_session_id or e.session_id
        state = self._sessions.get(parent)
        if child in state.known:
            return []
        state.known[child] = None
        if len(state.known) > KNOWN_CHILDREN:
            state.known.popitem(last=False)
        state.started.append(e.ts)
        while state.started and state.started[0] < e.ts - WINDOW_S:
            state.started.popleft()
        if len(state.started) <= MAX_CHILDREN:
            state.happening = False
            return []
        if state.happening:
            return []
        state.happening = True
        start = state.started[0]
        minutes = WINDOW_S / 60
        scope = f"machine={e.machine}" + (f",profile={e.profile}" if e.profile else "")
        return [
            Finding(
                id=f"{KIND}:{parent}:{int(start)}",
                kind=KIND,
                scope=f"{scope},session={parent}",
                severity=Severity.WARNING,
                start=start,
                text=(
                    f"session {parent[:8]} on {e.machine} started {len(state.started)} "
                    f"subagents within {minutes:.0f} minutes (more than {MAX_CHILDREN})"
                ),
                evidence={
                    "subagents": str(len(state.started)),
                    "window_s": f"{WINDOW_S:.0f}",
                    "limit": str(MAX_CHILDREN),
                },
            )
        ]
