"""Claude Enterprise's analytics cost reports on the local provider stand-in
(`tests.provider_api.ProviderApi`), in their documented shapes (the API reference's
`/v1/organizations/analytics/cost_report` and `/user_cost_report`, both `?beta=true`):

- amounts are decimal strings in fractional cents, `amount` post-discount, `list_amount` not;
- a bucket grouped by model holds its top 100 groups by amount and no remainder row; ungrouped
  it holds one combined row (none on a day without use);
- `data_refreshed_at`: buckets ending later are still being filled in;
- the user report: one row per user and day (`bucket_width=1d` needs `ending_at`), ranked by
  amount, `limit` rows a page, cursor paging;
- at most 31 days a query, nothing before 2026-01-01 (400 otherwise), `products[]` honoured;
- a key without `read:analytics` (the admin key) gets 403 `permission_error`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tests.provider_api import ProviderApi, day_start

ANALYTICS_KEY = "sk-ant-api01-analytics-test"
COST = "/v1/organizations/analytics/cost_report"
USER_COST = "/v1/organizations/analytics/user_cost_report"
CAP = 100


def _z(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class AnalyticsData:
    # per UTC day: (product, model, amount cents, list_amount cents)
    spend: dict[date, list[tuple[str, str, Decimal, Decimal]]] = field(default_factory=dict)
    # per UTC day: (user_id, email, product, amount cents, list_amount cents)
    users: dict[date, list[tuple[str, str, str, Decimal, Decimal]]] = field(default_factory=dict)
    refreshed_at: datetime | None = None  # None: now
    expire_cursors: int = 0  # the next this many requests with a cursor get 410 (refreshed)


def mount(api: ProviderApi, data: AnalyticsData, *, key: str = ANALYTICS_KEY) -> None:
    """Serve `data` at the two analytics paths of `api`."""

    def checked(query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any] | None:
        given = headers.get("x-api-key")
        if given != key:
            if given in api.keys.values():  # the admin key: no read:analytics scope
                message = "This API key does not have the read:analytics scope"
                return 403, {"error": {"type": "permission_error", "message": message}}
            return 401, {"error": {"type": "authentication_error", "message": "invalid x-api-key"}}
        if query.get("beta") != ["true"]:
            return 404, {"error": {"type": "not_found_error", "message": "not found"}}
        start = _when(query["starting_at"][0])
        end = _when(query["ending_at"][0])
        if start < datetime(2026, 1, 1, tzinfo=UTC) or end - start > timedelta(days=31):
            message = "starting_at must be 2026-01-01 or later and the range at most 31 days"
            return 400, {"error": {"type": "invalid_request_error", "message": message}}
        return None

    def page_of(items: list[Any], query: dict[str, list[str]], size: int) -> tuple[list[Any], Any]:
        cursor = query.get("page", [""])[0]
        at = int(base64.b64decode(cursor)) if cursor else 0
        more = at + size < len(items)
        nxt = base64.b64encode(str(at + size).encode()).decode() if more else None
        return items[at : at + size], {"has_more": more, "next_page": nxt}

    def envelope() -> dict[str, Any]:
        refreshed = data.refreshed_at or datetime.now(UTC)
        return {"data_refreshed_at": _z(refreshed), "organization_id": "org_test"}

    def cost(query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any]:
        if (refused := checked(query, headers)) is not None:
            return refused
        products = set(query.get("products[]", []))
        grouped = "model" in query.get("group_by[]", [])
        start = _when(query["starting_at"][0]).date()
        end = _when(query["ending_at"][0]).date()
        days = [start + timedelta(days=i) for i in range((end - start).days)]
        size = min(api.page_size, int(query.get("limit", ["7"])[0]))
        chosen, paging = page_of(days, query, size)
        buckets = []
        for day in chosen:
            rows = [r for r in data.spend.get(day, []) if not products or r[0] in products]
            results = []
            if grouped:
                by_model: dict[str, list[Decimal]] = {}
                for _, model, amount, listed in rows:
                    sums = by_model.setdefault(model, [Decimal(0), Decimal(0)])
                    sums[0] += amount
                    sums[1] += listed
                top = sorted(by_model.items(), key=lambda kv: -kv[1][0])[:CAP]
                results = [_cost_row(m, a, lst) for m, (a, lst) in top]
            elif rows:
                total = sum((r[2] for r in rows), Decimal(0))
                listed = sum((r[3] for r in rows), Decimal(0))
                results = [_cost_row(None, total, listed)]
            buckets.append(
                {
                    "starting_at": _z(day_start(day)),
                    "ending_at": _z(day_start(day + timedelta(days=1))),
                    "results": results,
                }
            )
        return 200, {"data": buckets, **paging, **envelope()}

    def user_cost(query: dict[str, list[str]], headers: dict[str, str]) -> tuple[int, Any]:
        if (refused := checked(query, headers)) is not None:
            return refused
        if "page" in query and data.expire_cursors > 0:
            data.expire_cursors -= 1
            message = "The page cursor has expired: the data was refreshed; start again"
            return 410, {"error": {"type": "gone_error", "message": message}}
        if query.get("bucket_width") == ["1d"] and "ending_at" not in query:
            return 400, {"error": {"type": "invalid_request_error", "message": "ending_at"}}
        products = set(query.get("products[]", []))
        start = _when(query["starting_at"][0]).date()
        end = _when(query["ending_at"][0]).date()
        rows = []
        for day in sorted(d for d in data.users if start <= d < end):
            mine: dict[tuple[str, str], list[Decimal]] = {}
            for user, email, product, amount, listed in data.users[day]:
                if products and product not in products:
                    continue
                sums = mine.setdefault((user, email), [Decimal(0), Decimal(0)])
                sums[0] += amount
                sums[1] += listed
            for (user, email), (amount, listed) in sorted(mine.items(), key=lambda kv: -kv[1][0]):
                rows.append(
                    {
                        "actor": {
                            "type": "user_actor",
                            "user_id": user,
                            "email_address": email,
                            "name": email.split("@")[0].title(),
                        },
                        **_cost_row(None, amount, listed),
                        "starting_at": _z(day_start(day)),
                        "ending_at": _z(day_start(day + timedelta(days=1))),
                    }
                )
        limit = min(int(query.get("limit", ["20"])[0]), api.page_size)
        chosen, paging = page_of(rows, query, limit)
        return 200, {"data": chosen, **paging, **envelope()}

    api.extra[COST] = cost
    api.extra[USER_COST] = user_cost


def _cost_row(model: str | None, amount: Decimal, listed: Decimal) -> dict[str, Any]:
    return {
        "amount": f"{amount:f}",
        "list_amount": f"{listed:f}",
        "currency": "USD",
        "model": model,
        "product": None,
        "cost_type": None,
        "token_type": None,
        "context_window": None,
        "inference_geo": None,
        "speed": None,
        "requests": 3,
    }
