"""A local stand-in for Anthropic's and OpenAI's admin report endpoints, in their documented
shapes (../shared/research/pricing-billing.md §3.1-3.2): daily buckets, `has_more` /
`next_page` pagination with a small page size, an admin key checked, and faults on demand
(a status such as 429 or 500 answered first, with its headers).

`ProviderData.from_truth` turns a generated fleet's truth into the reports a provider would
give for it, with deliberate faults.
"""

from __future__ import annotations

import base64
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

import msgspec
import orjson

from node_agent.simulate import prices
from node_agent.simulate.truth import Truth
from shared.events import Tokens

ANTHROPIC_KEY = "sk-ant-admin01-test"
OPENAI_KEY = "sk-admin-test"
MTOK = Decimal(1_000_000)
CLASS_TOKEN_TYPE = {
    "input": "uncached_input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_input_tokens",
    "cache_write_5m": "cache_creation.ephemeral_5m_input_tokens",
    "cache_write_1h": "cache_creation.ephemeral_1h_input_tokens",
}
OPENAI_LINE = {"input": "input", "cache_read": "cached input", "output": "output"}


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


@dataclass
class ProviderData:
    """Results per UTC day for each report; a test fills them or `from_truth` does."""

    anthropic_usage: dict[date, list[dict[str, Any]]] = field(default_factory=dict)
    anthropic_cost: dict[date, list[dict[str, Any]]] = field(default_factory=dict)
    openai_usage: dict[date, list[dict[str, Any]]] = field(default_factory=dict)
    openai_costs: dict[date, list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def from_truth(
        cls,
        truth: Truth,
        keys: Mapping[tuple[str, str], tuple[str, str, str]],
        *,
        output_rate: Mapping[str, Decimal] | None = None,
        to_1h: Mapping[tuple[str, str, str], int] | None = None,
        unbilled: set[tuple[str, str, str]] | None = None,
    ) -> ProviderData:
        """What the providers report for the truth's calls. `keys`: (machine, profile) ->
        (provider, key id, workspace or project); other profiles are not theirs.
        Faults: `output_rate` bills a model's output at another rate (USD/MTok);
        `to_1h` moves that many 5-minute cache writes of (key, model, day) to the 1-hour tier
        (and bills them so); `unbilled` (key, model, day) are on neither report (the fleet
        filed them under a key that did not make them)."""
        data = cls()
        sums: dict[tuple[str, str, str, str, str], list[Any]] = defaultdict(
            lambda: [Tokens(), Decimal(0)]
        )
        for (machine, profile, model, when), total in truth.total_by(
            "machine", "profile", "model", "day"
        ).items():
            if (machine, profile) not in keys:
                continue
            provider, key, scope = keys[(machine, profile)]
            entry = sums[(provider, key, scope, model, when)]
            entry[0] = entry[0] + total.tokens
            entry[1] += total.cost
        for (provider, key, scope, model, day_text), (tokens, cost) in sorted(sums.items()):
            if (key, model, day_text) in (unbilled or set()):
                continue
            day = date.fromisoformat(day_text)
            tokens = msgspec.structs.replace(
                tokens, output=tokens.output + tokens.reasoning, reasoning=0
            )
            amounts = _amounts(model, tokens, cost, output_rate or {})
            if moved := (to_1h or {}).get((key, model, day_text), 0):
                # the fleet read these as 5-minute writes; the provider billed the 1-hour tier
                rates = _rates(model)
                amounts["cache_write_5m"] -= moved * (rates.cache_write_5m or 0) / MTOK
                amounts["cache_write_1h"] += moved * (rates.cache_write_1h or 0) / MTOK
                tokens = msgspec.structs.replace(
                    tokens,
                    cache_write_5m=tokens.cache_write_5m - moved,
                    cache_write_1h=tokens.cache_write_1h + moved,
                )
            amounts = {k: v for k, v in amounts.items() if v}
            if provider == "anthropic":
                data.anthropic_usage.setdefault(day, []).append(
                    _anthropic_usage(key, scope, model, tokens)
                )
                data.anthropic_cost.setdefault(day, []).extend(
                    _anthropic_costs(scope, model, amounts)
                )
            else:
                data.openai_usage.setdefault(day, []).append(
                    _openai_usage(key, scope, model, tokens)
                )
                data.openai_costs.setdefault(day, []).extend(_openai_costs(scope, model, amounts))
        return data


# The cost report's cents per call at list price, for a Sonnet 4.5 call of 1,000 input, 20,000
# output and 100,000 cache-read tokens ($3, $15 and $0.30 per MTok): $0.333.
LIST_CENTS: Final = (
    ("uncached_input_tokens", Decimal("0.3")),
    ("output_tokens", Decimal(30)),
    ("cache_read_input_tokens", Decimal(3)),
)


def bill_anthropic_day(
    data: ProviderData,
    day: date,
    model: str,
    tokens: Tokens,
    calls: int,
    cents: tuple[tuple[str, Decimal], ...],
) -> None:
    """`day` on key `apikey_1` (no workspace): `calls` calls of `tokens` each, and per token
    type the cost report's cents per call (Anthropic's `amount` is in cents)."""
    data.anthropic_usage[day] = [
        {
            "api_key_id": "apikey_1",
            "workspace_id": None,
            "model": model,
            "uncached_input_tokens": tokens.input * calls,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "cache_read_input_tokens": tokens.cache_read * calls,
            "output_tokens": tokens.output * calls,
        }
    ]
    data.anthropic_cost[day] = [
        {
            "amount": str(per_call * calls),
            "currency": "USD",
            "workspace_id": None,
            "cost_type": "tokens",
            "token_type": token_type,
            "model": model,
            "description": token_type,
        }
        for token_type, per_call in cents
    ]


def _amounts(
    model: str, tokens: Tokens, cost: Decimal, output_rate: Mapping[str, Decimal]
) -> dict[str, Decimal]:
    """The billed dollars per class: list rates per class, and whatever the call-by-call
    truth adds (long-context premiums) on input, so that they sum to the truth's cost."""
    price = prices.lookup(model)
    assert price is not None, model
    rates = price.standard
    amounts: dict[str, Decimal] = {
        "output": tokens.output * rates.output / MTOK,
        "cache_read": tokens.cache_read * rates.cache_read / MTOK,
        "cache_write_5m": tokens.cache_write_5m * (rates.cache_write_5m or 0) / MTOK,
        "cache_write_1h": tokens.cache_write_1h * (rates.cache_write_1h or 0) / MTOK,
        "web_search": tokens.web_search_requests * price.web_search_per_request,
    }
    amounts["input"] = cost - sum(amounts.values())
    if model in output_rate:
        amounts["output"] = tokens.output * output_rate[model] / MTOK
    return amounts


def _rates(model: str) -> prices.Rates:
    price = prices.lookup(model)
    assert price is not None, model
    return price.standard


def _anthropic_usage(key: str, scope: str, model: str, tokens: Tokens) -> dict[str, Any]:
    return {
        "api_key_id": key,
        "workspace_id": scope,
        "model": model,
        "service_tier": "standard",
        "context_window": "0-200k",  # the long-context premium is on input (see _amounts)
        "uncached_input_tokens": tokens.input,
        "cache_creation": {
            "ephemeral_5m_input_tokens": tokens.cache_write_5m,
            "ephemeral_1h_input_tokens": tokens.cache_write_1h,
        },
        "cache_read_input_tokens": tokens.cache_read,
        "output_tokens": tokens.output,
        "server_tool_use": {"web_search_requests": tokens.web_search_requests},
    }


def _anthropic_costs(scope: str, model: str, amounts: dict[str, Decimal]) -> list[dict[str, Any]]:
    out = []
    for cls, dollars in amounts.items():
        search = cls == "web_search"
        out.append(
            {
                "amount": str(dollars * 100),  # cents, as a decimal string
                "currency": "USD",
                "workspace_id": scope,
                "description": "Web Search Usage" if search else f"{model} {cls}",
                "cost_type": "web_search" if search else "tokens",
                "token_type": None if search else CLASS_TOKEN_TYPE[cls],
                "model": None if search else model,
                "service_tier": None if search else "standard",
                "context_window": None if search else "0-200k",
            }
        )
    return out


def _openai_usage(key: str, scope: str, model: str, tokens: Tokens) -> dict[str, Any]:
    return {
        "object": "organization.usage.completions.result",
        "input_tokens": tokens.input + tokens.cache_read,  # includes the cached ones
        "input_cached_tokens": tokens.cache_read,
        "output_tokens": tokens.output,
        "input_audio_tokens": 0,
        "output_audio_tokens": 0,
        "num_model_requests": 1,
        "project_id": scope,
        "user_id": None,
        "api_key_id": key,
        "model": model,
        "batch": False,
    }


def _openai_costs(scope: str, model: str, amounts: dict[str, Decimal]) -> list[dict[str, Any]]:
    return [
        {
            "object": "organization.costs.result",
            # dollars; a number on the wire (its shortest text is exact for these)
            "amount": {"value": float(dollars), "currency": "usd"},
            "line_item": f"{model}, {OPENAI_LINE[cls]}",
            "project_id": scope,
            "api_key_id": None,
            "quantity": None,
        }
        for cls, dollars in amounts.items()
    ]


class ProviderApi:
    """The four endpoints on 127.0.0.1; `faults[path]` is answered first, one per request."""

    def __init__(
        self,
        data: ProviderData,
        *,
        page_size: int = 2,
        anthropic_key: str = ANTHROPIC_KEY,
        openai_key: str = OPENAI_KEY,
    ) -> None:
        self.data = data
        self.page_size = page_size
        self.keys = {"anthropic": anthropic_key, "openai": openai_key}
        self.faults: dict[str, list[tuple[int, dict[str, str]]]] = defaultdict(list)
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        # more endpoints (tests.analytics_api): path -> (query, headers) -> (status, body)
        self.extra: dict[str, Callable[[dict[str, list[str]], dict[str, str]], tuple[int, Any]]]
        self.extra = {}
        self.delay = 0.0  # seconds each answer takes (a slow provider)
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                api.answer(self)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator[ProviderApi]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == path)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append((parts.path, query, headers))
            fault = self.faults[parts.path].pop(0) if self.faults[parts.path] else None
        if self.delay:
            time.sleep(self.delay)
        if fault is not None:
            status, extra = fault
            self._send(handler, status, {"error": {"message": f"fault {status}"}}, extra)
            return
        if parts.path in self.extra:
            self._send(handler, *self.extra[parts.path](query, headers))
            return
        routes = {
            "/v1/organizations/usage_report/messages": ("anthropic", self.data.anthropic_usage),
            "/v1/organizations/cost_report": ("anthropic", self.data.anthropic_cost),
            "/v1/organization/usage/completions": ("openai", self.data.openai_usage),
            "/v1/organization/costs": ("openai", self.data.openai_costs),
        }
        if parts.path not in routes:
            self._send(handler, 404, {"error": {"message": "no such endpoint"}})
            return
        provider, days = routes[parts.path]
        given = headers.get("x-api-key") if provider == "anthropic" else None
        if provider == "openai":
            given = headers.get("authorization", "").removeprefix("Bearer ")
        if given != self.keys[provider]:
            if given and given.startswith("sk-ant-api"):
                message = "this API key lacks the admin scope: use an Admin API key"
                self._send(
                    handler, 403, {"error": {"type": "permission_error", "message": message}}
                )
            else:
                self._send(handler, 401, {"error": {"message": "invalid api key"}})
            return
        self._send(handler, 200, self._page(provider, days, query))

    def _page(
        self, provider: str, days: dict[date, list[dict[str, Any]]], query: dict[str, list[str]]
    ) -> dict[str, Any]:
        if provider == "anthropic":
            first = datetime.fromisoformat(query["starting_at"][0].replace("Z", "+00:00")).date()
            end = datetime.fromisoformat(query["ending_at"][0].replace("Z", "+00:00")).date()
        else:
            first = datetime.fromtimestamp(int(query["start_time"][0]), UTC).date()
            end = datetime.fromtimestamp(int(query["end_time"][0]), UTC).date()
        every = [first + timedelta(days=i) for i in range((end - first).days)]
        cursor = query.get("page", [""])[0]
        start = int(base64.b64decode(cursor)) if cursor else 0
        size = min(self.page_size, int(query.get("limit", ["7"])[0]))
        chosen = every[start : start + size]
        more = start + size < len(every)
        buckets = [self._bucket(provider, day, days.get(day, [])) for day in chosen]
        page: dict[str, Any] = {
            "data": buckets,
            "has_more": more,
            "next_page": base64.b64encode(str(start + size).encode()).decode() if more else None,
        }
        if provider == "openai":
            page["object"] = "page"
        return page

    def _bucket(self, provider: str, day: date, results: list[dict[str, Any]]) -> dict[str, Any]:
        # today's bucket ends in the future: the provider is still finalising it
        start, end = day_start(day), day_start(day + timedelta(days=1))
        if provider == "anthropic":
            return {
                "starting_at": start.isoformat().replace("+00:00", "Z"),
                "ending_at": end.isoformat().replace("+00:00", "Z"),
                "results": results,
            }
        return {
            "object": "bucket",
            "start_time": int(start.timestamp()),
            "end_time": int(end.timestamp()),
            "results": results,
        }

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: object,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = orjson.dumps(body)
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        for k, v in (headers or {}).items():
            handler.send_header(k, v)
        handler.end_headers()
        handler.wfile.write(data)
