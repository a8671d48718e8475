"""OpenAI's organization API: completions usage (tokens per key) and costs (dollars).

Usage: `/v1/organization/usage/completions`, daily buckets grouped by project, API key and
model; its `input_tokens` include the cached ones, so uncached input is the difference. Costs:
`/v1/organization/costs`, daily, grouped by project and line item; `amount.value` is in
**dollars** (a number, or a string behind some proxies), currency lowercase `usd`. Buckets are
UTC days in Unix seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock_time
from typing import Any, Final

from hub.reconcile.model import ConnectorError, CostLine, ProviderReport, UsageLine
from hub.reconcile.settings import ProviderSettings
from hub.reconcile.transport import Pager, Transport
from hub.reconcile.values import count, day_of_epoch, instant_of, money, text_or_none
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
    *,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    first_wait: float = 1.0,
) -> ProviderReport:
    """The completions usage and the costs for UTC days `first` to `last` (inclusive)."""
    headers = {"Authorization": f"Bearer {settings.read_key()}"}
    pager = Pager(settings, transport, headers, sleep, first_wait)
    start = int(datetime.combine(first, clock_time(), UTC).timestamp())
    end = int(datetime.combine(last + timedelta(days=1), clock_time(), UTC).timestamp())
    span = [("start_time", str(start)), ("end_time", str(end)), ("bucket_width", "1d")]
    report = ProviderReport("openai")
    fetched = now()
    usage_query = [*span, ("limit", "31")]
    usage_query += [("group_by", g) for g in ("project_id", "api_key_id", "model")]
    for bucket in _buckets(pager, USAGE, usage_query):
        day = day_of_epoch(bucket.get("start_time"), f"{USAGE} start_time")
        if instant_of(bucket.get("end_time"), f"{USAGE} end_time") > fetched:
            report.partial_days.add(day)
        report.usage.extend(_usage(day, r) for r in _results(bucket, USAGE))
    cost_query = [*span, ("limit", "180"), ("group_by", "project_id"), ("group_by", "line_item")]
    for bucket in _buckets(pager, COSTS, cost_query):
        day = day_of_epoch(bucket.get("start_time"), f"{COSTS} start_time")
        if instant_of(bucket.get("end_time"), f"{COSTS} end_time") > fetched:
            report.partial_days.add(day)
        report.costs.extend(_cost(day, r) for r in _results(bucket, COSTS))
    return report


def _buckets(pager: Pager, path: str, query: list[tuple[str, str]]) -> list[Mapping[str, Any]]:
    buckets: list[Mapping[str, Any]] = []
    for page in pager.pages(path, query):
        if not all(isinstance(b, Mapping) for b in page["data"]):
            raise ConnectorError(f"openai {path}: a bucket is not an object")
        buckets.extend(page["data"])
    return buckets


def _results(bucket: Mapping[str, Any], path: str) -> list[Mapping[str, Any]]:
    results = bucket.get("results", bucket.get("result"))
    if not isinstance(results, list) or not all(isinstance(r, Mapping) for r in results):
        raise ConnectorError(f"openai {path}: a bucket's results are not a list of objects")
    return list(results)


def _usage(day: date, result: Mapping[str, Any]) -> UsageLine:
    where = f"openai usage {day}"
    prompt = count(result.get("input_tokens"), f"{where} input_tokens")
    cached = count(result.get("input_cached_tokens"), f"{where} input_cached_tokens")
    if cached > prompt:
        raise ConnectorError(f"{where}: input_cached_tokens {cached} exceed input_tokens {prompt}")
    model = text_or_none(result.get("model"), f"{where} model")
    return UsageLine(
        day=day,
        key=text_or_none(result.get("api_key_id"), f"{where} api_key_id"),
        scope=text_or_none(result.get("project_id"), f"{where} project_id"),
        model=model or "(no model)",
        # input_tokens include the cached ones: the fleet's buckets are disjoint
        tokens=Tokens(
            input=prompt - cached,
            cache_read=cached,
            output=count(result.get("output_tokens"), f"{where} output_tokens"),
        ),
    )


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
