"""The API's budget endpoints: read where each budget stands (any role; an agent token sees the
budgets that apply to its binding), and, for operators, add, remove and override. Changes are
written to hub.toml (tomlkit) and taken by the governor at once.
(No `from __future__ import annotations`: FastAPI reads the endpoints' types.)"""

from collections.abc import Callable
from typing import Annotated, Any, Final

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from hub.api.auth import Principal
from hub.api.views import Scope
from hub.budgets.governor import Governor
from hub.budgets.model import Budget, BudgetError, ScopeKind, parse_budget, parse_limit
from hub.tokens import Role
from shared.config import ConfigError

API: Final = "/api/v1"
OPERATORS: Final = frozenset({Role.OPERATOR})
EVERYONE: Final = frozenset(Role)


class BudgetBody(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    scope: str = Field(
        max_length=600, description="KIND=VALUE[,KIND=VALUE] (fleet, account, profile, machine, "
        "agent, project, session, model), or fleet",
    )  # fmt: skip
    period: str = Field(max_length=16, description="session, hour, day, week, month, or 5h ...")
    basis: str = Field(max_length=8, description="paid, api or quota")
    limit: str = Field(max_length=40, description="dollars (paid, api) or percent (quota)")
    action: str = Field(default="alert", max_length=8, description="alert, pause or kill")
    thresholds: list[int] | None = Field(default=None, max_length=20)
    next_period: str = Field(default="wait", max_length=8, description="resume or wait")
    tz: str = Field(default="UTC", max_length=64)
    forecast_minutes: int = Field(default=30, ge=0, le=44640)
    on_unverified: str = Field(default="alert", max_length=8, description="alert or pause")


class OverrideBody(BaseModel):
    limit: str | None = Field(
        default=None, max_length=40, description="the raised limit; null lifts the budget"
    )
    until: float = Field(ge=0, le=2**40, description="epoch seconds: the override ends then")
    why: str = Field(min_length=1, max_length=500, description="kept in the audit log")


def applies(budget: Budget, binding: Scope) -> bool:
    """Whether a budget concerns an agent token's binding (nothing in its scope contradicts
    the machine, profile or session the token is bound to)."""
    bound = {
        ScopeKind.MACHINE: binding.machine,
        ScopeKind.PROFILE: binding.profile,
        ScopeKind.SESSION: binding.session,
    }
    return all(bound.get(k) in (None, v) for k, v in budget.scope.parts)


def add_budget_routes(
    app: FastAPI,
    governor: Governor,
    needs: Callable[[frozenset[Role]], Callable[..., Principal]],
    error: Callable[[int, str], Exception],
) -> None:
    Anyone = Annotated[Principal, Depends(needs(EVERYONE))]
    Operator = Annotated[Principal, Depends(needs(OPERATORS))]

    def known(name: str) -> Budget:
        found = [b for b in governor.budgets if b.name == name]
        if not found:
            raise error(404, f"no budget named {name!r} (GET {API}/budgets)")
        return found[0]

    @app.get(f"{API}/budgets", tags=["budgets"])
    def budgets(who: Anyone) -> dict[str, Any]:
        """Every budget and where it stands: spent / limit in force, percent, state (ok,
        warning, breached, stopped, unverified, lifted), forecast, last action, overshoot."""
        rows = [
            s.to_json()
            for s in governor.standings()
            if who.role is not Role.AGENT or applies(s.budget, who.scope)
        ]
        return {"budgets": rows}

    @app.post(f"{API}/budgets", tags=["budgets"], status_code=201)
    def add(who: Operator, body: BudgetBody) -> dict[str, Any]:
        """Add a budget (or replace the one of that name); written to hub.toml."""
        table = {k: v for k, v in body.model_dump().items() if v is not None}
        try:
            budget = parse_budget(table)
            governor.add_budget(budget, who.name)
        except (BudgetError, ConfigError) as exc:
            raise error(422, str(exc)) from None
        return budget.to_table()

    @app.delete(f"{API}/budgets/{{name}}", tags=["budgets"])
    def remove(who: Operator, name: str) -> dict[str, str]:
        """Remove a budget from hub.toml (its history stays in the store)."""
        known(name)
        try:
            governor.remove_budget(name, who.name)
        except (BudgetError, ConfigError) as exc:
            raise error(422, str(exc)) from None
        return {"removed": name}

    @app.post(f"{API}/budgets/{{name}}/override", tags=["budgets"])
    def override(who: Operator, name: str, body: OverrideBody) -> dict[str, Any]:
        """Raise (limit) or lift (no limit) one budget until a time; audited with who and
        why."""
        budget = known(name)
        try:
            limit = None if body.limit is None else parse_limit(body.limit, budget.basis)
            entry = governor.override(name, limit, body.until, who.name, body.why)
        except BudgetError as exc:
            raise error(422, str(exc)) from None
        return {
            "budget": name,
            "limit": None if entry.limit is None else str(entry.limit),
            "until": entry.until,
            "who": entry.who,
            "why": entry.why,
        }
