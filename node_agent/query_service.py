"""The node's local query service: HTTP on a unix socket in the state dir (mode 600, so only
the node's user can ask), answered from memory: a session's usage, its quota readings and the
budget verdicts that apply to it, and the hook's decision.

    GET  /session?session=ID&pid=P&pid=Q&cwd=DIR   the session's figures (see `answer_session`)
    POST /hook/EVENT   body: Claude Code's hook JSON  -> the hook's JSON answer
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
import socket
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import orjson

from node_agent.gate import decide
from node_agent.query_client import SOCKET_NAME, TOKEN_NAME
from node_agent.session_tally import SessionTally
from node_agent.thread_names import named
from shared.session_notes import SessionNote, note_to_map
from shared.verdicts import Verdict, verdict_to_map

log = logging.getLogger(__name__)


MAX_NOTES_KEPT: Final = 256  # the hub's notes on this node's sessions
MAX_BODY: Final = 1 << 20  # a hook's JSON; PostToolBatch carries tool results, so be generous
# The serving loop's own look for a shutdown: `close()` wakes it at once, so this only bounds a
# lost wake-up (each look is a wake-up of an idle node; socketserver's default is 0.5 s).
SERVE_POLL_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class AgentRef:
    """What the node's process inventory knows of one agent process."""

    pid: int
    session: str | None
    profile: str | None
    agent: str
    cwd: str | None


class VerdictBook:
    """The latest verdicts from the hub's acks, and when they came; and the notes the hub's
    detectors made on this node's sessions (kept across acks, the newest MAX_NOTES_KEPT)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._verdicts: list[Verdict] = []
        self.received: float | None = None
        self._notes: dict[str, SessionNote] = {}

    def take_notes(self, notes: list[SessionNote]) -> None:
        with self._lock:
            for note in notes:
                self._notes[note.id] = note
            if len(self._notes) > MAX_NOTES_KEPT:
                newest = sorted(self._notes.values(), key=lambda n: -n.start)[:MAX_NOTES_KEPT]
                self._notes = {n.id: n for n in newest}

    def notes(self, session: str) -> list[SessionNote]:
        with self._lock:
            mine = [n for n in self._notes.values() if n.session == session]
        return sorted(mine, key=lambda n: -n.start)

    def update(self, verdicts: list[Verdict]) -> None:
        with self._lock:
            self._verdicts = list(verdicts)
            self.received = time.time()

    def current(self) -> tuple[list[Verdict], float | None]:
        with self._lock:
            return list(self._verdicts), self.received


class NodeQueries:
    """The answers, from the tally, the verdict book and the process inventory."""

    def __init__(
        self,
        machine: str,
        tally: SessionTally,
        verdicts: VerdictBook,
        agents: Callable[[], Sequence[AgentRef]],
    ) -> None:
        self.machine = machine
        self.tally = tally
        self.verdicts = verdicts
        self.agents = agents

    def identify(
        self, session: str | None, pids: Sequence[int], cwd: str | None
    ) -> tuple[str | None, str, AgentRef | None]:
        """The caller's session and how it was found: given, its ancestor agent process, else
        the latest session in its working directory."""
        known = {a.pid: a for a in self.agents()}
        ref = next((known[p] for p in pids if p in known), None)
        if session:
            return session, "given by the agent", ref
        if ref is not None and ref.session:
            return ref.session, f"parent process {ref.pid} ({ref.agent})", ref
        if cwd:
            found = self.tally.latest_in(cwd)
            if found:
                return found, f"latest session in {cwd}", ref
        return None, "cannot tell which session is asking", ref

    def answer_session(
        self, session: str | None, pids: Sequence[int] = (), cwd: str | None = None
    ) -> dict[str, Any]:
        return self._figures(session, pids, cwd)[0]

    def _figures(
        self, session: str | None, pids: Sequence[int], cwd: str | None
    ) -> tuple[dict[str, Any], list[Verdict]]:
        now = time.time()
        found, how, ref = self.identify(session, pids, cwd)
        usage = self.tally.session(found, now) if found else None
        known = self.tally.owner(found) if found else None
        profile, agent, project = self._owner(known, ref, cwd)
        applying, received = self._applying(found, profile, project, agent)
        figures = {
            "machine": self.machine,
            "session": found,
            "identified_by": how,
            "usage": usage,
            "quota": self.tally.quota(profile, agent),
            "verdicts": [verdict_to_map(v) for v in applying],
            "verdicts_age_s": None if received is None else round(now - received, 1),
            "hub_findings": [note_to_map(n) for n in self.verdicts.notes(found)] if found else [],
        }
        return figures, applying

    @staticmethod
    def _owner(
        known: tuple[str | None, str, str | None] | None, ref: AgentRef | None, cwd: str | None
    ) -> tuple[str | None, str | None, str | None]:
        """Profile, agent and project of a session: from its calls, else its process."""
        profile = (known[0] if known else None) or (ref.profile if ref else None)
        agent = (known[1] if known else None) or (ref.agent if ref else None)
        project = (known[2] if known else None) or cwd
        return profile, agent, project

    def _applying(
        self, session: str | None, profile: str | None, project: str | None, agent: str | None
    ) -> tuple[list[Verdict], float | None]:
        verdicts, received = self.verdicts.current()
        models = self.tally.models(session) if session else frozenset()
        applying = [
            v
            for v in verdicts
            if v.applies_to(
                session,
                machine=self.machine,
                profile=profile,
                project=project,
                agent=agent,
                models=models,
            )
        ]
        return applying, received

    def answer_hook(self, event: str, body: dict[str, Any]) -> dict[str, Any]:
        session = body.get("session_id")
        cwd = body.get("cwd")
        # The hook needs no usage summary: only whose session it is (O(1), not O(calls)).
        found = session if isinstance(session, str) else None
        where = cwd if isinstance(cwd, str) else None
        known = self.tally.owner(found) if found else None
        # A session with no call read yet: its agent process may still name its profile.
        ref = None if known else next((a for a in self.agents() if a.session == found), None)
        profile, agent, project = self._owner(known, ref, where)
        return decide(event, self._applying(found, profile, project, agent)[0])


class _Handler(BaseHTTPRequestHandler):
    server: _Server | _TcpServer
    protocol_version = "HTTP/1.0"

    def _allowed(self) -> bool:
        """The unix socket is guarded by its mode; the TCP port by the token."""
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        self._send(
            401, {"error": "missing or wrong token: send Authorization: Bearer <hook.token>"}
        )
        return False

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        if not self._allowed():
            return
        url = urlsplit(self.path)
        if url.path != "/session":
            self._send(404, {"error": f"no such path {url.path!r}; try /session"})
            return
        query = parse_qs(url.query)
        try:
            pids = [int(p) for p in query.get("pid", [])]
        except ValueError:
            self._send(400, {"error": "pid must be an integer"})
            return
        session = query.get("session", [None])[0]
        cwd = query.get("cwd", [None])[0]
        self._send(200, self.server.queries.answer_session(session, pids, cwd))

    def do_POST(self) -> None:  # noqa: N802
        if not self._allowed():
            return
        url = urlsplit(self.path)
        if not url.path.startswith("/hook/"):
            self._send(404, {"error": f"no such path {url.path!r}; try /hook/EVENT"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._send(400, {"error": f"the body must be 0..{MAX_BODY} bytes"})
            return
        try:
            body = orjson.loads(self.rfile.read(length) or b"{}")
        except orjson.JSONDecodeError as exc:
            self._send(400, {"error": f"the hook input is not JSON: {exc}"})
            return
        if not isinstance(body, dict):
            self._send(400, {"error": "the hook input is not a JSON object"})
            return
        self._send(200, self.server.queries.answer_hook(url.path[len("/hook/") :], body))

    def _send(self, status: int, data: dict[str, Any]) -> None:
        payload = orjson.dumps(data)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        log.debug("query: " + format, *args)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    token: str | None = None

    def __init__(self, path: Path, queries: NodeQueries) -> None:
        self.queries = queries
        super().__init__(str(path), _Handler)


class _TcpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, token: str, queries: NodeQueries) -> None:
        self.queries = queries
        self.token: str | None = token
        super().__init__(("127.0.0.1", port), _Handler)


def hook_token(state_dir: Path) -> str:
    """The `http` hooks' token: made once (mode 600), read by whoever installs the hooks."""
    path = state_dir / TOKEN_NAME
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    return path.read_text().strip()


class QueryService:
    """Serves `queries` on `state_dir/query.sock` (or, given a port, on 127.0.0.1:port behind
    the token) on a thread until `close`."""

    def __init__(self, state_dir: Path, queries: NodeQueries, port: int | None = None) -> None:
        self.path = state_dir / SOCKET_NAME
        self._server: _Server | _TcpServer
        if port is not None:
            self._server = _TcpServer(port, hook_token(state_dir), queries)
        else:
            self.path.unlink(missing_ok=True)  # a previous daemon's (we hold the state dir lock)
            # Made with mode 600 from the start: no moment in which another user can connect.
            old = os.umask(0o177)
            try:
                self._server = _Server(self.path, queries)
            finally:
                os.umask(old)
        self._thread = threading.Thread(
            target=named("queries", lambda: self._server.serve_forever(SERVE_POLL_S)),
            name="queries",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        # shutdown() waits for the serving loop to see its flag, which it looks at after each
        # select(): a connection of our own ends that select now, not SERVE_POLL_S later.
        stopping = threading.Thread(target=self._server.shutdown, daemon=True)
        stopping.start()
        while stopping.is_alive():
            self._poke()
            stopping.join(0.05)
        self._server.server_close()
        if isinstance(self._server, _Server):  # the token stays: the installed hooks send it
            self.path.unlink(missing_ok=True)

    def _poke(self) -> None:
        family = socket.AF_UNIX if isinstance(self._server, _Server) else socket.AF_INET
        with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(self._server.server_address)
