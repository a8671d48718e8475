"""What `node-agent hook EVENT` answers Claude Code, from the verdicts that apply to a session.

Claude Code's hook input carries no usage, so the decision is the node's: an exhausted budget
whose action pauses or kills stops the turn (`continue: false`: a `PreToolUse` deny alone goes
back to the model as an error and causes another call); a warning adds a short note to the
context. Only the points before a model call or a tool gate; every other event is let be.
"""

from __future__ import annotations

from typing import Any, Final

from shared.verdicts import Verdict, VerdictState, amount_text

# UserPromptSubmit: a turn's first model call; PostToolBatch: every later one; PreToolUse: tools;
# BeforeModel: every model call (Gemini CLI, and OpenCode's plugin before each call).
GATED: Final = frozenset({"UserPromptSubmit", "PostToolBatch", "PreToolUse", "BeforeModel"})
# Events whose warning goes out as additionalContext (said in each agent's shape by the hook).
CONTEXT_EVENTS: Final = frozenset(
    {"UserPromptSubmit", "PreToolUse", "PostToolBatch", "BeforeModel"}
)


def spent_of_limit(verdict: Verdict) -> str:
    basis = verdict.basis
    return f"{amount_text(verdict.spent, basis)} of {amount_text(verdict.limit, basis)}"


def stop_reason(verdict: Verdict) -> str:
    return (
        f"fleetmeter: budget {verdict.budget!r} ({verdict.scope}, {verdict.period}) is exhausted: "
        f"{spent_of_limit(verdict)} spent; action {verdict.action.value}. "
        f"To go on, ask for an override: {verdict.override}"
    )


def warn_note(verdict: Verdict) -> str:
    share = "" if verdict.share is None else f" ({verdict.share:.0%})"
    return (
        f"fleetmeter: budget {verdict.budget!r} ({verdict.scope}, {verdict.period}) has used "
        f"{spent_of_limit(verdict)}{share}; spend with care."
    )


def decide(event: str, verdicts: list[Verdict]) -> dict[str, Any]:
    """The hook's JSON answer (`{}`: go on, nothing to say)."""
    if event not in GATED:
        return {}
    stopping = [v for v in verdicts if v.stops]
    if stopping:
        return {"continue": False, "stopReason": stop_reason(stopping[0])}
    warned = [
        v for v in verdicts if v.state is VerdictState.WARN or v.state is VerdictState.EXHAUSTED
    ]
    if warned and event in CONTEXT_EVENTS:
        note = " ".join(warn_note(v) for v in warned[:3])
        return {"hookSpecificOutput": {"hookEventName": event, "additionalContext": note}}
    return {}
