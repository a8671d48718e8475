"""Context growth: a thread whose prompt climbs steeply call after call.

A working session's prompt grows by what each turn adds (a reply, a tool's output: typically a
few thousand tokens, now and then a large file) and drops at a compaction. A climb is STEPS (4)
consecutive steps (calls after the first), each adding at least MIN_STEP tokens to the prompt,
ending at a prompt of at least MIN_PROMPT tokens (every input-side token: uncached, cache
reads and writes). Every step, not most: a few large file reads in a row are ordinary work; an
agent feeding its own growing output back in (whole logs, a loop re-reading) climbs on every
call, and every later call pays for all of it. One finding per thread and climb (a call that
adds less, or a compaction, ends one).
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Final

from hub.detectors._base import Call, PerThread, thread_finding
from hub.findings import Finding

KIND: Final = "context_growth"
# 4: a climb seen on its 5th call, p95 270 s from its onset on the simulated week (5 steps:
# 338 s, over the 5-minute target); the price: 3 of the clean week's 1.1 M calls end 4 large
# file reads in a row, which look the same (0.86 findings per 100 machine-days)
STEPS: Final = 4
MIN_STEP: Final = 8_000
MIN_PROMPT: Final = 100_000


@dataclass(slots=True)
class _Thread:
    climb: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=STEPS + 1))
    raised: bool = False  # for the current climb


class ContextGrowth(PerThread[_Thread]):
    kind = KIND

    def __init__(self) -> None:
        super().__init__(_Thread)

    def observe(self, call: Call) -> list[Finding]:
        state = self.state(call)
        e = call.event
        prompt = e.tokens.prompt
        if state.climb and prompt - state.climb[-1][1] < MIN_STEP:
            state.climb.clear()  # not climbing (a small step, or a compaction): start again
            state.raised = False
        state.climb.append((e.ts, prompt))
        if state.raised or len(state.climb) <= STEPS or prompt < MIN_PROMPT:
            return []
        sizes = [p for _, p in state.climb]
        step = statistics.median(b - a for a, b in zip(sizes, sizes[1:], strict=False))
        state.raised = True
        start, first = state.climb[0]
        return [
            thread_finding(
                KIND,
                str(int(start)),
                call,
                start,
                f"saw its prompt climb from {first:,} to {prompt:,} tokens over {STEPS} calls "
                f"(a median {int(step):,} more each call)",
                {
                    "prompt_tokens_from": str(first),
                    "prompt_tokens_to": str(prompt),
                    "calls": str(STEPS),
                    "median_step_tokens": str(int(step)),
                },
            )
        ]
