"""`GET /api/v1/reconcile`: the fleet's figures held against the providers' reports, now;
`POST /api/v1/reconcile/import`: a provider's billing export filed in the store (operators).
`GET /api/v1/reconcile/latest`: the latest run of the usual days (the schedule's), never a new
one (what the dashboard's Reconciliation tab reads).

It asks the providers (so it takes seconds) and raises the drifts it finds into the alert
outbox, idempotently: asking twice raises each drift once. Viewers may ask; so that they cannot
make the hub hammer the providers' rate-limited admin APIs, readers asking at once share one
run, and the same question within SHARE_S gets the same answer (an import forgets it).

(No `from __future__ import annotations`: FastAPI reads the endpoints' local type aliases.)
"""

import base64
import binascii
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from hub.api.auth import Principal
from hub.api.errors import ApiError
from hub.reconcile.days import latest_json
from hub.reconcile.import_run import import_bill
from hub.reconcile.imports import MAX_BYTES, ImportFileError, ImportOptions, Rate, parse_rate
from hub.reconcile.local import StoreBilled
from hub.reconcile.run import Reconciler, resolve_days
from shared.cli import day_range_error

API = "/api/v1"
SHARE_S = 60.0
Provider = Literal["anthropic", "openai", "deepseek", "qwen", "zhipu", "cursor"]


class ImportRequest(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=300,
        pattern=r"^[^\x00-\x1f\x7f]+$",  # said in one-line errors: no control characters
        description="the file's name, for errors",
    )
    format: Literal["generic", "dashscope"] = "generic"
    provider: Literal["deepseek", "qwen", "zhipu"] | None = None
    rates: list[str] = Field(
        default_factory=list, max_length=10, description="CUR=UNITS_PER_USD@YYYY-MM-DD"
    )
    tz: str | None = Field(default=None, max_length=64, description="zone of offset-less times")
    exported: date = Field(description="the UTC day the export was taken (later days: partial)")
    content_base64: str = Field(max_length=(MAX_BYTES * 4) // 3 + 4)


def reconcile_routes(
    reconciler: Reconciler,
    reader: Callable[..., Principal],
    operator: Callable[..., Principal] | None = None,
) -> APIRouter:
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
        provider: Provider | None = None,
    ) -> Response:
        """{"rows": [{provider, day, model, key, fleet, billed, drift, cause, ...}],
        "findings": [...], "errors": {provider: why}, ...} (money: exact decimal strings)."""
        if problem := day_range_error(*resolve_days(reconciler.settings, since, until)):
            raise ApiError(422, problem)
        if not reconciler.settings.providers and reconciler.local is None:
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

    local = reconciler.local
    if operator is None or not isinstance(local, StoreBilled):
        return router
    Operator = Annotated[Principal, Depends(operator)]

    @router.post("/import")
    def import_export(_: Operator, body: ImportRequest) -> dict[str, Any]:
        """File a billing export's rows in the store (a bad row is an error naming its line and
        field; the good rows are kept). Idempotent: the same file again changes nothing."""
        try:
            data = base64.b64decode(body.content_base64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "content_base64 is not base64") from None
        try:
            rates: dict[str, Rate] = {r.currency: r for r in map(parse_rate, body.rates)}
            if body.tz is not None:
                ZoneInfo(body.tz)
        except ValueError as exc:
            raise ApiError(422, f"rates: {exc}") from None
        except ZoneInfoNotFoundError:
            raise ApiError(422, f"tz {body.tz!r} is not an IANA zone") from None
        options = ImportOptions(body.provider, rates, body.tz)
        try:
            result = import_bill(local.path, body.name, data, body.format, options, body.exported)
        except ImportFileError as exc:
            raise ApiError(422, str(exc)) from None
        reconciler.forget()
        return result

    return router
