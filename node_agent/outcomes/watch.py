"""The daemon's part: the spans of this node's sessions (from the calls it reads), their
outcomes read again while they can still change, and those the hub has not acknowledged.

Spans are kept in a small JSON file in the state dir, replaced atomically, so a restarted
node (the reader resumes past the calls it already read) still knows its sessions. Outcomes
are whole snapshots the hub keeps by newest: one sent twice, or re-read after a restart,
changes nothing there.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from node_agent.outcomes.forge import GitHub
from node_agent.outcomes.sessions import OutcomeReader, SessionSpan, spans
from shared.events import Event, UsageEvent
from shared.outcomes import outcome_to_map
from shared.wire import MAX_OUTCOMES

log = logging.getLogger(__name__)

RECHECK_S: Final = 3600.0  # a session is read again until an hour after its last call
KEEP_S: Final = 7 * 86400.0  # spans older than this are forgotten
INTERVAL_S: Final = 30.0  # recent sessions are read again this often (commits come later)
MIN_GAP_S: Final = 2.0  # a new session is read this soon, but git runs no more often
MAX_BATCH_BYTES: Final = 128 << 10  # outcomes per batch, well inside the frame cap


def outcome_bytes(outcomes: Sequence[dict[str, Any]]) -> int:
    """An upper bound of the room `outcomes` take in a frame (msgpack is smaller than JSON)."""
    return sum(len(json.dumps(found)) for found in outcomes)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {**a, "checked_at": 0} == {**b, "checked_at": 0}


class OutcomeWatch:
    def __init__(
        self,
        path: Path,
        *,
        forge: GitHub | None = None,
        identities: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.forge = forge
        self.identities = identities
        self.clock = clock
        self._lock = threading.Lock()
        self._spans: dict[str, SessionSpan] = {}  # see `load`
        self._dirty: set[str] = set()
        self._sent: dict[str, dict[str, Any]] = {}  # the hub has these
        self._pending: dict[str, dict[str, Any]] = {}
        self._news = threading.Event()  # a session's span changed: read it soon

    def load(self) -> None:
        """The spans kept by the last run (call once the state dir is known to be usable),
        each read again once."""
        with self._lock:
            self._spans = self._load() | self._spans
            self._dirty |= set(self._spans)

    # -- the reader thread tells it what it read ---------------------------------------------

    def saw(self, events: Iterable[Event]) -> None:
        usage = [e for e in events if isinstance(e, UsageEvent) and e.counts]
        if not usage:
            return
        with self._lock:
            for span in spans(usage):
                old = self._spans.get(span.session_id)
                if old is not None:
                    span = SessionSpan(
                        span.session_id,
                        span.cwd or old.cwd,
                        min(old.first, span.first),
                        max(old.last, span.last),
                        span.branch or old.branch,
                    )
                if span != old:
                    self._spans[span.session_id] = span
                    self._dirty.add(span.session_id)
                    self._news.set()

    # -- its own thread reads git ------------------------------------------------------------

    def refresh(self) -> int:
        """Read the outcomes of the sessions that changed or are recent; returns how many
        changed since the hub last heard of them."""
        now = self.clock()
        with self._lock:
            old = [s for s, sp in self._spans.items() if sp.last < now - KEEP_S]
            for session_id in old:
                del self._spans[session_id]
            changed_spans = bool(old or self._dirty)
            due = [
                sp
                for sp in self._spans.values()
                if sp.session_id in self._dirty or sp.last >= now - RECHECK_S
            ]
            self._dirty.clear()
            known = dict(self._spans)
        if changed_spans:
            self._save(known)
        reader = OutcomeReader(identities=self.identities, forge=self.forge, clock=self.clock)
        changed = 0
        for span in due:
            try:
                found = outcome_to_map(reader.read(span))
            except Exception:  # one odd repository must never stop the others
                log.exception("reading the outcome of session %s failed", span.session_id)
                continue
            with self._lock:
                sent = self._sent.get(span.session_id)
                if sent is None or not _same(sent, found):
                    self._pending[span.session_id] = found
                    changed += 1
        return changed

    def wake(self) -> None:
        """End `run`'s wait for news now (a stop: it then looks at its flag)."""
        self._news.set()

    def run(self, stop: threading.Event, interval: float = INTERVAL_S) -> None:
        while not stop.is_set():
            self._news.clear()
            self.refresh()
            if stop.wait(MIN_GAP_S):
                break
            self._news.wait(interval - MIN_GAP_S)

    # -- the sender thread carries them ------------------------------------------------------

    def take(self, max_bytes: int = MAX_BATCH_BYTES) -> list[dict[str, Any]]:
        """Pending outcomes for the next batch: at most `max_bytes` of their JSON, and as
        many as a batch may carry (`shared.wire.MAX_OUTCOMES`)."""
        out: list[dict[str, Any]] = []
        size = 0
        with self._lock:
            for found in self._pending.values():
                size += outcome_bytes([found])
                if out and (size > max_bytes or len(out) >= MAX_OUTCOMES):
                    break
                out.append(found)
        return out

    def acked(self, sent: Iterable[dict[str, Any]]) -> None:
        with self._lock:
            for found in sent:
                session_id = found["session_id"]
                self._sent[session_id] = found
                if self._pending.get(session_id) is found:
                    del self._pending[session_id]

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    # -- the spans file ----------------------------------------------------------------------

    def _load(self) -> dict[str, SessionSpan]:
        try:
            data = json.loads(self.path.read_text())
            return {
                sid: SessionSpan(sid, cwd, float(first), float(last), branch)
                for sid, (cwd, first, last, branch) in data.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError) as exc:  # damaged: the sessions come back as read
            log.warning("%s unreadable (%s): starting with no session spans", self.path, exc)
            return {}

    def _save(self, known: dict[str, SessionSpan]) -> None:
        data = {s: [sp.cwd, sp.first, sp.last, sp.branch] for s, sp in known.items()}
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            with tmp.open("w") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)  # whole or not at all, whenever the node is killed
        except OSError as exc:
            log.warning("cannot keep session spans in %s: %s", self.path, exc)
