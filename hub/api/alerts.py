"""The alert endpoints: viewers list alerts and silences; operators acknowledge, silence,
retry dead letters and raise a test alert (the token's name is who).

(No `from __future__ import annotations`: FastAPI reads the endpoints' local type aliases.)
"""

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from hub.alerts.match import kind_problem, scope_problem
from hub.alerts.outbox import ALERT_STATES, DELIVERY_STATES, Outbox, Silence
from hub.alerts.views import alert_row, sample_finding, silence_row
from hub.api.auth import Principal
from hub.api.errors import ApiError
from hub.findings import Severity

API = "/api/v1"
AlertId = Annotated[str, Field(min_length=1, max_length=300)]
StateFilter = Literal["open", "pending", "delivered", "dead", "silenced", "acked"]
assert set(StateFilter.__args__) == set(ALERT_STATES) | set(DELIVERY_STATES)  # type: ignore[attr-defined]


class DeliveryOut(BaseModel):
    sink: str
    state: str = Field(description="pending, delivered, dead (retry by hand) or silenced")
    attempts: int
    next_at: float | None
    last_at: float | None
    last_result: str | None
    delivered_at: float | None


class Acked(BaseModel):
    who: str
    when: float
    until: float | None = Field(description="epoch seconds: the ack lapses then; null: never")
    lapsed: bool = Field(description="past until: the alert reads as unacknowledged again")


class AlertOut(BaseModel):
    id: str
    kind: str
    scope: str
    severity: str
    state: str = Field(description="open, pending, delivered, dead, silenced or acked")
    text: str
    start: float
    raised: float
    evidence: dict[str, str]
    acked: Acked | None
    silenced_by: int | None
    deliveries: list[DeliveryOut]


class AlertsPage(BaseModel):
    alerts: list[AlertOut]
    silences: list[Silence] = Field(description="the silences in force")


class AckRequest(BaseModel):
    id: AlertId
    until: float | None = Field(
        default=None,
        gt=0,
        le=2**40,
        description="epoch seconds: the ack lapses then (default: it holds for good)",
    )


class RetryRequest(BaseModel):
    id: AlertId | None = Field(default=None, description="one alert's dead deliveries")
    all: bool = Field(default=False, description="every dead letter")


class Retried(BaseModel):
    retried: int


class TestAlert(BaseModel):
    severity: Severity = Severity.INFO
    scope: str = Field(default="fleet", min_length=1, max_length=200)
    text: str | None = Field(default=None, min_length=1, max_length=2000)
    id: AlertId | None = Field(default=None, description="default: a new one (test:...)")


class SilenceRequest(BaseModel):
    scope: str = Field(
        default="*", min_length=1, max_length=200, description="e.g. machine=spark02"
    )
    kind: str = Field(default="*", min_length=1, max_length=64, description="e.g. cache_*")
    minutes: float = Field(gt=0, le=366 * 24 * 60, description="how long it lasts")
    why: str = Field(min_length=1, max_length=500)


class Ended(BaseModel):
    ended: bool


def alert_routes(
    outbox: Outbox,
    reader: Callable[..., Principal],
    operator: Callable[..., Principal],
) -> APIRouter:
    router = APIRouter(prefix=f"{API}/alerts", tags=["alerts"])
    Reader = Annotated[Principal, Depends(reader)]
    Operator = Annotated[Principal, Depends(operator)]

    def found(alert_id: str) -> dict[str, Any]:
        record = outbox.alert(alert_id)
        if record is None:
            raise ApiError(404, f"no alert {alert_id!r} (see GET {API}/alerts)")
        return alert_row(record)

    @router.get("", response_model=AlertsPage)
    def alerts(
        _: Reader,
        state: StateFilter | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> dict[str, Any]:
        """Newest first, with their deliveries; `state=dead` lists the dead letters."""
        return {
            "alerts": [alert_row(r) for r in outbox.alerts(limit, state)],
            "silences": [silence_row(s) for s in outbox.silences()],
        }

    @router.post("/ack", response_model=AlertOut)
    def ack(who: Operator, body: AckRequest) -> dict[str, Any]:
        """Acknowledge an alert, until a time or for good. An ack in force is kept unless
        this one lasts longer; past its `until` the alert reads as unacknowledged again."""
        found(body.id)
        try:
            outbox.ack(body.id, who.name, body.until)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from None
        return found(body.id)

    @router.post("/retry", response_model=Retried)
    def retry(_: Operator, body: RetryRequest) -> dict[str, int]:
        """Send an alert's dead (or silenced) deliveries again now, or every dead letter
        (`all`), with the same webhook-id."""
        if (body.id is None) == (not body.all):
            raise ApiError(422, "give either id (one alert) or all: true (every dead letter)")
        if body.id is not None:
            found(body.id)
        return {"retried": outbox.retry(body.id)}

    @router.post("/test", response_model=AlertOut)
    def test(_: Operator, body: TestAlert) -> dict[str, Any]:
        """Raise a test alert (kind `test`) through the sinks that route it."""
        if problem := scope_problem(body.scope):
            raise ApiError(422, f"scope: {problem}")
        finding = sample_finding(
            time.time(), severity=body.severity, scope=body.scope, text=body.text, alert_id=body.id
        )
        outbox.raise_finding(finding)
        return found(finding.id)

    @router.get("/silences", response_model=list[Silence])
    def silences(_: Reader) -> list[dict[str, Any]]:
        return [silence_row(s) for s in outbox.silences()]

    @router.post("/silences", response_model=Silence)
    def silence(who: Operator, body: SilenceRequest) -> dict[str, Any]:
        """Hold the delivery of matching alerts (raised or still pending) for `minutes`."""
        for problem in (scope_problem(body.scope), kind_problem(body.kind)):
            if problem:
                raise ApiError(422, problem)
        until = time.time() + body.minutes * 60
        return silence_row(outbox.silence(body.scope, body.kind, until, who.name, body.why))

    @router.delete("/silences/{silence_id}", response_model=Ended)
    def unsilence(_: Operator, silence_id: Annotated[int, Path(ge=1, le=2**62)]) -> dict[str, bool]:
        if not outbox.unsilence(silence_id):
            raise ApiError(
                404, f"no silence #{silence_id} in force (see GET {API}/alerts/silences)"
            )
        return {"ended": True}

    return router
