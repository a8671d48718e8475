"""The Agent SDK credit in `node-agent scan`: the hub's rule (`pricing.sdk_credit`), applied to
the calls a scan read.

A scan has no hub config, so it learns a Claude subscription profile's terms from the node
config and its own options:
- the credit: `--sdk-credit USD` when given, else the profile's `plan` in the node config
  ($20 pro, $100 max_5x, $200 max_20x);
- extra usage: `--extra-usage on|off` (nothing in the logs says it);
- the month: UTC (the hub's default `tz`).

Where it cannot know, it says so rather than guess: with no credit known, every SDK call and
every call whose log does not say how Claude Code was started is estimated; with the credit
known but not extra usage, the part of SDK calls past the credit is estimated (it is overage
if extra usage is on, billed nowhere if off). Either way a note names the profile, the amount
and the option that would settle it. Calls before 2026-06-15 and interactive ones stay
subscription-included, as on the hub.

The credit is drawn over every call of the month the scan read, `--since` or not (a call
before `--since` draws the credit all the same); only the calls in the report's rows move.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from decimal import Decimal

import msgspec

from pricing.rollup import Rollup, RowKey, money_text
from pricing.sdk_credit import (
    PLAN_CREDIT,
    UNTOLD_REASON,
    ZERO,
    CreditTerms,
    Draw,
    draw_at,
    draw_calls,
)
from shared.config import Billing, Profile
from shared.events import Agent


class CreditOptions(msgspec.Struct, frozen=True):
    """What the scan was told of the subscriptions' terms (None: not told)."""

    sdk_credit: Decimal | None = None
    extra_usage: bool | None = None


NOT_TOLD = CreditOptions()


class CreditCall(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A call of a Claude subscription profile that the credit may class: an SDK call or one
    whose log does not say how the agent was started."""

    profile: str
    plan: str | None
    ts: float
    event_id: str
    entrypoint: str | None
    amount: Decimal | None  # API-equivalent (None: no price known)
    estimated: bool
    row: RowKey | None  # the report row it is in (None: outside --since/--until)


def drawing_profile(agent: Agent, profile: Profile | None) -> Profile | None:
    """The profile whose calls the credit may class: Claude Code on a subscription."""
    if (
        agent is Agent.CLAUDE_CODE
        and profile is not None
        and profile.billing is Billing.SUBSCRIPTION
    ):
        return profile
    return None


def credit_call(
    profile: Profile,
    ts: float,
    event_id: str,
    entrypoint: str | None,
    price: tuple[Decimal | None, bool],
    row: RowKey | None,
) -> CreditCall | None:
    """The call as the credit needs it, or None when it draws nothing (interactive, or before
    the credit existed)."""
    if draw_at(entrypoint, ts) is Draw.INTERACTIVE:
        return None
    return CreditCall(profile.name, profile.plan, ts, event_id, entrypoint, *price, row)


def apply_credit(rollup: Rollup, calls: Iterable[CreditCall], options: CreditOptions) -> list[str]:
    """Move what the credit takes out of subscription_included in `rollup`'s rows; returns a
    note per profile on what could not be known."""
    by_profile: dict[str, list[CreditCall]] = {}
    for call in calls:
        by_profile.setdefault(call.profile, []).append(call)
    notes = []
    for profile, mine in sorted(by_profile.items()):
        credit = options.sdk_credit
        if credit is None:
            credit = PLAN_CREDIT.get(mine[0].plan or "")
        if credit is None:
            notes += _unknown_credit(rollup, profile, mine)
            continue
        terms = CreditTerms(credit, bool(options.extra_usage), UTC, "scan")
        found = {c.event_id: c for c in mine}
        untold = past_unsure = ZERO
        for event_id, drawn in draw_calls(
            ((c.ts, c.event_id, c.entrypoint, c.amount) for c in mine), terms
        ):
            call = found[event_id]
            if call.row is None or call.amount is None:
                continue
            row = rollup.rows[call.row]
            if drawn.draw is Draw.UNTOLD:
                row.move(ZERO, call.amount, estimated=call.estimated)
                untold += call.amount
            elif drawn.past and options.extra_usage is None:
                row.move(ZERO, drawn.past, estimated=call.estimated)
                past_unsure += drawn.past
            elif drawn.moved:
                row.move(drawn.moved.overage, ZERO, estimated=call.estimated)
        if untold:
            notes.append(f"profile {profile}: ${money_text(untold)} estimated: {UNTOLD_REASON}")
        if past_unsure:
            notes.append(
                f"profile {profile}: ${money_text(past_unsure)} of Agent SDK calls past the "
                f"${money_text(credit)} monthly credit counted as estimated: overage if extra "
                "usage is on, billed nowhere if off (say which with --extra-usage on|off)"
            )
    return notes


def _unknown_credit(rollup: Rollup, profile: str, calls: list[CreditCall]) -> list[str]:
    moved = ZERO
    for call in calls:
        if call.row is not None and call.amount is not None:
            rollup.rows[call.row].move(ZERO, call.amount, estimated=call.estimated)
            moved += call.amount
    if not moved:
        return []
    return [
        f"profile {profile}: ${money_text(moved)} of Agent SDK (or untold) calls counted as "
        "estimated: the profile's Agent SDK credit is not known (set its plan in the node "
        "config, or pass --sdk-credit USD)"
    ]
