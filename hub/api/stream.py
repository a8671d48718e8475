"""The live stream of changes: every `Update` the service publishes, fanned out to each
connected client as Server-Sent Events.

The service calls subscribers on the thread that made the change (the receiver's); the
broker hands each change to the server's event loop, which queues it for every client. A
client that falls `QUEUE_SIZE` changes behind is told to re-read (`event: resync`) rather
than holding the hub's memory hostage.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import orjson

from hub.api import views
from hub.service import FleetService, Update

QUEUE_SIZE: Final = 1000
KEEPALIVE_S: Final = 15.0  # a comment line this often: proxies keep the connection open
_CLOSED: Final = object()


class _Client:
    def __init__(self, scope: views.Scope) -> None:
        self.scope = scope
        self.queue: asyncio.Queue[object] = asyncio.Queue(QUEUE_SIZE)
        self.behind = False


class Broker:
    def __init__(self, service: FleetService) -> None:
        self.service = service
        self._clients: set[_Client] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._unsubscribe = self.service.subscribe(self._from_service)

    def close(self) -> None:
        """Unsubscribe and end every client's stream (on the server's loop)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        for client in self._clients:
            client.behind = False
            _put(client, _CLOSED)

    @property
    def clients(self) -> int:
        return len(self._clients)

    def _from_service(self, change: Update) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # RuntimeError: the loop closed meanwhile (the server is stopping)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._fan_out, change)

    def _fan_out(self, change: Update) -> None:
        for client in self._clients:
            if not client.behind:
                _put(client, change)

    async def events(self, scope: views.Scope) -> AsyncIterator[bytes]:
        client = _Client(scope)
        self._clients.add(client)
        try:
            yield _event("hello", {"keepalive_s": KEEPALIVE_S})
            while True:
                try:
                    item = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": keepalive\n\n"
                    continue
                if client.behind:  # what is queued is stale news: drop it, say read again
                    while item is not _CLOSED and not client.queue.empty():
                        item = client.queue.get_nowait()
                    client.behind = False
                    if item is not _CLOSED:
                        yield _event("resync", {"why": "too many changes queued: read again"})
                        continue
                if item is _CLOSED:
                    return
                assert isinstance(item, Update)
                if (data := views.update(item, client.scope)) is not None:
                    yield _event("update", data)
        finally:
            self._clients.discard(client)


def _put(client: _Client, item: object) -> None:
    try:
        client.queue.put_nowait(item)
    except asyncio.QueueFull:
        client.behind = True


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
