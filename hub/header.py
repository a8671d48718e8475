"""The dashboard's header: today's fleet figures, burn rates and projections, on one line that
fits any width.

Burn is $/h over two windows of wall time, a short one (the current pace: a killed runaway
leaves it within `SHORT_MIN` minutes) and a long one, each divided by the part of the window the
hub's figures cover (`Ledger.covered`), so a fleet that started a minute ago is not averaged
with minutes of silence nobody saw. Projections rest on the long window and are shown only once
today's figures cover `PROJECT_AFTER_S`: before that they would multiply a minute of noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Final

from hub import _format as fmt
from hub._totals import Basis, Totals
from hub.ledger import Period

if TYPE_CHECKING:
    from hub.source import FleetSource

SHORT_MIN: Final = 5  # the short burn window, minutes
LONG_MIN: Final = 60  # the long burn window (and the projections' rate), minutes
PROJECT_AFTER_S: Final = 15 * 60  # today's figures must cover this much before projecting
_WIDE_GAP: Final = "  │  "
_NARROW_GAP: Final = " │ "


@dataclass(frozen=True, slots=True)
class HeaderFigures:
    """The fleet's figures for today, as the header shows them."""

    metered: Decimal
    subscription_included: Decimal
    estimated: Decimal
    unknown_calls: int
    unknown_tokens: int
    api_equivalent: Decimal
    burn_paid_short: Decimal  # metered + estimated, $/h over the last SHORT_MIN minutes
    burn_paid_long: Decimal  # ... over the last LONG_MIN minutes
    burn_api_short: Decimal  # API-equivalent, $/h over the last SHORT_MIN minutes
    burn_api_long: Decimal
    projected_day: Decimal | None  # paid, at midnight; None: too little data yet
    projected_month: Decimal | None  # paid, at the month's end; None: too little data yet
    online: int
    nodes: int
    breached: int = 0  # budgets at or past their limit (or stopped there)
    worst_budget: str | None = None  # the one furthest past it

    def line(self, width: int = 1000) -> str:
        """The header in at most `width` characters: words are shortened and the least
        important figures left out, in `_GIVE_UP` order, until it fits; a figure is never cut."""
        parts = _parts(self)
        state = {name: 0 for name in parts}  # part -> index of its wording; -1: left out
        gaps = [_WIDE_GAP]
        given_up: list[tuple[str, int]] = []  # (part, its wording before), in order
        text = _render(parts, state, gaps[-1])
        for step in _GIVE_UP:
            if len(text) <= width:
                break
            name, _, action = step.partition(":")
            if name == "gap":
                gaps.append(_NARROW_GAP)
            elif name in parts and state[name] >= 0:
                before = state[name]
                if action == "drop":
                    state[name] = -1
                elif before + 1 < len(parts[name]):
                    state[name] += 1
                given_up.append((name, before))
            text = _render(parts, state, gaps[-1])
        # Give back, latest first, what still fits: a step taken early may no longer be needed.
        for name, before in reversed(given_up):
            now = state[name]
            state[name] = before
            if len(_render(parts, state, gaps[-1])) > width:
                state[name] = now
        text = _render(parts, state, gaps[-1])
        return text if len(text) <= width else ""


# What the header gives up first when it is too wide: "part:shorter" takes the part's next
# (shorter) wording, "part:drop" leaves it out. Never dropped: the paid burn and the nodes.
_GIVE_UP: Final = (
    "gap:narrow",
    "subscription:shorter",
    "burn:shorter",
    "api:shorter",
    "projection:shorter",
    "estimated:shorter",
    "unknown:shorter",
    "api:drop",
    # Shortest wordings next: every figure of today stays as long as it can.
    "metered:shorter",
    "subscription:shorter",
    "estimated:shorter",
    "unknown:shorter",
    "quiet_unknown:shorter",
    "projection:shorter",
    "burn:shorter",
    "projection:shorter",
    "metered:shorter",
    "burn:shorter",
    "projection:shorter",
    # the breached budgets' count never goes: first the worst one's name, then the words
    "budgets:shorter",
    "budgets:shorter",
    "estimated:drop",
    "quiet_unknown:drop",
    "subscription:drop",
    "projection:drop",
    "metered:drop",
    "unknown:drop",
)

# Which group each part is in: breached budgets, today's money, burn, projection, nodes
# (in this order).
_GROUPS: Final = (
    ("budgets",),
    ("metered", "subscription", "estimated", "unknown", "quiet_unknown"),
    ("burn", "api"),
    ("projection",),
    ("nodes",),
)


def _parts(h: HeaderFigures) -> dict[str, list[str]]:
    """Each part's wordings, the longest first."""
    m: Callable[[Decimal], str] = fmt.money
    parts = {
        "metered": [
            f"today metered {m(h.metered)}",
            f"metered {m(h.metered)}",
            f"met {m(h.metered)}",
        ],
        "subscription": [
            f"subscription {m(h.subscription_included)} (API-eq)",
            f"subscr. {m(h.subscription_included)}",
            f"sub {m(h.subscription_included)}",
        ],
        "estimated": [
            f"estimated {m(h.estimated)}",
            f"est. {m(h.estimated)}",
            f"est {m(h.estimated)}",
        ],
        "burn": [
            f"burn {m(h.burn_paid_short)}/h paid ({SHORT_MIN} min), "
            f"{m(h.burn_paid_long)}/h ({LONG_MIN // 60} h)",
            f"burn {m(h.burn_paid_short)}/h {SHORT_MIN}m, {m(h.burn_paid_long)}/h 1h",
            f"burn {m(h.burn_paid_short)}/h",
            f"{m(h.burn_paid_short)}/h",
        ],
        "api": [
            f"API-eq {m(h.burn_api_short)}/h, {m(h.burn_api_long)}/h",
            f"API-eq {m(h.burn_api_short)}/h",
        ],
        "nodes": [f"nodes {h.online}/{h.nodes}"],
    }
    if h.breached:
        n, name = h.breached, h.worst_budget
        many = f"{n} budgets breached" if n > 1 else "1 budget breached"
        parts["budgets"] = [
            f"{many}, worst '{name}'" if n > 1 else f"budget '{name}' breached",
            many,
            f"{n} breached",
        ]
    if h.unknown_calls:
        tokens = fmt.tokens(h.unknown_tokens)
        parts["unknown"] = [
            f"unknown {h.unknown_calls} calls / {tokens} tok",
            f"unknown {h.unknown_calls} calls",
            f"unkn. {h.unknown_calls}",
            f"unk {h.unknown_calls}",
        ]
    else:
        parts["quiet_unknown"] = ["unknown –", "unk –"]
    day, month = h.projected_day, h.projected_month
    if day is None or month is None:
        wait = PROJECT_AFTER_S // 60
        parts["projection"] = [f"→ day – (after {wait} min of data)", "→ day –", "→ –"]
    else:
        parts["projection"] = [
            f"→ day {m(day)} · month {m(month)}",
            f"→ day {m(day)} · mo. {m(month)}",
            f"→ day {m(day)}",
            f"→ {m(day)}",
        ]
    return parts


def _render(parts: dict[str, list[str]], state: dict[str, int], gap: str) -> str:
    groups = []
    for names in _GROUPS:
        shown = [parts[n][state[n]] for n in names if n in parts and state[n] >= 0]
        if shown:
            groups.append(" · ".join(shown))
    return gap.join(groups)


def project(
    today: Totals, month: Totals, paid_per_hour: Decimal, now: datetime, since: float | None
) -> tuple[Decimal | None, Decimal | None]:
    """(end of day, end of month) paid spend: today so far plus `paid_per_hour` until midnight;
    the month so far plus that, plus the average covered day for each day left. `since`: the
    earliest call the figures hold; (None, None) until today's figures cover `PROJECT_AFTER_S`."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = midnight.timestamp() if since is None else max(since, midnight.timestamp())
    if since is None or now.timestamp() - start < PROJECT_AFTER_S:
        return None, None
    next_midnight = datetime.combine(
        now.date() + timedelta(days=1), datetime.min.time(), now.tzinfo
    )
    hours_left = Decimal(str((next_midnight - now).total_seconds())) / 3600
    rest_of_today = paid_per_hour * hours_left
    day = today.metered + today.estimated + rest_of_today
    so_far = month.metered + month.estimated + rest_of_today
    first_next = (now.replace(day=28) + timedelta(days=4)).replace(day=1)
    days_after_today = (first_next.date() - now.date()).days - 1
    first_day = datetime.fromtimestamp(since, now.tzinfo).date()
    covered_from = max(first_day, now.date().replace(day=1))
    days_covered = (now.date() - covered_from).days + 1
    average_day = so_far / days_covered
    return day, so_far + average_day * days_after_today


def fleet_header(service: FleetSource, now: float, online: int, nodes: int) -> HeaderFigures:
    """The header's figures as of `now`, with `online` of `nodes` nodes online (the dashboard
    and the API's summary both show these)."""
    today = service.fleet(Period.TODAY)
    month = service.fleet(Period.MONTH)
    paid, api = Basis.METERED, Basis.API_EQUIVALENT
    paid_long = service.burn_rate_per_hour(minutes=LONG_MIN, basis=paid)
    when = datetime.fromtimestamp(now, service.tz)
    day, month_total = project(today, month, paid_long, when, service.first_call())
    return HeaderFigures(
        today.metered,
        today.subscription_included,
        today.estimated,
        today.unknown_calls,
        today.unknown_tokens,
        today.api_equivalent,
        service.burn_rate_per_hour(minutes=SHORT_MIN, basis=paid),
        paid_long,
        service.burn_rate_per_hour(minutes=SHORT_MIN, basis=api),
        service.burn_rate_per_hour(minutes=LONG_MIN, basis=api),
        day,
        month_total,
        online,
        nodes,
    )
