"""The hub's event endpoint (Rep0, listening): verify each batch, hand it to the core, answer.

A valid batch is answered with an ack only after `handle` returned, i.e. after the store
committed it. A forged, replayed, oversized or malformed frame gets no answer at all: it is
counted, logged once per origin and reason, and the loop goes on serving. (nng itself drops a
frame above `recv_max_size` and closes that pipe; the sender's own cap keeps honest nodes below.)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pynng

from shared.wire import MAX_FRAME, TO_HUB, Frame, FrameError, RejectLog, open_frame, seal

log = logging.getLogger(__name__)

KeyFor = Callable[[str], bytes | None]
Handle = Callable[[Frame], dict[str, Any]]


class Receiver:
    def __init__(
        self,
        address: str,
        key_for: KeyFor,
        handle: Handle,
        *,
        stop: threading.Event,
        tls: pynng.TLSConfig | None = None,
        max_skew: float = 300.0,
        max_size: int = MAX_FRAME,
    ) -> None:
        self.address = address
        self.key_for = key_for
        self.handle = handle
        self.stop = stop
        self.tls = tls
        self.max_skew = max_skew
        self.max_size = max_size
        self.rejects = RejectLog("events")
        self.frames = 0
        self.url = address
        self.ready = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        options: dict[str, Any] = {"recv_max_size": self.max_size, "recv_timeout": 250}
        if self.tls is not None:
            options["tls_config"] = self.tls
        try:
            sock = pynng.Rep0(**options)
            # The listener's url carries the real port when the address asked for port 0.
            self.url = sock.listen(self.address).url
        except pynng.NNGException as exc:
            self.error = f"cannot listen on {self.address}: {exc}"
            self.ready.set()
            raise
        self.ready.set()
        with sock:
            while not self.stop.is_set():
                try:
                    message = sock.recv_msg()
                except pynng.Timeout:
                    continue
                except pynng.NNGException as exc:
                    log.warning("event endpoint: %s", exc)
                    continue
                answer = self.answer(message.bytes, _origin(message))
                if answer is not None:
                    try:
                        sock.send(answer)
                    except pynng.NNGException as exc:
                        log.warning("could not acknowledge a batch: %s", exc)

    def answer(self, data: bytes, origin: str) -> bytes | None:
        """The signed ack for one request, or None when it is dropped."""
        try:
            frame = open_frame(
                data, self.key_for, max_size=self.max_size, max_skew=self.max_skew, kinds=TO_HUB
            )
        except FrameError as exc:
            self.rejects.reject(exc.reason, origin, str(exc))
            return None
        if frame.kind != "batch" or not isinstance(frame.body, dict):
            self.rejects.reject("kind", origin, f"unexpected {frame.kind!r} frame")
            return None
        self.frames += 1
        try:
            body = self.handle(frame)
        except ValueError as exc:  # a batch that is signed but not well formed
            self.rejects.reject("malformed", origin, str(exc))
            body = {"err": str(exc)}
        key = self.key_for(frame.node)
        assert key is not None  # open_frame verified with it
        return seal(key, frame.node, "ack", body)


def _origin(message: pynng.Message) -> str:
    try:
        return str(message.pipe.remote_address)
    except Exception:  # noqa: BLE001 (diagnostics only: a closed pipe has no address)
        return "unknown peer"
