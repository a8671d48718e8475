"""The hub's command endpoint (Surveyor0, listening): one survey per command, one answer.

Every node dials in and hears every survey; only the addressed node can verify the frame (it is
signed with that node's key) and answers. Each command runs on its own nng context, so several
can be in flight at once. No answer within the timeout means "no answer from node" — the
command may or may not have run; sending it again with the same command id is safe, because a
node answers a repeated id from memory instead of acting twice.

Any peer that dials the port hears every survey: without TLS, commands are readable on the
network, which is why the hub refuses to listen on a non-loopback address in plain text unless
told to (`hub.config.check_plaintext`). A reply that fails its checks is logged under the peer
that sent it, never under the node it claims to answer for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pynng

from hub._peer import peer_of
from shared.wire import MAX_FRAME, TO_HUB, FrameError, RejectLog, open_frame, seal

log = logging.getLogger(__name__)

KeyFor = Callable[[str], bytes | None]


class CommandsClosed(RuntimeError):
    """The command endpoint is closed: the hub is stopping and cannot act now."""


class Commander:
    def __init__(
        self,
        address: str,
        key_for: KeyFor,
        *,
        timeout: float = 2.0,
        tls: pynng.TLSConfig | None = None,
    ) -> None:
        self.address = address
        self.key_for = key_for
        self.timeout = timeout
        options: dict[str, Any] = {
            "recv_max_size": MAX_FRAME,
            "survey_time": int(timeout * 1000),
        }
        if tls is not None:
            options["tls_config"] = tls
        self._sock = pynng.Surveyor0(**options)
        self.url: str = self._sock.listen(address).url  # the real port when asked for 0
        self._lock = threading.Lock()
        self.rejects = RejectLog("replies")

    def close(self) -> None:
        self._sock.close()

    def send(
        self, node: str, body: dict[str, Any], timeout: float | None = None
    ) -> dict[str, Any] | None:
        """Send one command to `node`; its answer, or None when none came within `timeout`
        seconds (at most the socket's own `timeout`: its survey time). Raises `CommandsClosed`
        when the endpoint is closed (the hub is stopping)."""
        key = self.key_for(node)
        if key is None:
            raise ValueError(f"no key for node {node!r}")
        body = dict(body)
        body.setdefault("id", uuid.uuid4().hex)
        wait = self.timeout if timeout is None else min(timeout, self.timeout)
        frame = seal(key, node, "cmd", body)
        try:
            with self._lock:  # contexts are cheap but their creation is not thread-safe in 0.9
                ctx = self._sock.new_context()
        except pynng.Closed as exc:
            raise CommandsClosed("the hub's command endpoint is closed") from exc
        try:
            # pynng 0.9 contexts take no per-context timeout, and closing one from another
            # thread races its own calls (a TypeError inside pynng: once a 500 under load), so
            # the wait is an asyncio timeout, which cancels the receive in this thread.
            return asyncio.run(self._survey(ctx, node, body["id"], frame, wait))
        finally:
            with contextlib.suppress(pynng.Closed):
                ctx.close()

    async def _survey(
        self, ctx: pynng.Context, node: str, command_id: object, frame: bytes, wait: float
    ) -> dict[str, Any] | None:
        deadline = time.monotonic() + wait
        try:
            await ctx.asend(frame)  # a survey's send does not wait for anyone
            # pynng swallows a cancel that comes as its call completes: the deadline is
            # checked again before every receive, so a lost cancel costs one turn at most
            while (left := deadline - time.monotonic()) > 0:
                async with asyncio.timeout(left):
                    message = await ctx.arecv_msg()
                if (reply := self._answer(message, node, command_id)) is not None:
                    return reply
        except (TimeoutError, pynng.Timeout, pynng.Closed):  # closed: the hub is stopping
            pass
        return None

    def _answer(
        self, message: pynng.Message, node: str, command_id: object
    ) -> dict[str, Any] | None:
        """The reply `message` carries from `node` to command `command_id`, else None (and
        anything else it is, logged under the peer that sent it)."""
        peer = peer_of(message)
        try:
            frame = open_frame(message.bytes, self.key_for, kinds=TO_HUB)
        except FrameError as exc:
            self.rejects.reject(exc.reason, peer, str(exc))
            return None
        if (
            frame.kind == "reply"
            and frame.node == node
            and isinstance(frame.body, dict)
            and frame.body.get("id") == command_id
        ):
            return frame.body
        self.rejects.reject(
            "unrelated", peer, f"a {frame.kind} from {frame.node!r} that answers no command"
        )
        return None
