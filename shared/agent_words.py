"""The words an agent reads from the MCP tools, shared by the node's stdio server and the hub's
streamable-HTTP one: who is asking, and the budgets that apply to it (from verdict maps)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.verdicts import amount_text


def who_asks(figures: dict[str, Any]) -> str:
    if figures.get("session") is None:
        return (
            "I cannot tell which session is asking (no session id, no agent parent process, "
            "no session in this directory)."
        )
    return f"Session {figures['session']} (found by {figures['identified_by']})."


def budget_words(figures: dict[str, Any]) -> str:
    verdicts = figures.get("verdicts", [])
    age = figures.get("verdicts_age_s")
    if age is None:
        return who_asks(figures) + " The node has heard no budget verdicts from the hub yet."
    if not verdicts:
        return who_asks(figures) + f" No budget applies to it (verdicts {age:.0f} s old)."
    lines = [who_asks(figures) + f" Verdicts {age:.0f} s old:"]
    for v in verdicts:
        basis = v["basis"]
        spent, limit = amount_text(v["spent"], basis), amount_text(v["limit"], basis)
        left = (
            "unknown"
            if v["spent"] is None or v["limit"] is None
            else amount_text(str(Decimal(v["limit"]) - Decimal(v["spent"])), basis)
        )
        line = (
            f"- {v['budget']} ({v['scope']}, {v['period']}, {v['basis']}): {spent} of {limit}, "
            f"{left} left; {v['state']}, action {v['action']}"
        )
        if v.get("forecast"):
            line += f"; forecast to cross at epoch {v['forecast']:.0f}"
        lines.append(line + f". Override: {v['override']}")
    return "\n".join(lines)
