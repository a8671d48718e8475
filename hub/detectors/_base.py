"""What every detector shares: the call it is shown, its one method, bounded state, and the
model rates some detectors compare.

A detector sees each counted call once, as the hub stores it (`Call`), and returns the findings
that call completes. It keeps only bounded state per scope (`Recent`: least recently used
entries go first), so a hub that runs for months on thousands of sessions holds a fixed amount.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Final, Generic, Protocol, TypeVar

from hub.findings import Finding, Severity
from pricing import Billing, PriceBook
from shared.events import Agent, Tokens, UsageEvent

MAX_THREADS: Final = 20_000  # sessions (and subagent threads) a detector remembers at most
MAX_SCOPES: Final = 5_000  # machines, profiles and accounts a detector remembers at most

V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Call:
    """One counted call as a detector sees it: the event and its API-equivalent price
    (None when no price is known: it then adds no dollars anywhere)."""

    event: UsageEvent
    cost: Decimal | None
    # The conversation the call belongs to: a session's main thread or one subagent's (each
    # has a context and a cache of its own). Made once here: four detectors key on it.
    thread: str = field(init=False)

    def __post_init__(self) -> None:
        sub = self.event.subagent_id
        thread = self.event.session_id if sub is None else f"{self.event.session_id}/{sub}"
        object.__setattr__(self, "thread", thread)

    @property
    def session_scope(self) -> str:
        e = self.event
        parts = [f"machine={e.machine}"]
        if e.profile is not None:
            parts.append(f"profile={e.profile}")
        parts.append(f"session={e.session_id}")
        if e.subagent_id is not None:
            parts.append(f"subagent={e.subagent_id}")
        return ",".join(parts)


def thread_finding(
    kind: str, key: str, call: Call, start: float, text: str, evidence: dict[str, str]
) -> Finding:
    """A finding about `call`'s thread: id KIND:THREAD[:KEY] (stable for the happening), its
    session's scope, and a sentence that names the session and machine."""
    e = call.event
    return Finding(
        id=":".join(part for part in (kind, call.thread, key) if part),
        kind=kind,
        scope=call.session_scope,
        severity=Severity.WARNING,
        start=start,
        text=f"session {e.session_id[:8]} on {e.machine} {text}",
        evidence={"model": e.model, **evidence},
    )


class Detector(Protocol):
    kind: str

    def observe(self, call: Call) -> list[Finding]: ...


class Recent(Generic[V]):
    """A map that keeps the `limit` most recently used entries (bounded memory)."""

    def __init__(self, make: Callable[[], V], limit: int) -> None:
        self._make = make
        self._limit = limit
        self._items: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V:
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = self._make()
            if len(self._items) > self._limit:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return item

    def peek(self, key: str) -> V | None:
        return self._items.get(key)

    def items(self) -> list[tuple[str, V]]:
        return list(self._items.items())

    def __len__(self) -> int:
        return len(self._items)


class PerThread(Generic[V]):
    """A detector's state per thread (`Call.thread`), the least recently used forgotten."""

    def __init__(self, make: Callable[[], V]) -> None:
        self._threads: Recent[V] = Recent(make, MAX_THREADS)

    def state(self, call: Call) -> V:
        return self._threads.get(call.thread)


ModelRate = Callable[[str, float], Decimal | None]


class InputRates:
    """A model's list price of one million uncached input tokens on a day (None: unknown),
    cached per (model, day): what "a pricier model" and "the base input price" mean."""

    def __init__(self, book: PriceBook) -> None:
        self._book = book
        self._cache: dict[tuple[str, str], Decimal | None] = {}

    def __call__(self, model: str, ts: float) -> Decimal | None:
        day = datetime.fromtimestamp(ts, UTC).date().isoformat()
        key = (model, day)
        if key not in self._cache:
            # 100k tokens, times 10: a million would pass the long-context threshold (200k)
            # and price at its premium
            probe = UsageEvent("rate-probe", ts, Agent.CLAUDE_CODE, model, Tokens(input=10**5), "")
            try:
                amount = self._book.price(probe, Billing.API).api_equivalent
                self._cache[key] = None if amount is None else amount * 10
            except Exception:  # a broken table: the rate is unknown, never zero
                self._cache[key] = None
            if len(self._cache) > 10_000:
                self._cache.clear()
        return self._cache[key]


def money(amount: Decimal) -> str:
    """Dollars as exact decimal text for evidence (never a float, never rounded)."""
    return f"{amount:f}"


def dollars(amount: Decimal) -> str:
    """Dollars for the sentence a person reads (rounded to the cent there only)."""
    return f"${amount.quantize(Decimal('0.01')):,}"
