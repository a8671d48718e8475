"""`GET /api/v1/reconcile`: the fleet's figures held against the providers' reports, now;
`GET /api/v1/reconcile/latest`: the latest run of the usual days (the schedule's), never a new
one (what the dashboard's Reconciliation tab reads).

It asks the providers (so it takes seconds) and raises the drifts it finds into the alert
outbox, idempotently: asking twice raises each drift once. Viewers may ask; so that they cannot
make the hub hammer the providers' rate-limited admin APIs, readers asking at once share one
run, and the same question within SHARE_S gets the same answer.

(No `from __future__ import annotations`: FastAPI reads the endpoints' local type aliases.)
"""

from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query, Response

from hub.api.auth import Principal
from hub.api.errors import ApiError
from hub.reconcile.days import latest_json
from hub.reconcile.run import Reconciler, resolve_days
from shared.cli import day_range_error

API = "/api/v1"
SHARE_S = 60.0


def reconcile_routes(reconciler: Reconciler, reader: Callable[..., Principal]) -> APIRouter:
    router = APIRouter(prefix=f"{API}/reconcile", tags=["reconcile"])
    Reader = Annotated[Principal, Depends(reader)]

    @router.get(
        "",
        response_class=Response,
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    def reconcile(
        _: Reader,
        since: Annotated[date | None, Query(description="first UTC day")] = None,
        until: Annotated[date | None, Query(description="last UTC day")] = None,
        provider: Literal["anthropic", "openai"] | None = None,
    ) -> Response:
        """{"rows": [{provider, day, model, key, fleet, billed, drift, cause, ...}],
        "findings": [...], "errors": {provider: why}, ...} (money: exact decimal strings)."""
        if problem := day_range_error(*resolve_days(reconciler.settings, since, until)):
            raise ApiError(422, problem)
        if not reconciler.settings.providers:
            raise ApiError(
                422,
                "the hub's config names no provider: add [reconcile.anthropic] or "
                "[reconcile.openai] with a key_file",
            )
        outcome = reconciler.run(since, until, (provider,) if provider else None, max_age=SHARE_S)
        body: dict[str, Any] = outcome.to_json()
        return Response(orjson.dumps(body), media_type="application/json")

    @router.get(
        "/latest",
        response_class=Response,
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    def latest(_: Reader) -> Response:
        """{"configured", "setup", "running", "at", "interval", "result": the latest run of
        the usual days as `GET /api/v1/reconcile` gives it, or null before the first}."""
        return Response(orjson.dumps(latest_json(reconciler)), media_type="application/json")

    return router
