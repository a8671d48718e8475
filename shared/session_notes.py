"""What the hub's detectors found about a node's sessions, as the hub hands it to the node in
its signed acks ("f"), so that an agent's `explain_spend` can say it (issue 14).

A note is a detector finding whose scope names a session (cache thrash, context growth, retry
loop, model swap, subagent fan-out): its kind, the session, the sentence, when it began. Few
per ack (`MAX_NOTES`, newest first) and short: the ack stays small. From the wire they are
untrusted: a malformed note is dropped alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

MAX_NOTES: Final = 16  # per ack
MAX_TEXT: Final = 400


@dataclass(frozen=True, slots=True)
class SessionNote:
    id: str  # the finding's stable id
    kind: str  # e.g. "cache_thrash", "retry_loop"
    session: str
    text: str
    start: float  # epoch seconds the happening began


def note_to_map(note: SessionNote) -> dict[str, Any]:
    return asdict(note)


def notes_from_list(data: object) -> list[SessionNote]:
    if not isinstance(data, list):
        return []
    out: list[SessionNote] = []
    for item in data[:MAX_NOTES]:
        if not isinstance(item, dict):
            continue
        texts = [item.get(k) for k in ("id", "kind", "session", "text")]
        start = item.get("start")
        if not all(isinstance(t, str) for t in texts):
            continue
        if isinstance(start, bool) or not isinstance(start, int | float) or start != start:
            continue
        ident, kind, session, text = (str(t)[:MAX_TEXT] for t in texts)
        out.append(SessionNote(ident, kind, session, text, float(start)))
    return out


def scope_session(scope: str) -> tuple[str | None, str | None]:
    """(machine, session) named by a finding's scope `kind=value,...`."""
    parts = dict(p.partition("=")[::2] for p in scope.split(","))
    return parts.get("machine") or None, parts.get("session") or None
