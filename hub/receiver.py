"""The hub's event endpoint (Rep0, listening): verify each batch, hand it to the core, answer.

A valid batch is answered with an ack only after `handle` returned, i.e. after the store
committed it. A forged, replayed, oversized or malformed frame gets no answer at all: it is
counted, logged once per origin and reason, and the loop goes on serving. (nng itself drops a
frame above `recv_max_size` and closes that pipe; the sender's own cap keeps honest nodes below.)

Replays: only a message id not seen before reaches the store, so an old batch sent again keeps
no dead node looking alive. A node whose ack was lost seals its rows again (a new id).

Wrong keys: a node with a wrong key sees only silence. The first frame that fails
authentication under a node name is reported through `on_bad_key` (the hub's feed says so),
once per name, for at most `MAX_BAD_KEY_NAMES` names (anyone may claim any name).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, Final

import pynng

from hub._peer import peer_of
from shared.wire import (
    MAX_FRAME,
    TO_HUB,
    Frame,
    FrameError,
    RejectLog,
    ReplayGuard,
    open_frame,
    seal,
)

log = logging.getLogger(__name__)

KeyFor = Callable[[str], bytes | None]
Handle = Callable[[Frame], dict[str, Any]]
MAX_BAD_KEY_NAMES: Final = 50


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
        on_bad_key: Callable[[str], None] | None = None,
    ) -> None:
        self.address = address
        self.key_for = key_for
        self.handle = handle
        self.stop = stop
        self.tls = tls
        self.max_skew = max_skew
        self.max_size = max_size
        self.rejects = RejectLog("events")
        # Remembers ids for twice the accepted skew: an older frame is refused as stale.
        self.replays = ReplayGuard(window=2 * max_skew)
        self.on_bad_key = on_bad_key
        self.bad_key_names: set[str] = set()
        self.frames = 0
        self.url = address
        self.ready = threading.Event()
        self.error: pynng.NNGException | None = None  # why it could not listen

    def run(self) -> None:
        options: dict[str, Any] = {"recv_max_size": self.max_size, "recv_timeout": 250}
        if self.tls is not None:
            options["tls_config"] = self.tls
        try:
            sock = pynng.Rep0(**options)
            # The listener's url carries the real port when the address asked for port 0.
            self.url = sock.listen(self.address).url
        except pynng.NNGException as exc:
            # Handed to the thread that started us, which says it once: no thread traceback.
            self.error = exc
            self.ready.set()
            return
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
                answer = self.answer(message.bytes, peer_of(message))
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
            if exc.reason == "bad_mac" and exc.node is not None:
                self._bad_key(exc.node)
            return None
        if frame.kind != "batch" or not isinstance(frame.body, dict):
            self.rejects.reject("kind", origin, f"unexpected {frame.kind!r} frame")
            return None
        if not self.replays.check_and_remember(frame.node, frame.id, frame.ts):
            self.rejects.reject("replay", origin, f"frame {frame.id} from {frame.node!r} again")
            return None
        self.frames += 1
        try:
            body = self.handle(frame)
        except ValueError as exc:  # a batch that is signed but not well formed
            self.rejects.reject("malformed", origin, str(exc))
            body = {"err": str(exc)}
        except Exception as exc:  # noqa: BLE001 (one batch must never stop the receiver)
            # Not acknowledged, so the node sends it again; every other node is still served.
            # Said to the node: silence would read as a wrong key in its log.
            why = f"{type(exc).__name__}: {exc}"
            self.rejects.reject("failed", origin, f"{frame.node}: {why}")
            body = {"err": f"the hub could not store this batch ({why}); send it again"}
        key = self.key_for(frame.node)
        assert key is not None  # open_frame verified with it
        return seal(key, frame.node, "ack", body)

    def _bad_key(self, node: str) -> None:
        if node in self.bad_key_names or len(self.bad_key_names) >= MAX_BAD_KEY_NAMES:
            return
        self.bad_key_names.add(node)
        if self.on_bad_key is not None:
            try:
                self.on_bad_key(node)
            except Exception:
                log.exception("reporting a wrong key for %s failed", node)
