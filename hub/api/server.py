"""Runs the API app on uvicorn in a thread of its own, beside the hub's receiver.

The socket is bound here, before uvicorn starts, so that a taken port is a clear error at once
and port 0 gives a free port whose number `url` tells.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import uvicorn
from fastapi import FastAPI

from hub.config import split_listen

STOP_GRACE_S: Final = 3.0  # open streams are cut after this when the hub stops


class ApiServer:
    def __init__(self, app: FastAPI, listen: str, tls_cert_key_file: Path | None = None) -> None:
        host, port = split_listen(listen)
        self.tls = tls_cert_key_file is not None
        self._sock = _bind(host, port)
        bound = self._sock.getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        self.url = f"{'https' if self.tls else 'http'}://{shown}:{bound[1]}"
        cert = str(tls_cert_key_file) if tls_cert_key_file is not None else None
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=int(STOP_GRACE_S),
                ssl_certfile=cert,
                ssl_keyfile=cert,
                lifespan="on",
            )
        )
        self._thread = threading.Thread(target=self._run, name="api", daemon=True)
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Serve, returning once the server accepts requests; raises OSError when it cannot."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise OSError(f"the API did not start on {self.url}: {self.error or 'timeout'}")
            time.sleep(0.02)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 (told by start(), not lost in a thread)
            self.error = exc

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._server.serve(sockets=[self._sock])

    def stop(self, before: Callable[[], None] | None = None) -> None:
        """Stop serving; `before` runs on the server's loop first (e.g. to end the open
        streams cleanly rather than have them cut when the grace period is over)."""
        if before is not None and self._loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self._loop.call_soon_threadsafe(before)
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(STOP_GRACE_S + 5)
        self._sock.close()


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    # IPPROTO_TCP named: asyncio turns Nagle off (TCP_NODELAY) only on accepted sockets whose
    # proto says TCP, and with Nagle on each answer on a kept-alive connection waits out the
    # client's delayed ACK (40 ms on Linux).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(False)
    return sock
