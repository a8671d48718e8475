"""A budget's verdict as the hub hands it to a node: the seam between the governor (issue 13)
and the agent's own gates (hooks, status line, MCP; issue 14).

The hub's ack of every batch carries the verdicts that concern the sending node's machine,
profiles and sessions (at most `MAX_VERDICTS`, signed with the ack). The node keeps the latest
list in memory and answers its agents from it. Money is exact: `spent` and `limit` are decimal
strings, or None when the figure cannot be verified (an unknown price is never read as zero).

`scope` names what the budget is counted over, as `kind:value` (`session:ID`, `profile:NAME`,
`machine:NODE`, `project:PATH`, `account:NAME`, `agent:NAME`, `model:NAME`), two of them joined
by a comma, or `fleet`; `applies_to` decides whether one session is inside it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final

MAX_VERDICTS: Final = 64  # per ack: a verdict is ~300 bytes, so an ack stays well under 32 KiB
MAX_TEXT: Final = 300  # any one text field; longer is cut (the hub's names are short)


class VerdictState(StrEnum):
    OK = "ok"
    WARN = "warn"
    EXHAUSTED = "exhausted"
    UNVERIFIED = "unverified"  # the spend includes calls with no known price


class VerdictAction(StrEnum):
    ALERT = "alert"
    PAUSE = "pause"
    KILL = "kill"


class VerdictError(ValueError):
    """A verdict map that is not well formed (from the wire: untrusted)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    budget: str  # the budget's name, as the operator wrote it
    scope: str  # `kind:value` or `fleet`
    period: str  # e.g. "day", "week", "month"
    basis: str  # what is counted: "paid", "api" (dollars) or "quota" (percent of a window)
    spent: str | None  # exact decimal string; None when unverified
    limit: str | None
    share: float | None  # spent / limit, 0..; None when either is unknown
    state: VerdictState
    action: VerdictAction
    override: str  # how to ask for an override: a command or a person to ask
    forecast: float | None = None  # epoch seconds the budget is forecast to be crossed

    def applies_to(
        self,
        session: str | None,
        *,
        machine: str,
        profile: str | None = None,
        project: str | None = None,
        account: str | None = None,
        agent: str | None = None,
        models: Collection[str] = (),
    ) -> bool:
        """Whether the session is inside the scope: every `kind:value` part (comma-separated,
        as a budget combines two kinds) must match; a model part takes a session that called
        that model."""
        if self.scope == "fleet":
            return True
        wanted = {
            "session": session,
            "machine": machine,
            "profile": profile,
            "project": project,
            "account": account,
            "agent": agent,
        }
        for part in self.scope.split(","):
            kind, _, value = part.partition(":")
            if kind == "model":
                if value not in models:
                    return False
            elif wanted.get(kind) is None or wanted[kind] != value:
                return False
        return True

    @property
    def stops(self) -> bool:
        """Exhausted with an action that stops the agent (an alert-only budget never does)."""
        return self.state is VerdictState.EXHAUSTED and self.action is not VerdictAction.ALERT

    def remaining(self) -> Decimal | None:
        if self.spent is None or self.limit is None:
            return None
        return Decimal(self.limit) - Decimal(self.spent)


def amount_text(amount: str | None, basis: str) -> str:
    """A verdict's spent or limit as words: dollars, or a percent of the provider's window on
    the quota basis; "unknown" when it cannot be verified (never $0)."""
    if amount is None:
        return "unknown"
    return f"{amount} %" if basis == "quota" else f"${amount}"


def verdict_to_map(verdict: Verdict) -> dict[str, Any]:
    data = asdict(verdict)
    data["state"] = verdict.state.value
    data["action"] = verdict.action.value
    return data


def verdict_from_map(data: object) -> Verdict:
    if not isinstance(data, dict):
        raise VerdictError("a verdict is not a map")
    try:
        return Verdict(
            budget=_text(data, "budget"),
            scope=_text(data, "scope"),
            period=_text(data, "period"),
            basis=_text(data, "basis"),
            spent=_money(data, "spent"),
            limit=_money(data, "limit"),
            share=_number(data, "share"),
            state=VerdictState(str(data.get("state"))),
            action=VerdictAction(str(data.get("action"))),
            override=_text(data, "override"),
            forecast=_number(data, "forecast"),
        )
    except ValueError as exc:
        if isinstance(exc, VerdictError):
            raise
        raise VerdictError(f"verdict: {exc}") from None


def verdicts_from_list(data: object) -> list[Verdict]:
    """The verdicts of an ack; a malformed one is dropped alone (the others still count)."""
    if not isinstance(data, list):
        raise VerdictError("verdicts is not a list")
    out: list[Verdict] = []
    for item in data[:MAX_VERDICTS]:
        try:
            out.append(verdict_from_map(item))
        except VerdictError:
            continue
    return out


def bounded(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """At most MAX_VERDICTS for one ack, the ones that stop first, then warnings."""
    order = {VerdictState.EXHAUSTED: 0, VerdictState.WARN: 1, VerdictState.UNVERIFIED: 2}
    ranked = sorted(verdicts, key=lambda v: (order.get(v.state, 3), -(v.share or 0.0)))
    return [verdict_to_map(v) for v in ranked[:MAX_VERDICTS]]


def _text(data: dict[Any, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise VerdictError(f"verdict {key} is not text")
    return value[:MAX_TEXT]


def _money(data: dict[Any, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise VerdictError(f"verdict {key} is not a decimal string")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise VerdictError(f"verdict {key} {value[:40]!r} is not a decimal") from None
    if not amount.is_finite():
        raise VerdictError(f"verdict {key} is not finite")
    return value


def _number(data: dict[Any, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VerdictError(f"verdict {key} is not a number")
    if value != value or value in (float("inf"), float("-inf")):
        raise VerdictError(f"verdict {key} is not finite")
    return float(value)
