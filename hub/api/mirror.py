"""What a live dashboard reads to mirror the hub (`hub.remote.RemoteFleet`): a snapshot at
connect, then, after each `update` of the stream, the rows it names, one request per kind.

The answers are the service's own objects in `hub.mirror_codec`'s shapes (exact sums with
every token bucket and class, sessions with their recent tokens, profiles with where they
stand, nodes with their whole hello), so the dashboard's view model reads a mirror exactly as
it reads the embedded service. Viewer or operator tokens (the whole fleet's figures).
(No `from __future__ import annotations`: FastAPI reads the endpoints' local type aliases.)
"""

from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from hub import mirror_codec as codec
from hub._runrate import Scope
from hub.api.auth import Principal
from hub.ledger import Dimension, Period, profile_key
from hub.service import FleetService

MAX_KEYS: Final = 500  # rows of one kind per request (a client asks in chunks)
LIVE_WINDOW_S: Final = 1800.0
_SCOPE_KINDS: Final = frozenset({"fleet", "machine", "profile"})

Keys = Annotated[list[str] | None, Query(max_length=MAX_KEYS)]


class Who(BaseModel):
    name: str = Field(description="the token's name: the audit log's who for its commands")
    role: str


class MirrorNodes(BaseModel):
    nodes: list[dict[str, Any]]


class MirrorProfiles(BaseModel):
    profiles: list[dict[str, Any]]


class MirrorSessions(BaseModel):
    sessions: list[dict[str, Any]]


class MirrorFigures(BaseModel):
    now: float
    tz: str = Field(description="the zone the hub cuts days in (IANA name)")
    first_call: float | None
    fleet: dict[str, dict[str, Any]] = Field(description="per period: the fleet's sums")
    totals: dict[str, list[list[Any]]] = Field(
        description='per "dimension:period" asked: [key, sums] pairs (key null: calls that '
        "do not say)"
    )
    runrate: dict[str, list[list[Any]]] = Field(
        description='per "kind:key" asked: [minute start, api_equivalent, metered, '
        "estimated, tokens] of each minute with calls in the last 6 hours"
    )


def mirror_routes(
    service: FleetService, reader: Callable[..., Principal], anyone: Callable[..., Principal]
) -> APIRouter:
    Reader = Annotated[Principal, Depends(reader)]
    Anyone = Annotated[Principal, Depends(anyone)]
    router = APIRouter(prefix="/api/v1", tags=["mirror"])

    @router.get("/whoami", tags=["hub"])
    def whoami(who: Anyone) -> Who:
        """The token's name and role (a dashboard shows whether its halt keys may act)."""
        return Who(name=who.name, role=who.role.value)

    @router.get("/mirror/nodes")
    def nodes(_: Reader, machine: Keys = None) -> MirrorNodes:
        """Nodes (all, or those named) with their last hello and who paused which process."""
        wanted = None if machine is None else set(machine)
        out = []
        for view in service.nodes():
            name = view.record.node
            if wanted is not None and name not in wanted:
                continue
            paused = [
                (p, by)
                for _, p in service.processes(name)
                if p.state == "paused" and (by := service.paused_by(name, p)) is not None
            ]
            out.append(codec.node_to_map(view.record, view.state, view.hello, paused))
        return MirrorNodes(nodes=out)

    @router.get("/mirror/profiles")
    def profiles(_: Reader, key: Keys = None) -> MirrorProfiles:
        """Profiles (all, or the "machine/profile" keys named) and where each stands now."""
        wanted = None if key is None else set(key)
        out = []
        for record in service.profiles():
            pkey = profile_key(record.node, record.name)
            if wanted is None or pkey in wanted:
                out.append(codec.profile_to_map(record, service.profile_standing(pkey)))
        return MirrorProfiles(profiles=out)

    @router.get("/mirror/sessions")
    def sessions(
        _: Reader,
        key: Keys = None,
        active_minutes: Annotated[int, Query(ge=1, le=60 * 24 * 90)] = 30,
    ) -> MirrorSessions:
        """The sessions named (`key`, repeated), else those with a call in the last
        `active_minutes`."""
        if key is not None:
            rows = service.sessions(key)
        else:
            rows = service.active_sessions(service.clock() - active_minutes * 60)
        return MirrorSessions(sessions=[codec.session_to_map(r) for r in rows])

    @router.get("/mirror/figures")
    def figures(
        _: Reader,
        want: Annotated[
            list[str] | None, Query(max_length=64, description='"dimension:period" pairs')
        ] = None,
        scope: Annotated[
            list[str] | None,
            Query(max_length=MAX_KEYS, description='"fleet:", "machine:NAME", "profile:M/P"'),
        ] = None,
    ) -> MirrorFigures:
        """The fleet's sums per period, the totals per dimension and period asked for, and
        the per-minute spend of the scopes asked for (burn rates and sparklines)."""
        pairs = [_pair(w) for w in want or []]
        scopes = [_scope(s) for s in scope or []]
        tz = service.tz
        return MirrorFigures(
            now=service.clock(),
            tz=str(getattr(tz, "key", None) or tz.tzname(None) or "UTC"),
            first_call=service.first_call(),
            fleet={p.value: codec.totals_to_map(service.fleet(p)) for p in Period},
            totals={
                f"{d.value}:{p.value}": [
                    [k, codec.totals_to_map(t)] for k, t in service.totals(d, p).items()
                ]
                for d, p in pairs
            },
            runrate={
                f"{kind}:{key}": [
                    [m.start, str(m.api_equivalent), str(m.metered), str(m.estimated), m.tokens]
                    for m in service.run_rate((kind, key))
                    if m.tokens or m.api_equivalent or m.metered or m.estimated
                ]
                for kind, key in scopes
            },
        )

    return router


def _pair(text: str) -> tuple[Dimension, Period]:
    dimension, _, period = text.partition(":")
    try:
        return Dimension(dimension), Period(period)
    except ValueError:
        raise HTTPException(
            422,
            f"want: {text[:80]!r} is not DIMENSION:PERIOD (dimension one of "
            f"{', '.join(Dimension)}; period one of {', '.join(Period)})",
        ) from None


def _scope(text: str) -> Scope:
    kind, _, key = text.partition(":")
    if kind not in _SCOPE_KINDS or (kind == "fleet") != (key == "") or len(key) > 300:
        raise HTTPException(
            422, f"scope: {text[:80]!r} is not fleet:, machine:NAME or profile:MACHINE/PROFILE"
        )
    return kind, key
