"""The node's two connections to the hub (research/stack.md §1): events out, commands in.

`EventSender` (Req0, dials the hub): sends the oldest outbox rows as one signed batch, waits for
the hub's ack (sent only after the hub's store committed) and only then prunes them. A timeout or
a dead hub means: send the same rows again later. A batch goes at least every `heartbeat`
seconds, empty if need be, carrying the node's hello (profiles, processes, reader status), so
the hub can tell a quiet node from a dead one.

`CommandResponder` (Respondent0, dials the hub): every node hears every survey; a frame for
another node is ignored without a word. A frame for this node is verified (key, time, replay),
executed once per command id (a repeat gets the first answer again) and answered.

Both run in plain threads with pynng's blocking calls: measured 3x faster than its asyncio API,
and independent of whatever else the daemon does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pynng

from node_agent.outbox import Outbox, OutboxDiskFull
from node_agent.outcomes.watch import OutcomeWatch, outcome_bytes
from node_agent.recovery import Backoff
from shared.session_notes import SessionNote, notes_from_list
from shared.verdicts import Verdict, VerdictError, verdicts_from_list
from shared.wire import (
    MAX_FRAME,
    TO_NODE,
    FrameError,
    RejectLog,
    ReplayGuard,
    batch_body,
    events_budget,
    open_frame,
    peek_node,
    seal,
)

log = logging.getLogger(__name__)

HEARTBEAT: Final = 5.0  # seconds between batches when there is nothing to send
# Bounded so that a stop (SIGTERM) is honoured within systemd's TimeoutStopSec even while the
# hub is away; a hub commits a full batch in tens of milliseconds.
SEND_TIMEOUT_MS: Final = 2_000
REPLY_TIMEOUT_MS: Final = 5_000
# The command link's receive waits until a survey comes or `close()`; this bound only keeps a
# forgotten close from blocking for ever (each timeout is a wake-up of an idle node).
RECV_SAFETY_MS: Final = 60_000
BATCH_EVENTS: Final = 500
BATCH_BYTES: Final = 512 << 10  # well under the frame cap, with room for the hello
# Connected, yet this many batches in a row got no answer: the hub drops our frames. It tells
# no one why (a forger must learn nothing), and a wrong key is the usual cause.
SILENT_TRIES: Final = 3


@dataclass(frozen=True, slots=True)
class LinkConfig:
    node: str
    key: bytes
    tls: pynng.TLSConfig | None = None


def _socket_options() -> dict[str, Any]:
    return {
        "recv_max_size": MAX_FRAME,
        "reconnect_time_min": 250,
        "reconnect_time_max": 5000,
    }


def _keepalive(sock: pynng.Socket) -> None:
    # A dead hub behind a half-open connection shows nothing until TCP keepalive fires.
    sock.tcp_keepalive = True


class EventSender:
    """Drains the outbox to the hub; one instance per daemon, run in its own thread."""

    def __init__(
        self,
        link: LinkConfig,
        address: str,
        outbox_path: Path,
        hello: Callable[[], Mapping[str, Any]],
        *,
        wake: threading.Event,
        stop: threading.Event,
        heartbeat: float = HEARTBEAT,
        on_verdicts: Callable[[list[Verdict]], None] | None = None,
        on_notes: Callable[[list[SessionNote]], None] | None = None,
        outcomes: OutcomeWatch | None = None,
    ) -> None:
        self.link = link
        self.on_verdicts = on_verdicts  # each ack's budget verdicts for this node
        self.on_notes = on_notes  # each ack's detector findings on this node's sessions
        self.outcomes = outcomes  # what sessions produced, carried by the batches
        self.address = address
        self.outbox_path = outbox_path
        self.hello = hello
        self.wake = wake
        self.stop = stop
        self.heartbeat = heartbeat
        self.connected = False
        self.sent_batches = 0
        self.sent_events = 0
        self.last_ack: float | None = None
        self.last_error: str | None = None
        self.stalled: str | None = None  # the disk is full: the outbox cannot note a send
        self.unanswered = 0  # batches in a row the hub received but did not answer

    def run(self) -> None:
        options = _socket_options()
        if self.link.tls is not None:
            options["tls_config"] = self.link.tls
        with (
            Outbox(self.outbox_path) as outbox,
            pynng.Req0(
                send_timeout=SEND_TIMEOUT_MS, recv_timeout=REPLY_TIMEOUT_MS, **options
            ) as sock,
        ):
            _keepalive(sock)
            # No resends by nng: a batch unanswered within REPLY_TIMEOUT_MS is sent again by
            # this loop. nng's resend timer (60 s, never reached) woke its timer thread ~3 times
            # a second after each heartbeat: a fifth of an idle node's CPU.
            sock.resend_time = -1
            sock.dial(self.address, block=False)
            last_sent = 0.0
            disk = Backoff()
            while not self.stop.is_set():
                # Cleared before the outbox is looked at: a commit after the look sets it
                # again, so the wait below cannot miss it (and need not wake to look again).
                self.wake.clear()
                if self.stop.is_set():  # set after the look above: its wake-up was cleared
                    break
                # Idle: sleep until the reader commits (wake) or the next heartbeat is due.
                due = last_sent + self.heartbeat - time.monotonic()
                if due > 0 and outbox.pending() == 0:
                    self.wake.wait(due)
                    continue
                try:
                    if self._send_one(outbox, sock):
                        last_sent = time.monotonic()
                    elif not self.stop.is_set():
                        self.stop.wait(0.5)  # the hub is away: the same rows go again
                    if disk.failures:
                        disk.succeeded()
                        self.stalled = None
                except OutboxDiskFull as exc:
                    # Handing out or pruning a batch writes to the outbox; wait for room (an
                    # acked batch that could not be pruned goes again: the hub drops it).
                    wait = disk.failed(str(exc))
                    if disk.failures == 1:
                        log.warning("%s; sending waits and tries again", exc)
                    self.stalled = str(exc)
                    self.stop.wait(wait)

    def _send_one(self, outbox: Outbox, sock: pynng.Req0) -> bool:
        """The next batch (or a heartbeat) out and acknowledged; False: send it again later."""
        hello = dict(self.hello())
        outcomes = self.outcomes.take() if self.outcomes is not None else []
        room = events_budget(self.link.node, outbox.stream_id, hello) - outcome_bytes(outcomes)
        budget = min(BATCH_BYTES, room)
        batch = outbox.next_batch(max_events=BATCH_EVENTS, max_bytes=budget)
        if batch is None:  # a heartbeat: an empty range just past what was acked
            acked = outbox.stats()["acked_seq"]
            body = batch_body(outbox.stream_id, acked + 1, acked, [], hello, outcomes)
        else:
            body = batch_body(
                outbox.stream_id, batch.seq0, batch.seq1, batch.events, hello, outcomes
            )
        if not self._exchange(sock, body):
            return False
        if self.outcomes is not None:
            self.outcomes.acked(outcomes)
        if batch is not None:
            outbox.ack(batch.seq1)
            self.sent_batches += 1
            self.sent_events += len(batch.events)
        return True

    def _exchange(self, sock: pynng.Req0, body: dict[str, Any]) -> bool:
        """One batch out, its ack back; False when it must be sent again."""
        frame = seal(self.link.key, self.link.node, "batch", body)
        try:
            sock.send(frame)  # times out only while no connection is up
        except pynng.Timeout:
            self._down("cannot reach the hub")
            return False
        except pynng.NNGException as exc:
            self._down(f"link error: {exc}")
            return False
        try:
            reply = sock.recv()
        except pynng.Timeout:
            self.unanswered += 1
            self._down(self._silence())
            return False
        except pynng.NNGException as exc:
            self._down(f"link error: {exc}")
            return False
        self.unanswered = 0
        try:
            answer = open_frame(reply, self._key_for, kinds=TO_NODE)
        except FrameError as exc:
            self._down(f"bad answer from the hub: {exc}")
            return False
        if answer.kind != "ack" or not isinstance(answer.body, dict):
            self._down(f"unexpected {answer.kind!r} answer from the hub")
            return False
        if "err" in answer.body:
            self._down(f"the hub refused the batch: {answer.body['err']}")
            return False
        if answer.body.get("seq1") != body.get("seq1"):
            self._down("the hub acknowledged another batch")
            return False
        if not self.connected:
            log.info("connected to the hub at %s", self.address)
        self.connected = True
        self.last_ack = time.time()
        if self.on_verdicts is not None:
            self._take_verdicts(answer.body.get("v", []))
        if self.on_notes is not None:
            self.on_notes(notes_from_list(answer.body.get("f", [])))
        self.last_error = None
        return True

    def _take_verdicts(self, data: object) -> None:
        """A signed ack's verdicts; a malformed list is logged and read as none."""
        assert self.on_verdicts is not None
        try:
            verdicts = verdicts_from_list(data)
        except VerdictError as exc:
            log.warning("the hub's verdicts are malformed (%s): read as none", exc)
            verdicts = []
        self.on_verdicts(verdicts)

    def _key_for(self, node: str) -> bytes | None:
        return self.link.key if node == self.link.node else None

    def _silence(self) -> str:
        if self.unanswered < SILENT_TRIES:
            return "no answer from the hub"
        return (
            f"hub does not answer: is the node key right? (fleet-hub enroll {self.link.node}); "
            "or is this machine's clock minutes off?"
        )

    def _down(self, reason: str) -> None:
        if self.connected or self.last_error != reason:
            log.warning("hub at %s: %s", self.address, reason)
        self.connected = False
        self.last_error = reason


Execute = Callable[[Mapping[str, Any]], dict[str, Any]]


class CommandResponder:
    """Answers the hub's commands meant for this node; run in its own thread."""

    REMEMBER: Final = 1000  # answers kept for repeated command ids

    def __init__(
        self,
        link: LinkConfig,
        address: str,
        execute: Execute,
        *,
        stop: threading.Event,
        max_skew: float = 300.0,
    ) -> None:
        self.link = link
        self.address = address
        self.execute = execute
        self.stop = stop
        self.max_skew = max_skew
        self.rejects = RejectLog("commands")
        self.guard = ReplayGuard(window=2 * max_skew)
        self.answers: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.handled = 0
        self._closing = threading.Lock()
        self._closed = False
        self._sock: pynng.Respondent0 | None = None

    def close(self) -> None:
        """End `run` now (its receive waits for the hub's next survey, not for a timeout)."""
        with self._closing:
            self._closed = True
            if self._sock is not None:
                self._sock.close()

    def run(self) -> None:
        options = _socket_options()
        if self.link.tls is not None:
            options["tls_config"] = self.link.tls
        with pynng.Respondent0(recv_timeout=RECV_SAFETY_MS, **options) as sock:
            with self._closing:
                if self._closed:
                    return
                self._sock = sock
            _keepalive(sock)
            sock.dial(self.address, block=False)
            while not self.stop.is_set():
                try:
                    data = sock.recv()
                except pynng.Timeout:
                    continue
                except pynng.Closed:
                    return  # close(): the daemon stops
                except pynng.NNGException as exc:
                    log.warning("command link: %s", exc)
                    self.stop.wait(0.5)
                    continue
                answer = self.handle(data)
                if answer is not None:
                    try:
                        sock.send(answer)
                    except pynng.NNGException as exc:
                        log.warning("could not answer the hub: %s", exc)

    def handle(self, data: bytes) -> bytes | None:
        """The signed answer to one survey, or None when it gets none."""
        if peek_node(data) not in (self.link.node, None):
            return None  # a command for another node: not ours to answer or count
        try:
            frame = open_frame(data, self._key_for, max_skew=self.max_skew, kinds=TO_NODE)
        except FrameError as exc:
            self.rejects.reject(exc.reason, self.address, str(exc))
            return None
        if frame.kind != "cmd" or not isinstance(frame.body, dict):
            self.rejects.reject("kind", self.address, f"unexpected {frame.kind!r} frame")
            return None
        command_id = str(frame.body.get("id") or frame.id)
        known = self.answers.get(command_id)
        if not self.guard.check_and_remember(frame.node, frame.id, frame.ts):
            if known is None:
                self.rejects.reject("replay", self.address, f"replayed command {command_id}")
                return None
            self.rejects.reject("replay", self.address, f"repeated command {command_id}")
        if known is None:
            known = self.execute(frame.body)
            known["id"] = command_id
            self.answers[command_id] = known
            while len(self.answers) > self.REMEMBER:
                self.answers.popitem(last=False)
            self.handled += 1
        return seal(self.link.key, self.link.node, "reply", known)

    def _key_for(self, node: str) -> bytes | None:
        return self.link.key if node == self.link.node else None
