"""Model swap: a thread that changes model mid-session to a pricier one.

Per thread (a session's main thread or one subagent), the model of its last call. When a call
names another model whose list input price is at least RATIO x the previous model's, that is a
swap worth telling: the rest of the session costs that much more per token, and the new model
starts with a cold cache (every cached prefix is written again). A swap to a model whose
price is unknown is not judged (unknown is not "cheap"). One finding per (thread, from, to).
Subagents running a cheaper model than their parent are not swaps: each thread is its own.
"""

from __future__ import annotations

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

KIND: Final = "model_swap"
RATIO: Final = Decimal(2)


@dataclass(slots=True)
class _Thread:
    model: str | None = None
    raised: set[str] = field(default_factory=set)


class ModelSwap(PerThread[_Thread]):
    kind = KIND

    def __init__(self, input_rate: ModelRate) -> None:
        super().__init__(_Thread)
        self._rate = input_rate

    def observe(self, call: Call) -> list[Finding]:
        state = self.state(call)
        e = call.event
        before, state.model = state.model, e.model
        if before is None or before == e.model:
            return []
        old, new = self._rate(before, e.ts), self._rate(e.model, e.ts)
        if old is None or new is None or old <= 0 or new < old * RATIO:
            return []
        swap = f"{before}->{e.model}"
        if swap in state.raised:
            return []
        state.raised.add(swap)
        times = (new / old).quantize(Decimal("0.1"))
        return [
            thread_finding(
                KIND,
                swap,
                call,
                e.ts,
                f"switched from {before} to {e.model} mid-session: {times}x the input price "
                f"({dollars(old)} -> {dollars(new)} per million tokens)",
                {
                    "from_model": before,
                    "to_model": e.model,
                    "from_input_usd_per_mtok": money(old),
                    "to_input_usd_per_mtok": money(new),
                    "ratio": str(times),
                },
            )
        ]
