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

from collections.abc import Hashable, Iterable, Iterator
from datetime import UTC
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

from node_agent.sources._claude_line import UsageLine
from pricing.rollup import Rollup, RowKey, money_text
from pricing.sdk_credit import (
    PLAN_CREDIT,
    UNTOLD_REASON,
    ZERO,
    CreditTerms,
    Draw,
    Moved,
    draw_at,
    draw_calls,
    month_of,
    moved,
    split,
)
from shared.config import Billing, Profile
from shared.events import Agent

if TYPE_CHECKING:
    from pricing import CallBatch, PricedCall


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
    untold: bool = False  # the log does not say how it was started (may be a row's sum)
    # An SDK call read from its line is priced with its row's hour (`CreditSum`), and alone
    # only in the hour its month's credit runs out: `amount` is None until then.
    line: UsageLine | None = None


class CreditSum(msgspec.Struct, array_like=True, gc=False, frozen=True):
    """A report row's SDK calls of one hour, priced together (`row` None: outside
    --since/--until): the credit is weighed an hour at a time, and only the calls of the hour
    in which it runs out are priced one by one."""

    profile: str
    hour: int  # ts // 3600: UTC months are whole hours
    row: RowKey | None
    estimated: bool
    amount: Decimal


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
    draw = draw_at(entrypoint, ts)
    if draw is Draw.INTERACTIVE:
        return None
    untold = draw is Draw.UNTOLD
    return CreditCall(profile.name, profile.plan, ts, event_id, entrypoint, *price, row, untold)


def apply_credit(
    rollup: Rollup, calls: Iterable[CreditCall], sums: Iterable[CreditSum], options: CreditOptions
) -> list[str]:
    """Move what the credit takes out of subscription_included in `rollup`'s rows; returns a
    note per profile on what could not be known."""
    by_profile: dict[str, list[CreditCall]] = {}
    for call in calls:
        by_profile.setdefault(call.profile, []).append(call)
    hours: dict[str, list[CreditSum]] = {}
    for part in sums:
        hours.setdefault(part.profile, []).append(part)
    notes = []
    for profile, mine in sorted(by_profile.items()):
        untold = ZERO
        for call in mine:
            if call.untold and call.row is not None and call.amount is not None:
                rollup.rows[call.row].move(ZERO, call.amount, estimated=call.estimated)
                untold += call.amount
        if untold:
            notes.append(f"profile {profile}: ${money_text(untold)} estimated: {UNTOLD_REASON}")
        sdk = [c for c in mine if not c.untold]
        credit = options.sdk_credit
        if credit is None:
            credit = PLAN_CREDIT.get(mine[0].plan or "")
        if credit is None:
            notes += _unknown_credit(rollup, profile, sdk, hours.get(profile, []))
            continue
        past_unsure = ZERO
        # summed per row (and price estimate) first: one move per row, not per call
        pasts: dict[tuple[RowKey, bool], Decimal] = {}
        for row, estimated, past in _pasts(sdk, hours.get(profile, []), credit):
            pasts[(row, estimated)] = pasts.get((row, estimated), ZERO) + past
        for (row, estimated), past in pasts.items():
            if options.extra_usage is None:
                rollup.rows[row].move(ZERO, past, estimated=estimated)
                past_unsure += past
            else:
                overage = moved(Draw.CREDIT, past, past, options.extra_usage).overage
                rollup.rows[row].move(overage, ZERO, estimated=estimated)
        if past_unsure:
            notes.append(
                f"profile {profile}: ${money_text(past_unsure)} of Agent SDK calls past the "
                f"${money_text(credit)} monthly credit counted as estimated: overage if extra "
                "usage is on, billed nowhere if off (say which with --extra-usage on|off)"
            )
    return notes


def _pasts(
    calls: list[CreditCall], sums: list[CreditSum], credit: Decimal
) -> Iterator[tuple[RowKey, bool, Decimal]]:
    """(row, estimated price, the part past the credit) of SDK calls in report rows, drawn in
    (time, event id) order month by month (UTC, as `pricing.sdk_credit.draw_calls`), an hour
    at a time: an hour the credit left covers moves nothing, an hour after it ran out moves
    its sums, and the calls of the hour in which it runs out are priced and drawn one by one."""
    by_hour: dict[int, list[CreditCall]] = {}
    for call in calls:
        by_hour.setdefault(int(call.ts // 3600), []).append(call)
    summed: dict[int, list[CreditSum]] = {}
    for part in sums:
        summed.setdefault(part.hour, []).append(part)
    left: dict[str, Decimal] = {}
    for hour in sorted(summed.keys() | by_hour.keys()):
        month = month_of(hour * 3600.0, UTC)
        have = left.get(month, credit)
        parts = summed.get(hour, [])
        total = sum((p.amount for p in parts), ZERO)
        if total <= have:
            left[month] = have - total
            continue
        if not have:
            yield from ((p.row, p.estimated, p.amount) for p in parts if p.row is not None)
            continue
        for call in sorted(by_hour.get(hour, []), key=lambda c: (c.ts, c.event_id)):
            amount, estimated = call.amount, call.estimated
            if call.line is not None:
                amount, estimated = _alone(call.line)
            past, have = split(amount, have)
            if past and call.row is not None:
                yield call.row, estimated, past
        left[month] = have


def _alone(line: UsageLine) -> tuple[Decimal | None, bool]:
    from pricing import CallBatch, PriceBook

    alone: CallBatch[int] = CallBatch(PriceBook.default())
    priced = _add_line(alone, 0, line) or next(p for *_, p in alone.settle())
    return priced.api_equivalent, priced.estimated


def _add_line(batch: CallBatch[Any], group: Hashable, line: UsageLine) -> PricedCall | None:
    return batch.add_counts(
        group,
        line.model,
        None,  # Claude Code logs no provider
        line.ts,
        line.tokens,
        Billing.API,
        service_tier=line.service_tier,
        speed=line.speed,
        inference_geo=line.inference_geo,
        cache_write_unsplit=line.unsplit,
    )


def call_moves(calls: Iterable[CreditCall], options: CreditOptions) -> dict[str, Moved]:
    """What `apply_credit` moves of each call with an event id, call by call (an outcome view
    attributes calls one by one): the same rule (`draw_calls`), the same terms and the same
    "not known" cases (no credit known, extra usage not said: estimated)."""
    by_profile: dict[str, list[CreditCall]] = {}
    for call in calls:
        by_profile.setdefault(call.profile, []).append(call)
    out: dict[str, Moved] = {}
    for mine in by_profile.values():
        priced = []
        for call in mine:
            amount = call.amount
            if amount is None and call.line is not None:
                amount = _alone(call.line)[0]
            if call.untold:
                if call.event_id and amount is not None:
                    out[call.event_id] = Moved(untold=amount)
                continue
            priced.append((call.ts, call.event_id, call.entrypoint, amount))
        credit = options.sdk_credit
        if credit is None:
            credit = PLAN_CREDIT.get(mine[0].plan or "")
        terms = CreditTerms(credit or ZERO, bool(options.extra_usage))
        for event_id, drawn in draw_calls(priced, terms):
            if not drawn.past or not event_id:
                continue
            if credit is None or options.extra_usage is None:  # not known: estimated
                out[event_id] = Moved(untold=drawn.past)
            elif drawn.moved:
                out[event_id] = drawn.moved
    return out


def _unknown_credit(
    rollup: Rollup, profile: str, calls: list[CreditCall], sums: list[CreditSum]
) -> list[str]:
    moved = ZERO
    for row, estimated, amount in _pasts(calls, sums, ZERO):  # with no credit, all of each call
        rollup.rows[row].move(ZERO, amount, estimated=estimated)
        moved += amount
    if not moved:
        return []
    return [
        f"profile {profile}: ${money_text(moved)} of Agent SDK calls counted as "
        "estimated: the profile's Agent SDK credit is not known (set its plan in the node "
        "config, or pass --sdk-credit USD)"
    ]
