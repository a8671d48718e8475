"""Claude Enterprise's analytics cost reports: Claude Code's dollars per UTC day, per model and
per user (the report's "actor"), read with an Analytics API key (scope `read:analytics`).

`/v1/organizations/analytics/cost_report?beta=true`: daily buckets; `amount` is post-discount
and pre-credit, `list_amount` pre-discount, both decimal strings in **fractional cents**. A
grouped bucket holds at most its top 100 groups and no remainder row, so a day's total comes
from the ungrouped query and the groups beyond the cap are that total less the groups shown.
`/v1/organizations/analytics/user_cost_report?beta=true`: one row per user and day (only cost
a seat user is billed for; API-key traffic is in the cost report alone), paged by cursor.
Both: `products[]=claude_code`; a range of at most 31 days; no data before 2026-01-01; a
bucket ending after the answer's `data_refreshed_at` is still being filled in. Neither report
groups by session (nor by API key): per session there is nothing to hold the fleet against.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final

from hub.reconcile.model import ConnectorError
from hub.reconcile.settings import ProviderSettings
from hub.reconcile.transport import REAL_TIME, CursorExpired, Pager, Timing, Transport
from hub.reconcile.values import day_of_rfc3339, instant_of, money, text_or_none

COST: Final = "/v1/organizations/analytics/cost_report"
USER_COST: Final = "/v1/organizations/analytics/user_cost_report"
VERSION: Final = "2023-06-01"
PRODUCT: Final = "claude_code"
FIRST_DAY: Final = date(2026, 1, 1)  # the reports hold nothing earlier
MAX_DAYS: Final = 31  # days one query may span
GROUP_CAP: Final = 100  # groups a grouped bucket reports at most
USERS_PER_PAGE: Final = "1000"  # the user report's largest page
CENTS: Final = Decimal(100)
BEYOND_CAP: Final = "(beyond the top 100)"  # the model of a day's groups the cap left out


@dataclass(frozen=True, slots=True)
class Spend:
    """Dollars (exact) as billed and at list price."""

    amount: Decimal = Decimal(0)  # post-discount, pre-credit
    list_amount: Decimal = Decimal(0)  # pre-discount

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.amount + other.amount, self.list_amount + other.list_amount)

    def __sub__(self, other: Spend) -> Spend:
        return Spend(self.amount - other.amount, self.list_amount - other.list_amount)


@dataclass(frozen=True, slots=True)
class ActorSpend:
    day: date
    user_id: str
    email: str | None
    name: str | None
    spend: Spend


@dataclass(slots=True)
class AnalyticsReport:
    totals: dict[date, Spend] = field(default_factory=dict)  # Claude Code per UTC day
    models: dict[tuple[date, str], Spend] = field(default_factory=dict)  # incl. BEYOND_CAP
    actors: list[ActorSpend] = field(default_factory=list)
    partial_days: set[date] = field(default_factory=set)  # past the data's watermark
    capped_days: set[date] = field(default_factory=set)  # a grouped bucket hit the cap


def spans(first: date, last: date) -> Iterator[tuple[date, date]]:
    """`first` to `last` (inclusive) in pieces the reports accept, from 2026-01-01 on."""
    start = max(first, FIRST_DAY)
    while start <= last:
        end = min(last, start + timedelta(days=MAX_DAYS - 1))
        yield start, end
        start = end + timedelta(days=1)


def fetch(
    settings: ProviderSettings,
    transport: Transport,
    first: date,
    last: date,
    timing: Timing = REAL_TIME,
) -> AnalyticsReport:
    """Claude Code's spend from UTC day `first` to `last` (inclusive)."""
    key_file = settings.analytics_key_file or settings.key_file
    headers = {"x-api-key": settings.read_analytics_key(), "anthropic-version": VERSION}
    forbidden = (
        f"{key_file} lacks the read:analytics scope: the analytics cost report needs a Claude "
        "Enterprise Analytics API key (analytics_key_file in [reconcile.anthropic])"
    )
    pager = Pager(settings, transport, headers, timing, forbidden)
    report = AnalyticsReport()
    for start, end in spans(first, last):
        span = [
            ("beta", "true"),
            ("starting_at", f"{start.isoformat()}T00:00:00Z"),
            ("ending_at", f"{(end + timedelta(days=1)).isoformat()}T00:00:00Z"),
            ("bucket_width", "1d"),
            ("products[]", PRODUCT),
        ]
        buckets = [*span, ("limit", str(MAX_DAYS))]
        _totals(pager, buckets, report, timing.now())
        _models(pager, [*buckets, ("group_by[]", "model")], report)
        _actors(pager, [*span, ("limit", USERS_PER_PAGE)], report)
    return report


def _pages(pager: Pager, path: str, params: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Every page of one query; once more from the first page when a cursor expired (the
    data was refreshed while paging: pages of two exports must not be mixed)."""
    try:
        return list(pager.pages(path, params))
    except CursorExpired:
        return list(pager.pages(path, params))


def _watermark(page: Mapping[str, Any], now: float) -> float:
    """Until when the answer's data is filled in: buckets ending later are partial."""
    refreshed = page.get("data_refreshed_at")
    if refreshed is None:
        return float("-inf")  # no export covers the range yet
    return min(now, instant_of(refreshed, f"anthropic {COST} data_refreshed_at"))


def _buckets(
    pager: Pager, params: Sequence[tuple[str, str]]
) -> Iterator[tuple[date, float, float, list[Mapping[str, Any]]]]:
    """(day, bucket end, the page's watermark, results) of every daily bucket."""
    where = f"anthropic {COST}"
    for page in _pages(pager, COST, params):
        watermark = _watermark(page, pager.timing.now())
        for bucket in page["data"]:
            if not isinstance(bucket, Mapping):
                raise ConnectorError(f"{where}: a bucket is not an object")
            day = day_of_rfc3339(bucket.get("starting_at"), f"{where} starting_at")
            end = instant_of(bucket.get("ending_at"), f"{where} ending_at")
            results = bucket.get("results")
            if not isinstance(results, list) or not all(isinstance(r, Mapping) for r in results):
                raise ConnectorError(f"{where}: a bucket's results are not a list of objects")
            yield day, end, watermark, results


def _spend(result: Mapping[str, Any], where: str) -> Spend:
    currency = result.get("currency", "USD")
    if currency != "USD":
        raise ConnectorError(f"{where}: currency {currency!r}, only USD is reconciled")
    # fractional cents: "41280.000000" is $412.80
    amount = money(result.get("amount"), f"{where} amount") / CENTS
    listed = result.get("list_amount")
    list_amount = amount if listed is None else money(listed, f"{where} list_amount") / CENTS
    return Spend(amount, list_amount)


def _totals(
    pager: Pager, params: Sequence[tuple[str, str]], report: AnalyticsReport, now: float
) -> None:
    for day, end, watermark, results in _buckets(pager, params):
        where = f"anthropic {COST} {day}"
        total = Spend()
        for result in results:  # one combined row ungrouped; none on a day without use
            total = total + _spend(result, where)
        report.totals[day] = report.totals.get(day, Spend()) + total
        if end > watermark or end > now:
            report.partial_days.add(day)


def _models(pager: Pager, params: Sequence[tuple[str, str]], report: AnalyticsReport) -> None:
    shown: dict[date, Spend] = {}
    for day, _end, _watermark, results in _buckets(pager, params):
        where = f"anthropic {COST} {day} by model"
        if len(results) >= GROUP_CAP:
            report.capped_days.add(day)
        for result in results:
            model = text_or_none(result.get("model"), f"{where} model") or "(no model)"
            spend = _spend(result, where)
            report.models[(day, model)] = report.models.get((day, model), Spend()) + spend
            shown[day] = shown.get(day, Spend()) + spend
    # the cap leaves no remainder row: what the groups shown do not add up to is the rest
    for day, total in report.totals.items():
        rest = total - shown.get(day, Spend())
        if rest != Spend():
            report.models[(day, BEYOND_CAP)] = rest


def _actors(pager: Pager, params: Sequence[tuple[str, str]], report: AnalyticsReport) -> None:
    where = f"anthropic {USER_COST}"
    for page in _pages(pager, USER_COST, params):
        for row in page["data"]:
            if not isinstance(row, Mapping):
                raise ConnectorError(f"{where}: a row is not an object")
            actor = row.get("actor")
            if not isinstance(actor, Mapping):
                raise ConnectorError(f"{where}: a row has no actor object")
            user_id = text_or_none(actor.get("user_id"), f"{where} actor.user_id")
            if user_id is None:
                raise ConnectorError(f"{where}: a row's actor has no user_id")
            day = day_of_rfc3339(row.get("starting_at"), f"{where} starting_at")
            email = actor.get("email_address", actor.get("email"))
            report.actors.append(
                ActorSpend(
                    day=day,
                    user_id=user_id,
                    email=text_or_none(email, f"{where} actor.email_address"),
                    name=text_or_none(actor.get("name"), f"{where} actor.name"),
                    spend=_spend(row, f"{where} {day} {user_id}"),
                )
            )
