"""Retry loops: an agent doing the same thing again and again.

Two rules per thread (a session's main thread or one subagent):

- **same tool call**: REPEATS consecutive calls whose tool uses are identical (the same tools
  with the same input, as the node's `tool_calls` signature carries them: OpenCode's "doom
  loop" rule of 3). Fires on the third identical call, i.e. after 2 repeats.
- **similar small calls** (for calls whose log gives no tool signature, e.g. a Codex build
  that logs none): BURST consecutive calls, each at most BURST_GAP_S after the previous, with
  small outputs (<= SMALL_OUTPUT tokens) within OUTPUT_SPREAD of each other and a prompt that
  grows by a near-constant step (the same error text appended each time). Calls that carry a
  signature are judged by the first rule only: different tool calls are not a loop.

Repeated tool *errors* are not seen: the logs keep them in the tool-result lines, which the
node does not read (it reads usage lines only). One finding per (thread, signature).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Final

from hub.detectors._base import Call, PerThread, thread_finding
from hub.findings import Finding

KIND: Final = "retry_loop"
REPEATS: Final = 3
BURST: Final = 6
BURST_GAP_S: Final = 60.0
SMALL_OUTPUT: Final = 500
OUTPUT_SPREAD: Final = 0.1  # (max - min) / mean of the outputs
STEP_SPREAD: Final = 0.25  # (max - min) / mean of the prompt's growth per call
MAX_STEP: Final = 5_000


@dataclass(slots=True)
class _Thread:
    signature: str | None = None
    run: int = 0
    run_start: float = 0.0
    # (ts, output, prompt) of the latest calls without a signature
    recent: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=BURST))
    raised: set[str] = field(default_factory=set)


class RetryLoop(PerThread[_Thread]):
    kind = KIND

    def __init__(self) -> None:
        super().__init__(_Thread)

    def observe(self, call: Call) -> list[Finding]:
        state = self.state(call)
        e = call.event
        signature = e.tool_calls
        if signature is not None:
            state.recent.clear()
            if signature == state.signature:
                state.run += 1
            else:
                state.signature, state.run, state.run_start = signature, 1, e.ts
            if state.run == REPEATS and signature not in state.raised:
                state.raised.add(signature)
                tools = ", ".join(part.partition(":")[0] for part in signature.split(","))
                return [
                    thread_finding(
                        KIND,
                        signature,
                        call,
                        state.run_start,
                        f"made the same tool call ({tools}, same input) {REPEATS} times in a row",
                        {"rule": "same_tool_call", "repeats": str(REPEATS), "tool": tools},
                    )
                ]
            return []
        state.signature, state.run = None, 0
        out, prompt = e.tokens.output + e.tokens.reasoning, e.tokens.prompt
        if state.recent and e.ts - state.recent[-1][0] > BURST_GAP_S:
            state.recent.clear()
        if out > SMALL_OUTPUT:
            state.recent.clear()
            return []
        state.recent.append((e.ts, out, prompt))
        if len(state.recent) < BURST or "burst" in state.raised or not _alike(state.recent):
            return []
        state.raised.add("burst")
        first = state.recent[0]
        outputs = [o for _, o, _ in state.recent]
        return [
            thread_finding(
                KIND,
                "burst",
                call,
                first[0],
                f"made {BURST} similar calls in {e.ts - first[0]:.0f} s, each with a small "
                f"output ({min(outputs)}-{max(outputs)} tokens) and its prompt growing by "
                "about the same amount: a retry loop",
                {
                    "rule": "similar_small_calls",
                    "calls": str(BURST),
                    "seconds": f"{e.ts - first[0]:.0f}",
                    "output_tokens_min": str(min(outputs)),
                    "output_tokens_max": str(max(outputs)),
                },
            )
        ]


def _alike(recent: deque[tuple[float, int, int]]) -> bool:
    outputs = [o for _, o, _ in recent]
    mean = sum(outputs) / len(outputs)
    if mean <= 0 or (max(outputs) - min(outputs)) > OUTPUT_SPREAD * mean:
        return False
    prompts = [p for _, _, p in recent]
    steps = [b - a for a, b in zip(prompts, prompts[1:], strict=False)]
    if min(steps) <= 0 or max(steps) > MAX_STEP:
        return False
    mean_step = sum(steps) / len(steps)
    return (max(steps) - min(steps)) <= STEP_SPREAD * mean_step
