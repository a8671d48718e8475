"""The detectors' findings about sessions, kept in memory by machine and by session, for the
agents' own questions: the notes each ack carries to a node (its sessions' newest findings)
and the hub's MCP `explain_spend`.

A `FindingSink` beside the journal and the outbox (idempotent on the finding's id); a hub that
starts again reads the journal's latest findings back, so nothing the agents were told is
forgotten by a restart. Bounded: a fixed number per machine and per session, sessions least
recently named dropped first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Final

from hub.findings import Finding
from shared.session_notes import MAX_NOTES, SessionNote, scope_session

PER_MACHINE: Final = 64
PER_SESSION: Final = 8
MAX_SESSIONS: Final = 20_000
RELOAD: Final = 2_000  # journal rows read back at start


class SessionFindings:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()  # ids, bounded like the rest
        self._machines: dict[str, deque[SessionNote]] = {}
        self._sessions: OrderedDict[str, deque[SessionNote]] = OrderedDict()

    def load(self, findings: list[Finding]) -> None:
        """The journal's findings, newest first (as `FindingJournal.findings` gives them)."""
        for finding in reversed(findings):
            self.raise_finding(finding)

    def raise_finding(self, finding: Finding) -> None:
        machine, session = scope_session(finding.scope)
        if session is None:
            return
        note = SessionNote(finding.id, finding.kind, session, finding.text, finding.start)
        with self._lock:
            if finding.id in self._seen:
                return
            self._seen[finding.id] = None
            while len(self._seen) > MAX_SESSIONS * PER_SESSION:
                self._seen.popitem(last=False)
            if machine is not None:
                if machine not in self._machines and len(self._machines) >= MAX_SESSIONS:
                    self._machines.pop(next(iter(self._machines)))
                self._machines.setdefault(machine, deque(maxlen=PER_MACHINE)).appendleft(note)
            notes = self._sessions.pop(session, None) or deque(maxlen=PER_SESSION)
            notes.appendleft(note)
            self._sessions[session] = notes
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)

    def for_machine(self, machine: str) -> list[SessionNote]:
        """Newest first, at most an ack's worth."""
        with self._lock:
            return list(self._machines.get(machine, ()))[:MAX_NOTES]

    def for_session(self, session: str) -> list[SessionNote]:
        with self._lock:
            return list(self._sessions.get(session, ()))
