"""Anthropic's Admin API: the usage report (tokens per key) and the cost report (dollars).

Usage: `/v1/organizations/usage_report/messages`, daily buckets grouped by API key, workspace
and model, with the 5-minute and 1-hour cache writes apart. Cost: `/v1/organizations/
cost_report`, daily, grouped by workspace and description (which fills `model` and
`token_type`); its `amount` is a decimal string in **cents**. Buckets are UTC days.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Final

from hub.reconcile.model import (
    WEB_SEARCH,
    ConnectorError,
    CostLine,
    ProviderReport,
    UsageLine,
)
from hub.reconcile.settings import ProviderSettings
from hub.reconcile.transport import REAL_TIME, Buckets, Pager, Timing, Transport
from hub.reconcile.values import (
    count,
    day_of_rfc3339,
    money,
    text_or_none,
    tier_of,
    usage_line,
)
from shared.events import Tokens

VERSION: Final = "2023-06-01"
USAGE: Final = "/v1/organizations/usage_report/messages"
COST: Final = "/v1/organizations/cost_report"
TOKEN_TYPES: Final = {
    "uncached_input_tokens": "input",
    "output_tokens": "output",
    "cache_read_input_tokens": "cache_read",
    "cache_creation.ephemeral_5m_input_tokens": "cache_write_5m",
    "cache_creation.ephemeral_1h_input_tokens": "cache_write_1h",
}
CENTS: Final = Decimal(100)
# One model has several rates: above 200k tokens of context, and batch at half. Grouped by
# both, each class's dollars are shared out among keys that paid the same rate.
TIERS: Final = ("context_window", "service_tier")


def fetch(
    settings: ProviderSettings,
    transport: Transport,
    first: date,
    last: date,
    timing: Timing = REAL_TIME,
) -> ProviderReport:
    """The usage and cost reports for UTC days `first` to `last` (inclusive)."""
    headers = {"x-api-key": settings.read_key(), "anthropic-version": VERSION}
    pager = Pager(settings, transport, headers, timing)
    span = [
        ("starting_at", f"{first.isoformat()}T00:00:00Z"),
        ("ending_at", f"{(last + timedelta(days=1)).isoformat()}T00:00:00Z"),
        ("bucket_width", "1d"),
        ("limit", "31"),
    ]
    usage_by = [("group_by[]", g) for g in ("api_key_id", "workspace_id", "model", *TIERS)]
    cost_by = [("group_by[]", "workspace_id"), ("group_by[]", "description")]
    report = ProviderReport("anthropic")
    fetched = timing.now()
    usage = Buckets(USAGE, [*span, *usage_by], "starting_at", "ending_at", day_of_rfc3339)
    report.usage = pager.lines(usage, _usage, report.partial_days, fetched)
    cost = Buckets(COST, [*span, *cost_by], "starting_at", "ending_at", day_of_rfc3339)
    report.costs = pager.lines(cost, _cost, report.partial_days, fetched)
    return report


def _usage(day: date, result: Mapping[str, Any]) -> UsageLine:
    where = f"anthropic usage {day}"
    cache = result.get("cache_creation") or {}
    if not isinstance(cache, Mapping):
        raise ConnectorError(f"{where}: cache_creation is not an object")
    tools = result.get("server_tool_use") or {}
    if not isinstance(tools, Mapping):
        raise ConnectorError(f"{where}: server_tool_use is not an object")
    return usage_line(
        day,
        result,
        "workspace_id",
        Tokens(
            input=count(result.get("uncached_input_tokens"), f"{where} uncached_input_tokens"),
            output=count(result.get("output_tokens"), f"{where} output_tokens"),
            cache_read=count(result.get("cache_read_input_tokens"), f"{where} cache_read"),
            cache_write_5m=count(cache.get("ephemeral_5m_input_tokens"), f"{where} 5m writes"),
            cache_write_1h=count(cache.get("ephemeral_1h_input_tokens"), f"{where} 1h writes"),
            web_search_requests=count(tools.get("web_search_requests"), f"{where} web searches"),
        ),
        where,
        tier_of(result, TIERS, where),
    )


def _cost(day: date, result: Mapping[str, Any]) -> CostLine:
    where = f"anthropic cost {day}"
    currency = result.get("currency", "USD")
    if currency != "USD":
        raise ConnectorError(f"{where}: currency {currency!r}, only USD is reconciled")
    cost_type = result.get("cost_type")
    token_type = result.get("token_type")
    token_class = TOKEN_TYPES.get(token_type) if isinstance(token_type, str) else None
    if cost_type == "web_search":
        token_class = WEB_SEARCH
    description = text_or_none(result.get("description"), f"{where} description")
    return CostLine(
        day=day,
        scope=text_or_none(result.get("workspace_id"), f"{where} workspace_id"),
        model=text_or_none(result.get("model"), f"{where} model"),
        token_class=token_class,
        # the amount is in cents, as a decimal string: "123.45" is $1.2345
        amount=money(result.get("amount"), f"{where} amount") / CENTS,
        label=description or str(cost_type or "cost"),
        tier=tier_of(result, TIERS, where),
    )
