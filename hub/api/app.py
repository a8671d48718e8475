"""The hub's HTTP API: JSON under /api/v1/, a live stream of changes, /metrics.

FastAPI on uvicorn: the OpenAPI document comes from the typed endpoints themselves (so the
fuzzer and clients read what the code does), and both are widely used and kept up. Handlers
are plain functions run in the server's thread pool, as the service answers under a lock.
(No `from __future__ import annotations`: FastAPI reads the endpoints' local type aliases.)
Every error is a JSON `{"error": "..."}` with its status; none is a traceback.
"""

import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import date
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub._schema import StoreError
from hub.alerts.outbox import Outbox
from hub.api import models as m
from hub.api import views
from hub.api.alert_metrics import AlertCollector
from hub.api.alerts import alert_routes
from hub.api.auth import AuthError, Principal, principal
from hub.api.budgets import add_budget_routes
from hub.api.errors import ApiError
from hub.api.json_body import json_pieces
from hub.api.metrics import CommandCounts, HubCollector, exposition, registry_for
from hub.api.mirror import mirror_routes
from hub.api.reconcile import reconcile_routes
from hub.api.stream import Broker
from hub.budgets.governor import Governor
from hub.commander import CommandsClosed
from hub.ledger import FLEET, Dimension, Period, profile_key
from hub.reconcile.run import Reconciler
from hub.service import FleetService
from hub.tokens import Role, TokenBook
from pricing.outcomes import OutcomeKeyError, check_outcome_keys
from pricing.rollup import UnknownGroupKeyError, check_keys
from shared.cli import day_range_error
from shared.config import ConfigError
from shared.outcomes import outcome_to_map

log = logging.getLogger(__name__)

API: Final = "/api/v1"
READERS: Final = frozenset({Role.VIEWER, Role.OPERATOR})
EVERYONE: Final = frozenset(Role)
OPERATORS: Final = frozenset({Role.OPERATOR})
_bearer = HTTPBearer(auto_error=False, description="a token from `fleet-hub token create`")
Rows = list[dict[str, Any]]


class Problem(BaseModel):
    error: str = Field(description="what is wrong and what to do")


class Health(BaseModel):
    status: Literal["ok"]
    hub: str
    version: str


class CommandRequest(BaseModel):
    machine: str = Field(min_length=1, max_length=63, description="the node's name")
    pid: int = Field(gt=0, lt=2**31)
    create_time: float | None = Field(
        default=None,
        ge=0,
        le=2**40,
        description="the process's start time (epoch s): a recycled pid never matches; "
        "omitted: the one the node reported for this pid",
    )


class CommandResult(BaseModel):
    ok: bool
    outcome: str = Field(
        description="the node's word (paused, resumed, killed, refused) or 'no answer'"
    )
    detail: str
    machine: str
    pid: int
    pids: list[int]


ERRORS: Final[dict[int | str, dict[str, Any]]] = {
    status: {"model": Problem} for status in (401, 403, 404, 422, 503)
}


def create_app(
    service: FleetService,
    tokens: TokenBook,
    *,
    hub_name: str,
    version: str,
    rejects: Callable[[], Mapping[str, int]] = dict,
    governor: Governor | None = None,
    alerts: Outbox | None = None,
    reconciler: Reconciler | None = None,
) -> FastAPI:
    broker = Broker(service)
    commands = CommandCounts()
    registry = registry_for(HubCollector(service, rejects, commands))
    if alerts is not None:
        registry.register(AlertCollector(alerts))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import asyncio

        broker.start(asyncio.get_running_loop())
        try:
            yield
        finally:
            broker.close()

    app = FastAPI(
        title="fleetmeter hub",
        version=version,
        description="The fleet's costs, nodes and commands. Bearer tokens: "
        "`fleet-hub token create NAME --role viewer|operator|agent`.",
        openapi_url=f"{API}/openapi.json",
        docs_url=f"{API}/docs",
        redoc_url=None,
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.broker = broker

    def needs(roles: frozenset[Role]) -> Callable[..., Principal]:
        def check(
            _: Annotated[Any, Depends(_bearer)] = None,
            authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
        ) -> Principal:
            return principal(tokens, authorization, roles)

        return check

    Reader = Annotated[Principal, Depends(needs(READERS))]
    Anyone = Annotated[Principal, Depends(needs(EVERYONE))]
    Operator = Annotated[Principal, Depends(needs(OPERATORS))]
    PeriodQ = Annotated[Period, Query(description="today, week (ISO) or month")]

    @app.exception_handler(AuthError)
    async def _auth(_: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.message}, exc.status, headers=headers)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: the API is under {API}/ (see {API}/openapi.json)"
        return JSONResponse({"error": message}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, 422)

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        log.error("store unavailable: %s", exc)
        return JSONResponse({"error": f"the hub's store is unavailable: {exc}"}, 503)

    @app.exception_handler(sqlite3.OperationalError)
    async def _busy(_: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        log.error("store busy or failing: %s", exc)  # locked past its busy timeout, disk full
        return JSONResponse({"error": f"the hub's store cannot answer now ({exc}): retry"}, 503)

    @app.exception_handler(CommandsClosed)
    async def _closed(_: Request, exc: CommandsClosed) -> JSONResponse:
        return JSONResponse({"error": f"{exc}: the hub is stopping, retry when it is back"}, 503)

    @app.exception_handler(ConfigError)
    async def _config(_: Request, exc: ConfigError) -> JSONResponse:
        log.error("%s", exc)  # e.g. a damaged tokens file: every request would fail alike
        return JSONResponse({"error": f"the hub cannot check tokens: {exc}"}, 503)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the API")
        return JSONResponse({"error": "unexpected error in the hub: see its log"}, 500)

    if alerts is not None:
        app.include_router(alert_routes(alerts, needs(READERS), needs(OPERATORS)))
    if reconciler is not None:
        app.include_router(reconcile_routes(reconciler, needs(READERS), needs(OPERATORS)))

    @app.get(f"{API}/health", tags=["hub"])
    def health() -> Health:
        """Whether a hub answers here (no token needed)."""
        return Health(status="ok", hub=hub_name, version=version)

    @app.get(f"{API}/summary", tags=["fleet"], response_model=m.Summary)
    def summary(_: Reader) -> dict[str, Any]:
        """Today's fleet figures as the dashboard's header shows them (money: exact strings,
        null when unknown)."""
        return views.summary(service)

    @app.get(f"{API}/machines", tags=["fleet"], response_model=list[m.Machine])
    def machines(who: Anyone, period: PeriodQ = Period.TODAY) -> Rows:
        return views.machines(service, who.scope, period)

    @app.get(f"{API}/profiles", tags=["fleet"], response_model=list[m.Profile])
    def profiles(who: Anyone, period: PeriodQ = Period.TODAY) -> Rows:
        return views.profiles(service, who.scope, period)

    @app.get(f"{API}/sessions", tags=["fleet"], response_model=list[m.Session])
    def sessions(
        who: Anyone,
        active_minutes: Annotated[int, Query(ge=1, le=60 * 24 * 90)] = 30,
    ) -> Rows:
        """Sessions with a call in the last `active_minutes` (the dashboard's: 30)."""
        return views.sessions(service, who.scope, service.clock() - active_minutes * 60)

    @app.get(f"{API}/runrate", tags=["fleet"])
    def runrate(
        who: Anyone,
        machine: Annotated[str | None, Query(max_length=63)] = None,
        profile: Annotated[str | None, Query(max_length=200, description="with machine")] = None,
        bins: Annotated[int, Query(ge=1, le=1440)] = 72,
    ) -> list[str | None]:
        """API-equivalent spend of the last 6 hours in `bins` equal bins (the sparklines):
        the fleet's, a machine's, or a machine's profile."""
        if profile is not None and machine is None:
            raise ApiError(422, "profile: give machine too (a profile is named on its machine)")
        if machine is None:
            if not who.scope.whole_fleet:
                raise ApiError(403, f"token {who.name!r} may read only its machine: give machine")
            scope = FLEET
        elif not who.scope.sees(machine, profile):
            raise ApiError(403, f"token {who.name!r} may not read {machine}")
        else:
            scope = ("machine", machine) if profile is None else ("profile", f"{machine}/{profile}")
        return [views.money(b) for b in service.run_rate_bins(scope, bins)]

    @app.get(f"{API}/sessions/{{key}}/series", tags=["fleet"], response_model=m.Series)
    def session_series(
        who: Anyone,
        key: Annotated[str, Path(max_length=300)],
        bins: Annotated[int, Query(ge=1, le=1440)] = 72,
    ) -> dict[str, Any]:
        """A session's API-equivalent spend over its life in `bins` equal bins."""
        rows = service.sessions([key])
        if not rows or not who.scope.sees(rows[0].machine, rows[0].profile, key):
            raise ApiError(404, f"no session {key!r} (see GET /api/v1/sessions)")
        series = service.session_series(key, bins)
        return {
            "first_call": series.first_call,
            "last_call": series.last_call,
            "bins": [views.money(a) for a in series.bins],
            "rolled_up_before": series.rolled_up_before,
        }

    @app.get(f"{API}/sessions/{{key}}/outcome", tags=["fleet"])
    def session_outcome(who: Anyone, key: Annotated[str, Path(max_length=300)]) -> dict[str, Any]:
        """What the session produced as its node read it from git: repository, branch,
        commits, pull request (`outcome` null: not read yet)."""
        rows = service.sessions([key])
        if not rows or not who.scope.sees(rows[0].machine, rows[0].profile, key):
            raise ApiError(404, f"no session {key!r} (see GET /api/v1/sessions)")
        found = service.session_outcome(key)
        return {"outcome": None if found is None else outcome_to_map(found)}

    @app.get(
        f"{API}/profiles/{{machine}}/{{profile}}/history",
        tags=["fleet"],
        response_model=list[m.ProfileChange],
    )
    def profile_history(
        who: Anyone,
        machine: Annotated[str, Path(max_length=63)],
        profile: Annotated[str, Path(max_length=200)],
    ) -> Rows:
        """The profile's timeline: active, rate-limited until, switched to, and why."""
        if not who.scope.sees(machine, profile):
            raise ApiError(403, f"token {who.name!r} may not read {machine}/{profile}")
        return [
            {
                "when": e.ts,
                "state": e.state.value,
                "until": e.until,
                "switched_to": e.switched_to,
                "reason": e.reason,
            }
            for e in service.profile_history(profile_key(machine, profile))
        ]

    @app.get(f"{API}/spend", tags=["fleet"], response_model=list[m.SpendRow])
    def spend(
        _: Reader,
        by: Annotated[Dimension, Query(description="the group, as the Spend-by tab")],
        period: PeriodQ = Period.TODAY,
    ) -> Rows:
        return views.spend_by(service, by, period)

    @app.get(
        f"{API}/report",
        tags=["fleet"],
        response_class=Response,
        responses={200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    def report(
        _: Reader,
        by: Annotated[str, Query(max_length=200, description="group keys, comma-separated")] = (
            "machine"
        ),
        tz: Annotated[str, Query(max_length=64)] = "UTC",
        since: date | None = None,
        until: date | None = None,
    ) -> Response:
        """The rows of `fleet-hub report --json` (and `node-agent scan --json`)."""
        keys = [k.strip() for k in by.split(",") if k.strip()]
        try:
            if check_outcome_keys(keys) is None:  # commit, branch, pr or repo: an outcome view
                check_keys(keys)
        except (UnknownGroupKeyError, OutcomeKeyError) as exc:
            raise ApiError(422, f"by: {exc}") from exc
        try:
            zone = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ApiError(422, f"tz: unknown time zone {tz!r}") from exc
        if problem := day_range_error(since, until):
            raise ApiError(422, problem)
        # encoded here by orjson, a few hundred rows at a time: FastAPI's encoder walks a month
        # of rows in Python, and a whole body of session rows costs ~90 MB at its peak
        report = service.report(keys, zone, since, until, lazy_rows=True)
        return StreamingResponse(json_pieces(report), media_type="application/json")

    @app.get(f"{API}/nodes", tags=["nodes"], response_model=list[m.Node])
    def nodes(who: Anyone) -> Rows:
        """State (online / stale / offline), last seen, version, reader status, backlog."""
        return views.nodes(service, who.scope)

    @app.get(f"{API}/audit", tags=["audit"])
    def audit(
        _: Reader,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
        since: Annotated[float | None, Query(ge=0, le=2**40, description="epoch s")] = None,
    ) -> m.AuditPage:
        """Who did what, when, to which target, with what result; newest first."""
        records = service.audit_log(offset + limit)[offset:]
        if since is not None:
            records = [r for r in records if r.ts >= since]
        return m.AuditPage.model_validate(
            {"rows": views.audit(records), "limit": limit, "offset": offset}
        )

    @app.get(f"{API}/feed", tags=["fleet"], response_model=list[m.FeedLine])
    def feed(_: Reader, limit: Annotated[int, Query(ge=1, le=500)] = 100) -> Rows:
        """The latest feed lines, oldest first (what the dashboard's feed shows)."""
        return [views.feed_item(i) for i in service.recent_feed(limit)]

    @app.post(f"{API}/commands/{{action}}", tags=["commands"])
    def command(
        who: Operator, action: Literal["pause", "resume", "kill"], body: CommandRequest
    ) -> CommandResult:
        """Pause, resume or kill an agent's process tree on a node. Answered when the node
        answers (1 s for pause / resume, 6 s for kill; then outcome "no answer"); written
        to the audit log with the token's name."""
        known = {v.record.node for v in service.nodes()}
        if body.machine not in known:
            raise ApiError(404, f"no machine {body.machine!r} has reported to this hub")
        create_time = body.create_time
        if create_time is None:
            found = [p for _, p in service.processes(body.machine) if p.pid == body.pid]
            if not found:
                raise ApiError(
                    404,
                    f"{body.machine} reports no agent process {body.pid}: "
                    "see GET /api/v1/sessions, or give create_time",
                )
            create_time = found[0].create_time
        outcome = service.command(body.machine, action, body.pid, create_time, who=who.name)
        commands.note(action, outcome.outcome)
        return CommandResult(
            ok=outcome.ok,
            outcome=outcome.outcome,
            detail=outcome.detail,
            machine=outcome.node,
            pid=outcome.pid,
            pids=list(outcome.pids),
        )

    @app.get(
        f"{API}/stream",
        tags=["fleet"],
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def stream(who: Anyone) -> StreamingResponse:
        """Server-Sent Events: `hello` once, then `update` (which machines, profiles and
        sessions changed, new feed lines) after every change; `resync` when the client fell
        behind and should read again."""
        return StreamingResponse(
            broker.events(who.scope),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    app.include_router(mirror_routes(service, needs(READERS), needs(EVERYONE)))

    @app.get("/metrics", tags=["hub"], response_class=Response)
    def metrics(_: Reader) -> Response:
        """Prometheus text format (a viewer or operator token: figures per machine,
        profile and model are not for anyone on the network)."""
        return Response(exposition(registry), media_type=CONTENT_TYPE_LATEST)

    if governor is not None:
        add_budget_routes(app, governor, needs, ApiError)
    return app


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "body"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)
