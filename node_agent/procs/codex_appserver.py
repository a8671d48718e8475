"""`turn/interrupt` to a Codex app-server the node can reach: the clean per-turn cancel
(research/agent-integration.md §5.3-5.4: `{"threadId", "turnId"}` -> `{}`, the turn then ends
with status `interrupted` and its rollout records `turn_aborted`).

An app-server reachable by the node listens on a unix socket (`codex app-server --listen
unix://PATH`) or a loopback WebSocket (`--listen ws://127.0.0.1:PORT`) without `--ws-auth`; it
speaks JSON-RPC over WebSocket on either (Codex 0.171.0), and a turn started by one client is
interrupted by another. One on stdio (the default, an IDE's) is reachable only by its client:
SIGINT would end the server and every thread in it, so the node does not interrupt it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Final

from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect, unix_connect

CONNECT_TIMEOUT: Final = 2.0
ANSWER_TIMEOUT: Final = 2.0
LOOPBACK: Final = ("127.0.0.1", "localhost", "[::1]")


class AppServerError(Exception):
    """The app-server could not be asked; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Listener:
    """Where an app-server listens, from its command line."""

    url: str  # as given: unix://PATH or ws://HOST:PORT
    path: str | None  # the unix socket's path
    authenticated: bool  # --ws-auth: it wants a token the node does not have


def is_app_server(cmdline: Sequence[str]) -> bool:
    return "app-server" in cmdline[1:]


def listener(cmdline: Sequence[str]) -> Listener | None:
    """The app-server's `--listen` address; None on stdio (the default) or `off`."""
    url = None
    for i, arg in enumerate(cmdline):
        if arg == "--listen" and i + 1 < len(cmdline):
            url = cmdline[i + 1]
        elif arg.startswith("--listen="):
            url = arg.partition("=")[2]
    if url is None or url in ("stdio://", "off"):
        return None
    authenticated = any(a == "--ws-auth" or a.startswith("--ws-auth=") for a in cmdline)
    if url.startswith("unix://"):
        path = url.removeprefix("unix://")
        return Listener(url, path or None, authenticated)
    return Listener(url, None, authenticated)


def reachable(where: Listener) -> str | None:
    """Why the node cannot ask this app-server, or None when it can."""
    if where.authenticated:
        return f"its {where.url} wants a --ws-auth token the node does not have"
    if where.url.startswith("unix://"):
        return None if where.path else "it listens on Codex's default socket, not named"
    host = where.url.removeprefix("ws://").rsplit(":", 1)[0]
    if not where.url.startswith("ws://") or host not in LOOPBACK:
        return f"{where.url} is not a loopback WebSocket"
    return None


class AppServerClient:
    """One JSON-RPC session with an app-server (initialize, then requests by id)."""

    def __init__(self, where: Listener) -> None:
        self._stack = ExitStack()  # the connection is a context manager (websockets 14+)
        try:
            if where.path is not None:
                opened = unix_connect(where.path, "ws://localhost/", open_timeout=CONNECT_TIMEOUT)
            else:
                opened = connect(where.url, open_timeout=CONNECT_TIMEOUT)
            self._ws: ClientConnection = self._stack.enter_context(opened)
        except (OSError, WebSocketException, TimeoutError) as exc:
            raise AppServerError(f"cannot connect to {where.url}: {exc}") from None
        self._next = 0
        self.url = where.url
        try:
            self.request("initialize", {"clientInfo": {"name": "fleetmeter", "version": "1"}})
            self._send({"jsonrpc": "2.0", "method": "initialized"})
        except AppServerError:
            self.close()
            raise

    def request(self, method: str, params: dict[str, Any]) -> Any:
        """The request's result; raises AppServerError on an error answer or none in time."""
        self._next += 1
        ask = self._next
        self._send({"jsonrpc": "2.0", "id": ask, "method": method, "params": params})
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw = self._ws.recv(timeout=left)
            except TimeoutError:
                break
            except WebSocketException as exc:
                raise AppServerError(f"{self.url}: {exc}") from None
            try:
                message = json.loads(raw)
            except ValueError:
                continue  # not JSON-RPC: not an answer to us
            if not isinstance(message, dict) or message.get("id") != ask:
                continue  # a notification, or another client's traffic
            if "error" in message:
                error = message["error"]
                text = error.get("message") if isinstance(error, dict) else error
                raise AppServerError(f"{method}: {str(text)[:200]}")
            return message.get("result")
        raise AppServerError(f"{method}: no answer from {self.url} in {ANSWER_TIMEOUT:g} s")

    def _send(self, message: dict[str, Any]) -> None:
        try:
            self._ws.send(json.dumps(message))
        except (OSError, WebSocketException) as exc:
            raise AppServerError(f"{self.url}: {exc}") from None

    def close(self) -> None:
        self._stack.close()


def interrupt_turns(where: Listener, turns: Sequence[tuple[str, str]]) -> list[str]:
    """`turn/interrupt` each (thread, turn); the failures, in words (empty: all answered)."""
    client = AppServerClient(where)
    failed: list[str] = []
    try:
        for thread, turn in turns:
            try:
                client.request("turn/interrupt", {"threadId": thread, "turnId": turn})
            except AppServerError as exc:
                failed.append(f"thread {thread}: {exc}")
    finally:
        client.close()
    return failed
