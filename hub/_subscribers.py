"""Who is told about changes: the hub service's and a hub mirror's subscribers alike."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
_C = TypeVar("_C")


class Subscribers(Generic[_C]):
    """Thread-safe; a subscriber is called on the publishing thread, and one that fails is
    logged without keeping the change from the others."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: list[Callable[[_C], None]] = []

    def add(self, subscriber: Callable[[_C], None]) -> Callable[[], None]:
        """Add `subscriber`; returns the function that removes it."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def publish(self, change: _C) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for subscriber in subscribers:
            try:
                subscriber(change)
            except Exception:
                log.exception("a subscriber failed")
