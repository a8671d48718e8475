"""OpenAI's organization API: completions usage (tokens per key) and costs (dollars).

Usage: `/v1/organization/usage/completions`, daily buckets grouped by project, API key and
model; its `input_tokens` include the cached ones, so uncached input is the difference. Costs:
`/v1/organization/costs`, daily, grouped by project and line item; `amount.value` is in
**dollars** (a number, or a string behind some proxies), currency lowercase `usd`. Buckets are
UTC days in Unix seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Final

from hub.reconcile.model import ConnectorError, CostLine, ProviderReport, UsageLine
from hub.reconcile.settings import ProviderSettings
from hub.reconcile.transport import REAL_TIME, Buckets, Pager, Timing, Transport
from hub.reconcile.values import count, day_of_epoch, money, text_or_none, usage_line
from shared.events import Tokens

USAGE: Final = "/v1/organization/usage/completions"
COSTS: Final = "/v1/organization/costs"
# line items read "MODEL, KIND" (e.g. "gpt-5-codex, cached input"): KIND to the token class
LINE_KINDS: Final = {"input": "input", "cached input": "cache_read", "output": "output"}


def fetch(
    settings: ProviderSettings,
    transport: Transport,
    first: date,
    last: date,
    timing: Timing = REAL_TIME,
) -> ProviderReport:
    """The completions usage and the costs for UTC days `first` to `last` (inclusive)."""
    headers = {"Authorization": f"Bearer {settings.read_key()}"}
    pager = Pager(settings, transport, headers, timing)
    start = int(datetime.combine(first, clock_time(), UTC).timestamp())
    end = int(datetime.combine(last + timedelta(days=1), clock_time(), UTC).timestamp())
    span = [("start_time", str(start)), ("end_time", str(end)), ("bucket_width", "1d")]
    usage_by = [("group_by", g) for g in ("project_id", "api_key_id", "model")]
    cost_by = [("group_by", "project_id"), ("group_by", "line_item")]
    report = ProviderReport("openai")
    fetched = timing.now()
    usage_query = [*span, ("limit", "31"), *usage_by]
    usage = Buckets(USAGE, usage_query, "start_time", "end_time", day_of_epoch)
    report.usage = pager.lines(usage, _usage, report.partial_days, fetched)
    costs = Buckets(
        COSTS, [*span, ("limit", "180"), *cost_by], "start_time", "end_time", day_of_epoch
    )
    report.costs = pager.lines(costs, _cost, report.partial_days, fetched)
    return report


def _usage(day: date, result: Mapping[str, Any]) -> UsageLine:
    where = f"openai usage {day}"
    prompt = count(result.get("input_tokens"), f"{where} input_tokens")
    cached = count(result.get("input_cached_tokens"), f"{where} input_cached_tokens")
    if cached > prompt:
        raise ConnectorError(f"{where}: input_cached_tokens {cached} exceed input_tokens {prompt}")
    # input_tokens include the cached ones: the fleet's buckets are disjoint
    tokens = Tokens(
        input=prompt - cached,
        cache_read=cached,
        output=count(result.get("output_tokens"), f"{where} output_tokens"),
    )
    return usage_line(day, result, "project_id", tokens, where)


def _cost(day: date, result: Mapping[str, Any]) -> CostLine:
    where = f"openai cost {day}"
    amount = result.get("amount")
    if not isinstance(amount, Mapping):
        raise ConnectorError(f"{where}: amount is not an object")
    currency = amount.get("currency", "usd")
    if not isinstance(currency, str) or currency.lower() != "usd":
        raise ConnectorError(f"{where}: currency {currency!r}, only USD is reconciled")
    line_item = text_or_none(result.get("line_item"), f"{where} line_item") or "costs"
    model, _, kind = line_item.rpartition(",")
    token_class = LINE_KINDS.get(kind.strip().lower()) if model else None
    return CostLine(
        day=day,
        scope=text_or_none(result.get("project_id"), f"{where} project_id"),
        model=model.strip() if token_class else None,
        token_class=token_class,
        amount=money(amount.get("value"), f"{where} amount.value"),  # dollars, not cents
        label=line_item,
    )
