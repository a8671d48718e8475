"""Cache thrash: a session (or subagent thread) that writes the prompt cache and does not read
it back, split by the 5-minute and 1-hour tiers.

Two rules, one finding per thread (whichever rule sees it first):

- **writes unread**: over the thread's last WINDOW calls, cache writes of at least
  MIN_WRITES tokens a call on average, and cache reads at most READ_SHARE of the writes. A
  working session reads its cached prefix back on every call (reads dwarf writes); a thrashing
  one pays the write premium (1.25x or 2x the input price) every call for nothing.
- **1-hour writes that never pay back** (research/governance.md §4.4): a 1-hour write costs
  2x the input price and pays back after 2 reads. A 1-hour write is read when a later call's
  cache read reaches past it; it is settled as waste when a later call re-writes at least half
  of it without reading it (the cache was lost), or when the next call comes after its TTL,
  with fewer than 2 reads. The rule fires at UNPAID_WRITES such writes in a thread that hold
  at least UNPAID_SHARE of its 1-hour write tokens; the waste is valued at 1.0x input price x
  tokens - 0.9x x reads x tokens (against not caching).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

from hub.detectors._base import (
    Call,
    ModelRate,
    PerThread,
    dollars,
    money,
    thread_finding,
)
from hub.findings import Finding
from shared.events import Tokens

KIND: Final = "cache_thrash"
WINDOW: Final = 5
MIN_WRITES: Final = 20_000
READ_SHARE: Final = 0.1
ONE_HOUR_S: Final = 3600
UNPAID_WRITES: Final = 3
UNPAID_SHARE: Final = 0.5
PENDING_MAX: Final = 32  # 1-hour writes followed per thread


@dataclass(slots=True)
class _Write:
    ts: float
    end: int  # prompt position the write reaches (cache read + writes of its call)
    tokens: int
    reads: int = 0
    last_use: float = 0.0


@dataclass(slots=True)
class _Thread:
    recent: deque[tuple[float, Tokens]] = field(default_factory=lambda: deque(maxlen=WINDOW))
    pending: deque[_Write] = field(default_factory=lambda: deque(maxlen=PENDING_MAX))
    written_1h: int = 0
    unpaid: int = 0
    unpaid_tokens: int = 0
    unpaid_value: Decimal | None = Decimal(0)  # None once a write's model has no known price
    done: bool = False


class CacheThrash(PerThread[_Thread]):
    kind = KIND

    def __init__(self, input_rate: ModelRate) -> None:
        super().__init__(_Thread)
        self._rate = input_rate

    def observe(self, call: Call) -> list[Finding]:
        state = self.state(call)
        if state.done:
            return []
        t = call.event.tokens
        state.recent.append((call.event.ts, t))
        self._settle(state, call)
        if t.cache_write_1h > 0:
            state.written_1h += t.cache_write_1h
            end = t.cache_read + t.cache_write_5m + t.cache_write_1h
            state.pending.append(_Write(call.event.ts, end, t.cache_write_1h, 0, call.event.ts))
        finding = self._unread(state, call) or self._unpaid(state, call)
        if finding is not None:
            state.done = True
            return [finding]
        return []

    def _settle(self, state: _Thread, call: Call) -> None:
        if not state.pending:
            return  # most threads: no 1-hour write to follow
        t, ts = call.event.tokens, call.event.ts
        written = t.cache_write_5m + t.cache_write_1h
        keep: deque[_Write] = deque(maxlen=PENDING_MAX)
        for w in state.pending:
            if ts - w.last_use > ONE_HOUR_S:
                lost = True
            elif t.cache_read >= w.end:
                w.reads += 1
                w.last_use = ts
                lost = False
            else:
                lost = written * 2 >= w.tokens
            if w.reads >= 2:
                continue  # paid back
            if lost:
                state.unpaid += 1
                state.unpaid_tokens += w.tokens
                rate = self._rate(call.event.model, ts)
                if rate is None or state.unpaid_value is None:
                    state.unpaid_value = None  # unknown, never a partial sum shown as the value
                else:
                    net = w.tokens - Decimal("0.9") * w.reads * w.tokens
                    state.unpaid_value += rate * net / 10**6
                continue
            keep.append(w)
        state.pending = keep

    def _unread(self, state: _Thread, call: Call) -> Finding | None:
        if len(state.recent) < WINDOW:
            return None
        w5 = sum(t.cache_write_5m for _, t in state.recent)
        w1 = sum(t.cache_write_1h for _, t in state.recent)
        reads = sum(t.cache_read for _, t in state.recent)
        writes = w5 + w1
        if writes < MIN_WRITES * WINDOW or reads > writes * READ_SHARE:
            return None
        tier = "1-hour" if w1 >= w5 else "5-minute"
        return self._finding(
            call,
            state.recent[0][0],
            "writes_unread",
            f"wrote {writes:,} cache tokens in its last {WINDOW} calls ({w5:,} at the 5-minute "
            f"tier, {w1:,} at the 1-hour tier) and read back {reads:,}: mostly {tier} writes "
            "paid for and never used",
            {
                "calls": str(WINDOW),
                "cache_write_5m_tokens": str(w5),
                "cache_write_1h_tokens": str(w1),
                "cache_read_tokens": str(reads),
                "tier": "1h" if w1 >= w5 else "5m",
            },
        )

    def _unpaid(self, state: _Thread, call: Call) -> Finding | None:
        if state.unpaid < UNPAID_WRITES or state.unpaid_tokens < state.written_1h * UNPAID_SHARE:
            return None
        value = state.unpaid_value
        return self._finding(
            call,
            call.event.ts,
            "1h_unpaid",
            f"made {state.unpaid} 1-hour cache writes ({state.unpaid_tokens:,} tokens) that were "
            "read back less than twice, so never paid back their 2x price: "
            + (
                "an unknown amount (no price for the model)"
                if value is None
                else f"about {dollars(value)} more than not caching"
            ),
            {
                "unpaid_1h_writes": str(state.unpaid),
                "unpaid_1h_tokens": str(state.unpaid_tokens),
                "written_1h_tokens": str(state.written_1h),
                "waste_usd": "unknown" if value is None else money(value),
                "tier": "1h",
            },
        )

    def _finding(
        self, call: Call, start: float, rule: str, what: str, evidence: dict[str, str]
    ) -> Finding:
        text = f"({call.event.model}) {what}"
        return thread_finding(KIND, "", call, start, text, {"rule": rule, **evidence})
