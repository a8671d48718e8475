"""Delivery: a dispatcher thread claims due deliveries from the outbox and hands them to a few
worker threads (`concurrency`), so a slow receiver holds up only its own delivery, never
ingest (the outbox has its own connection and short transactions) nor other sinks beyond the
slots it occupies.

Outcomes (Standard Webhooks, with the breeze pattern for permanent errors): a 2xx is delivered;
410 Gone and any other 4xx but 408, 425 and 429 are dead at once (the receiver refuses this
message for good); 3xx, 408, 425, 429, 5xx, timeouts and connection errors are retried after
`retry_first` * 2^(attempt-1) seconds, at most `retry_max`, ±20 % jitter, and not before the
receiver's Retry-After; past `give_up_after` the delivery is dead-lettered.
"""

from __future__ import annotations

import logging
import queue
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from hub.alerts.formats import parcel
from hub.alerts.outbox import Claim, Outbox
from hub.alerts.program import run_program
from hub.alerts.settings import AlertSettings, SinkSettings, SinkType
from hub.alerts.signing import read_webhook_secret, webhook_headers, webhook_id

log = logging.getLogger(__name__)

TICK_S: Final = 0.5  # the longest the dispatcher sleeps when nothing tells it of new work
JITTER: Final = 0.2
RETRYABLE_4XX: Final = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    retry_after: float | None = None  # seconds, from the Retry-After header


class DeliveryFailed(Exception):
    """No answer: a timeout, a refused or reset connection (the message says which)."""


class HttpPost(Protocol):
    def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Answer: ...


def verdict(answer: Answer) -> tuple[bool, bool]:
    """(delivered, worth retrying) for an HTTP answer."""
    if 200 <= answer.status < 300:
        return True, False
    permanent = answer.status == 410 or (
        400 <= answer.status < 500 and answer.status not in RETRYABLE_4XX
    )
    return False, not permanent


def sink_secrets(settings: AlertSettings) -> dict[str, bytes | None]:
    """Every sink's signing secret, read before the hub starts: a missing one, or one that
    others can read, is a ConfigError (exit 2) rather than a delivery that fails for a day."""
    return {
        s.name: read_webhook_secret(s.secret_file) if s.secret_file else None
        for s in settings.sinks
    }


class Courier:
    def __init__(
        self,
        outbox: Outbox,
        settings: AlertSettings,
        hub_name: str,
        post: HttpPost,
        secrets: Mapping[str, bytes | None],
        *,
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        """`secrets`: each sink's signing secret (`sink_secrets`)."""
        self.outbox = outbox
        self.settings = settings
        self.hub_name = hub_name
        self.post = post
        self.clock = clock
        self.jitter = jitter
        self.secrets = dict(secrets)
        self._stop = threading.Event()
        self._work: queue.Queue[Claim] = queue.Queue()
        self._busy = 0
        self._busy_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        recovered = self.outbox.recover_in_flight()
        if recovered:
            log.info(
                "%d alert deliveries were in flight when the hub stopped: sending again", recovered
            )
        self._spawn("alerts-dispatch", self._dispatch)
        for i in range(self.settings.concurrency):
            self._spawn(f"alerts-send-{i}", self._send_loop)

    def stop(self) -> None:
        """Stop claiming; a delivery still in flight is sent again at the next start (with
        the same webhook-id: the receiver dedupes)."""
        self._stop.set()
        self.outbox.due.set()
        for thread in self._threads:
            thread.join(timeout=1.0)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            self.outbox.due.clear()
            try:
                wait = self._hand_out()
            except sqlite3.Error as exc:
                log.warning("alert outbox: %s (trying again)", exc)
                wait = TICK_S
            self.outbox.due.wait(wait)

    def _hand_out(self) -> float:
        """Claim what is due into the free slots; returns how long to wait. Reads first, so an
        idle outbox never takes the store's write lock."""
        with self._busy_lock:
            free = self.settings.concurrency - self._busy
        if free <= 0:
            return TICK_S  # a worker that finishes sets `due`
        due = self.outbox.next_due()
        if due is not None and due <= self.clock():
            for claim in self.outbox.claim(free):
                with self._busy_lock:
                    self._busy += 1
                self._work.put(claim)
            return 0.0  # look again: more may be due, or the slots are full
        return TICK_S if due is None else min(TICK_S, max(0.0, due - self.clock()))

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                claim = self._work.get(timeout=TICK_S)
            except queue.Empty:
                continue
            try:
                self._deliver(claim)
            except sqlite3.ProgrammingError:
                return  # the outbox closed under us (the hub stops): recovered at next start
            except Exception:
                log.exception(
                    "delivering alert %s to %s failed unexpectedly", claim.finding.id, claim.sink
                )
            finally:
                with self._busy_lock:
                    self._busy -= 1
                self.outbox.due.set()

    def _deliver(self, claim: Claim) -> None:
        sink = self.settings.sink(claim.sink)
        assert sink is not None, "the outbox claims only configured sinks"
        body, extra = parcel(sink.type, claim.finding, claim.raised, self.hub_name)
        headers = {
            **extra,
            **webhook_headers(
                webhook_id(claim.finding.id), int(self.clock()), body, self.secrets[sink.name]
            ),
        }
        delivered, retry, result, retry_after = self._attempt(sink, body, headers)
        retry_at = self.clock() + self.delay(claim.attempt, retry_after) if retry else None
        state = self.outbox.settle(claim, result, delivered=delivered, retry_at=retry_at)
        if state == "dead":
            log.warning(
                "alert %s to %s dead-lettered after %d attempts: %s",
                claim.finding.id,
                sink.name,
                claim.attempt,
                result,
            )

    def _attempt(
        self, sink: SinkSettings, body: bytes, headers: dict[str, str]
    ) -> tuple[bool, bool, str, float | None]:
        """(delivered, worth retrying, result, Retry-After)."""
        if sink.type is SinkType.PROGRAM:
            ok, result = run_program(sink.command, body, headers, sink.timeout)
            return ok, not ok, result, None
        assert sink.url is not None
        try:
            answer = self.post(sink.url, body, headers, sink.timeout)
        except DeliveryFailed as exc:
            return False, True, str(exc), None
        delivered, retry = verdict(answer)
        return delivered, retry, f"HTTP {answer.status}", answer.retry_after

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds before retrying after failed attempt number `attempt` (1, 2, ...)."""
        s = self.settings
        base = min(s.retry_first * 2.0 ** min(attempt - 1, 60), s.retry_max)
        base *= 1.0 + JITTER * (2.0 * self.jitter() - 1.0)
        if retry_after is not None:
            base = max(base, min(retry_after, s.retry_max))
        return base
