"""The demo's webhook receiver: where the demo hub's alerts land, as they would on a team's
endpoint. A small HTTP server on loopback (a thread of the demo's process) that checks each
delivery's Standard Webhooks signature with the sink's secret, keeps each alert once (by
`webhook-id`: a retry carries the same one), appends what it accepted to a journal file and
tells the demo (`on_delivery`), which puts it in the feed. The journal's ids count as kept
at the next start in the same directory.

A request whose signature does not verify is answered 401 (the hub dead-letters it: a wrong
secret does not heal by retrying) and is neither kept nor told.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from hub.alerts.signing import PREFIX, read_webhook_secret, signature

log = logging.getLogger(__name__)

TOLERANCE_S: Final = 300  # the specification's replay window for webhook-timestamp
MAX_BODY: Final = 1 << 20
STOP_WAIT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One alert the receiver accepted (its first verified arrival)."""

    webhook_id: str
    at: float  # when it arrived
    alert: Mapping[str, Any]  # the body's `data`: id, kind, scope, severity, text, evidence


def write_secret(path: Path) -> Path:
    """A `whsec_` secret file, mode 600, unless one is there (a re-run keeps it)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(f"{PREFIX}{key}\n")
    return path


def verified(secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> bool:
    """Whether a request carries a valid Standard Webhooks signature of `body`, sent within
    the tolerance (any of the space-separated `v1,` signatures may match)."""
    msg_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(now - int(stamp)) > TOLERANCE_S:
        return False
    expected = signature(secret, msg_id, int(stamp), body).encode()
    given = headers.get("webhook-signature", "").split()
    return any(hmac.compare_digest(expected, s.encode()) for s in given)


class DemoWebhook:
    """`start()` listens on 127.0.0.1 (a free port: `url`); `stop()` closes the port and
    ends the thread. Accepted deliveries go to `journal` (one JSON line each: the headers and
    the body as received, so anyone can verify them again) and to `on_delivery`."""

    def __init__(
        self,
        secret_file: Path,
        journal: Path,
        on_delivery: Callable[[Delivery], None] = lambda _delivery: None,
    ) -> None:
        self.secret = read_webhook_secret(secret_file)
        self.journal = journal
        self.on_delivery = on_delivery
        self.rejected = 0
        self._seen: dict[str, Delivery] = {}  # this run's
        self._earlier = _journaled_ids(journal)  # a re-run in the same dir: told already
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/alerts"

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._seen.values())

    def start(self) -> DemoWebhook:
        self.journal.parent.mkdir(parents=True, exist_ok=True)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="demo-webhook"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Idempotent: stop serving, close the port, end the thread."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(STOP_WAIT_S)

    def receive(self, headers: Mapping[str, str], body: bytes) -> int:
        """Judge one request; returns the HTTP status to answer."""
        if not verified(self.secret, headers, body, time.time()):
            with self._lock:
                self.rejected += 1
            log.warning("demo webhook: a request without a valid signature was refused")
            return 401
        try:
            alert = json.loads(body)["data"]
        except (ValueError, KeyError, TypeError):
            return 400
        msg_id = headers["webhook-id"]
        delivery = Delivery(msg_id, time.time(), alert)
        with self._lock:
            if msg_id in self._seen or msg_id in self._earlier:
                return 204  # a retry of one already kept: acknowledged, not told again
            self._seen[msg_id] = delivery
            with open(self.journal, "a", encoding="utf-8") as out:
                record = {"at": delivery.at, "headers": dict(headers), "body": body.decode()}
                out.write(json.dumps(record) + "\n")
        try:
            self.on_delivery(delivery)
        except Exception:
            log.exception("demo webhook: telling the demo about %s failed", msg_id)
        return 204


def _journaled_ids(journal: Path) -> set[str]:
    """The webhook-ids an earlier run kept (a demo killed before the hub heard its 204 gets
    the alert again, with the same id, in the next run)."""
    ids: set[str] = set()
    with contextlib.suppress(OSError):
        for line in journal.read_text(encoding="utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                ids.add(str(json.loads(line)["headers"]["webhook-id"]))
    return ids


def _handler(receiver: DemoWebhook) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("content-length", "0"))
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self._answer(413)
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            self._answer(receiver.receive(headers, body))

        def _answer(self, status: int) -> None:
            with contextlib.suppress(OSError):
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
            pass  # the demo's log is the hub's: one line per request would drown it

    return Handler
