"""A local webhook receiver for the alert tests: it verifies every request with the
independent `standardwebhooks` package and answers as it is told (ok, slow, fail, time out,
reset the connection), recording what arrived."""

from __future__ import annotations

import base64
import os
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

MODES = ("ok", "slow", "fail", "timeout", "reset")  # and "gone": 410


@dataclass
class Arrival:
    webhook_id: str
    alert_id: str
    at: float  # when it was answered 2xx
    body: object


@dataclass
class Receiver:
    secret: str  # whsec_...
    choose: Callable[[], str] = lambda: "ok"
    client_timeout: float = 1.0  # the sink's timeout: "slow" stays within, "timeout" beyond
    arrivals: list[Arrival] = field(default_factory=list)
    modes: Counter[str] = field(default_factory=Counter)
    unverified: list[str] = field(default_factory=list)
    raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)  # every verified one
    ids_per_alert: dict[str, set[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers, json_parse=False)
                except WebhookVerificationError as exc:
                    with receiver.lock:
                        receiver.unverified.append(str(exc))
                    self.send_response(400)
                    self.end_headers()
                    return
                try:
                    payload = orjson.loads(body)
                    alert = str(payload["data"]["id"])
                except (orjson.JSONDecodeError, KeyError, TypeError):  # Slack, ntfy: no id
                    payload, alert = {"raw": body.decode(errors="replace")}, "?"
                with receiver.lock:
                    receiver.raw.append((dict(headers), body))
                mode = receiver.choose()
                with receiver.lock:
                    receiver.modes[mode] += 1
                    receiver.ids_per_alert.setdefault(alert, set()).add(headers["webhook-id"])
                if mode == "reset":
                    # SO_LINGER 0: close() sends RST, the client sees a reset connection
                    self.connection.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                    self.connection.close()
                    self.close_connection = True
                    return
                if mode == "timeout":
                    time.sleep(receiver.client_timeout * 2)
                    self.close_connection = True
                    return  # the client gave up: nothing arrived
                if mode == "slow":
                    time.sleep(receiver.client_timeout * 0.4)
                status = {"fail": 503, "gone": 410}.get(mode, 200)
                self.send_response(status)
                if mode == "fail":
                    self.send_header("Retry-After", "0")
                self.send_header("content-length", "0")
                self.end_headers()
                if status == 200:
                    with receiver.lock:
                        receiver.arrivals.append(
                            Arrival(headers["webhook-id"], alert, time.time(), payload)
                        )

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def arrived(self) -> set[str]:
        with self.lock:
            return {a.alert_id for a in self.arrivals}


def write_secret(path: Path) -> str:
    """A fresh whsec_ secret in a mode-600 file; returns it."""
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def chaos(seed: int) -> Callable[[], str]:
    """Half the requests fail (an error status, a timeout or a reset), the rest arrive, half
    of those slowly."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def choose() -> str:
        with lock:
            return rng.choices(MODES, weights=(25, 25, 20, 10, 20))[0]

    return choose
