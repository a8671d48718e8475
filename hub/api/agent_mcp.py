"""The hub's MCP server over streamable HTTP at `/mcp` (issue 14), behind the API's tokens.

An `agent` token gets `my_usage`, `my_budget`, `my_quota` and `explain_spend`, each answering
for what the token is bound to (its session, else its profile, else its machine) and nothing
else; a `viewer` or `operator` token gets those for any session it names (the fleet when none)
and also `fleet_summary` and `top_spenders`. The two kinds of token reach two servers, so an
agent token's tool list does not even name the fleet's tools. No token, or an unknown one: 401
as JSON, before MCP sees the request.

Stateless (a request is a whole exchange) with JSON answers: nothing is kept between calls,
and every answer comes from the hub's memory (the ledger, the governor's standings, the
detectors' findings on sessions).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any, Final

import orjson
from fastapi import FastAPI
from mcp.server.fastmcp import Context, FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from starlette.types import Receive, Scope, Send

from hub.api import views
from hub.api.auth import AuthError, Principal, principal
from hub.budget_verdicts import BudgetVerdicts
from hub.ledger import Period
from hub.service import FleetService
from hub.session_findings import SessionFindings
from hub.tokens import Role, TokenBook
from shared.agent_words import budget_words
from shared.session_notes import note_to_map
from shared.verdicts import verdict_to_map

PATH: Final = "/mcp"
ROLES: Final = frozenset({Role.AGENT, Role.VIEWER, Role.OPERATOR})
TOP_MAX: Final = 50


def _result(words: str, data: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=words)], structuredContent=data)


def _refused(words: str) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=words)],
        structuredContent={"error": words},
        isError=True,
    )


class HubAnswers:
    """The tools' answers for one principal's scope (a session named by a viewer narrows it)."""

    def __init__(
        self,
        service: FleetService,
        verdicts: BudgetVerdicts | None,
        findings: SessionFindings | None,
    ) -> None:
        self.service = service
        self.verdicts = verdicts
        self.findings = findings

    def scope(self, who: Principal, session: str | None) -> views.Scope | str:
        """The scope asked about, or why it may not be."""
        if who.role is not Role.AGENT:
            return views.Scope(session=session) if session else views.WHOLE_FLEET
        if session and who.scope.session not in (None, session):
            return f"this token is bound to session {who.scope.session}, not {session}"
        if session:
            return views.Scope(who.scope.machine, who.scope.profile, session)
        return who.scope

    def usage(self, scope: views.Scope) -> tuple[str, dict[str, Any]]:
        if scope.session is not None:
            rows = views.sessions(self.service, scope, 0.0, keys=[scope.session])
            if not rows:
                return f"No calls of session {scope.session} at the hub.", {"sessions": []}
            row = rows[0] | views.session_rates(self.service, scope.session)
            main, sub = row["main"], row["subagents"]
            ratio, rate = row["cache_read_ratio"], row["run_rate_per_hour"]
            words = (
                f"Session {row['key']} on {row['machine']} ({row['profile'] or 'no profile'}): "
                f"API-equivalent {_usd(main)} main + {_usd(sub)} subagents over "
                f"{main['calls'] + sub['calls']} calls; model {row['model'] or 'unknown'}. "
                f"Cache-read ratio {'unknown' if ratio is None else f'{ratio:.0%}'}. "
                f"Run-rate {'unknown' if rate is None else f'${rate}'}/h over the last hour."
            )
            return words, {"sessions": [row]}
        if scope.profile is not None:
            rows = views.profiles(self.service, scope, Period.TODAY)
            parts = [f"{r['machine']}/{r['profile']} {_usd(r['spend'])}" for r in rows]
            return "Today by profile: " + (", ".join(parts) or "none") + ".", {"profiles": rows}
        rows = views.machines(self.service, scope, Period.TODAY)
        parts = [f"{r['machine']} {_usd(r['spend'])}" for r in rows]
        return "Today by machine: " + (", ".join(parts) or "none") + ".", {"machines": rows}

    def budget(self, scope: views.Scope) -> tuple[str, dict[str, Any]]:
        if self.verdicts is None:
            verdicts = []
        elif scope.whole_fleet:
            verdicts = self.verdicts.fleet()
        else:
            nodes = [v.record.node for v in self.service.nodes()]
            verdicts = self.verdicts.for_nodes([scope.machine] if scope.machine else nodes)
        found = [verdict_to_map(v) for v in verdicts if _concerns(v.scope, scope)]
        data = {
            "session": scope.session,
            "identified_by": "the token's binding",
            "verdicts": found,
            "verdicts_age_s": 0.0,
        }
        return budget_words(data), data

    def quota(self, scope: views.Scope) -> tuple[str, dict[str, Any]]:
        if scope.session is not None and scope.profile is None:
            row = next(iter(views.sessions(self.service, scope, 0.0, keys=[scope.session])), None)
            scope = views.Scope(scope.machine, row["profile"] if row else "", scope.session)
        wanted = views.Scope(scope.machine, scope.profile)
        rows = [
            {"machine": r["machine"], "profile": r["profile"], "state": r["state"],
             "windows": r["windows"], "until": r["until"]}
            for r in views.profiles(self.service, wanted, Period.TODAY)
        ]  # fmt: skip
        parts = []
        for r in rows:
            shown = ", ".join(
                f"{w} {_pct(v['used_percent'])} used" for w, v in sorted(r["windows"].items())
            )
            parts.append(f"{r['machine']}/{r['profile']} {r['state']}: {shown or 'no readings'}")
        return "Windows: " + ("; ".join(parts) or "no profile in scope") + ".", {"profiles": rows}

    def explain(self, scope: views.Scope) -> tuple[str, dict[str, Any]]:
        if self.findings is None:
            notes = []
        elif scope.session is not None:
            notes = self.findings.for_session(scope.session)
        elif scope.machine is not None:
            notes = self.findings.for_machine(scope.machine)
        else:
            notes = []
        maps = [{"source": "hub detectors", **note_to_map(n)} for n in notes]
        if not maps:
            return "The hub's detectors found nothing about this scope.", {"findings": []}
        words = "From the hub's detectors: " + " ".join(f"{n.kind}: {n.text}." for n in notes)
        return words, {"findings": maps}

    def top(self, limit: int) -> tuple[str, dict[str, Any]]:
        since = self.service.clock() - 86400
        rows = views.sessions(self.service, views.WHOLE_FLEET, since)
        ranked = sorted(rows, key=lambda r: -(_api(r["main"]) + _api(r["subagents"])))[:limit]
        top = [
            {"session": r["key"], "machine": r["machine"], "profile": r["profile"],
             "api_equivalent": str(_api(r["main"]) + _api(r["subagents"]))}
            for r in ranked
        ]  # fmt: skip
        words = "Top spenders (sessions, last 24 h, API-equivalent): " + (
            ", ".join(f"{t['session']} on {t['machine']} ${t['api_equivalent']}" for t in top)
            or "none"
        )
        return words + ".", {"sessions": top}


def _api(figures: dict[str, Any]) -> Decimal:
    return Decimal(figures["cost"]["api_equivalent"] or 0)


def _usd(figures: dict[str, Any]) -> str:
    amount = figures["cost"]["api_equivalent"]
    return "unknown" if amount is None else f"${amount}"


def _pct(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.0f}%"


def _concerns(verdict_scope: str, scope: views.Scope) -> bool:
    """Whether a verdict over `verdict_scope` may apply to what the token sees."""
    given = {"machine": scope.machine, "profile": scope.profile, "session": scope.session}
    for part in verdict_scope.split(","):
        kind, _, value = part.partition(":")
        if given.get(kind) not in (None, value):
            return False
    return True


def build_server(answers: HubAnswers, book: TokenBook, *, fleet: bool) -> FastMCP:
    """The tools of an agent token (`fleet` False) or a viewer's (`fleet` True)."""
    server = FastMCP(
        "fleetmeter-hub",
        log_level="WARNING",
        stateless_http=True,
        json_response=True,
        streamable_http_path="/",
        # the bearer token guards it: a rebinding page cannot send one
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    def answer(
        ctx: Context[Any, Any, Any],
        session: str | None,
        render: Callable[[views.Scope], tuple[str, dict[str, Any]]],
    ) -> CallToolResult:
        request = ctx.request_context.request
        header = None if request is None else request.headers.get("authorization")
        try:
            who = principal(book, header, ROLES)
        except AuthError as exc:
            return _refused(exc.message)
        scope = answers.scope(who, session)
        if isinstance(scope, str):
            return _refused(scope)
        return _result(*render(scope))

    @server.tool(description="Spend, tokens and calls of your session (or profile, machine).")
    def my_usage(ctx: Context[Any, Any, Any], session: str | None = None) -> CallToolResult:
        return answer(ctx, session, answers.usage)

    @server.tool(description="Every budget that applies to you: spent, limit, state, override.")
    def my_budget(ctx: Context[Any, Any, Any], session: str | None = None) -> CallToolResult:
        return answer(ctx, session, answers.budget)

    @server.tool(description="The subscription windows (5-hour, weekly) of your profile.")
    def my_quota(ctx: Context[Any, Any, Any], session: str | None = None) -> CallToolResult:
        return answer(ctx, session, answers.quota)

    @server.tool(description="What the hub's detectors found about your session's spend.")
    def explain_spend(ctx: Context[Any, Any, Any], session: str | None = None) -> CallToolResult:
        return answer(ctx, session, answers.explain)

    if fleet:

        @server.tool(description="Today's fleet figures (exact money).")
        def fleet_summary() -> CallToolResult:
            data = views.summary(answers.service)
            words = (
                f"Today: API-equivalent ${data['api_equivalent']}, metered ${data['metered']}, "
                f"{data['nodes_online']} nodes online."
            )
            return _result(words, data)

        @server.tool(description="The costliest sessions of the last 24 hours.")
        def top_spenders(limit: int = 10) -> CallToolResult:
            return _result(*answers.top(max(1, min(limit, TOP_MAX))))

    return server


class McpEndpoint:
    """The ASGI app at `/mcp`: the token checked, then the role's server answers."""

    def __init__(self, answers: HubAnswers, book: TokenBook) -> None:
        self.book = book
        # the SDK says each request at INFO ("Processing request of type ..."): not the hub's log
        logging.getLogger("mcp").setLevel(logging.WARNING)
        self.agent = build_server(answers, book, fleet=False)
        self.viewer = build_server(answers, book, fleet=True)
        for server in (self.agent, self.viewer):
            server.streamable_http_app()  # makes its session manager

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.agent.session_manager.run(), self.viewer.session_manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope.get("headers") or [])
        header = headers.get(b"authorization")
        try:
            who = principal(self.book, None if header is None else header.decode("latin-1"), ROLES)
        except AuthError as exc:
            body = orjson.dumps({"error": exc.message})
            await send(
                {
                    "type": "http.response.start",
                    "status": exc.status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"www-authenticate", b"Bearer")],
                }
            )  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        server = self.agent if who.role is Role.AGENT else self.viewer
        await server.session_manager.handle_request(scope, receive, send)


def mount(app: FastAPI, endpoint: McpEndpoint) -> None:
    """Serve `endpoint` at /mcp and run its session managers with the app."""
    app.add_route(PATH, endpoint)  # type: ignore[arg-type]
    inner: Callable[[Any], Any] = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with inner(a) as state, endpoint.running():
            yield state

    app.router.lifespan_context = lifespan
