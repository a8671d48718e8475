"""Who is asking: the bearer token's record, and whether its role may use an endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from hub.api.views import WHOLE_FLEET, Scope
from hub.tokens import Role, TokenBook, TokenRecord


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: Role
    scope: Scope


class AuthError(Exception):
    """401 (no or unknown token) or 403 (a role this endpoint does not take)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def principal(book: TokenBook, authorization: str | None, allowed: frozenset[Role]) -> Principal:
    if not authorization:
        raise AuthError(
            401, "no bearer token: send 'Authorization: Bearer TOKEN' (fleet-hub token create)"
        )
    kind, _, token = authorization.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise AuthError(401, "the Authorization header must be 'Bearer TOKEN'")
    record = book.lookup(token.strip())
    if record is None:
        raise AuthError(401, "unknown or revoked token (fleet-hub token list)")
    if record.role not in allowed:
        roles = ", ".join(sorted(r.value for r in allowed))
        raise AuthError(
            403, f"token {record.name!r} has role {record.role.value}; this needs {roles}"
        )
    return Principal(record.name, record.role, scope_of(record))


def scope_of(record: TokenRecord) -> Scope:
    if record.role is not Role.AGENT:
        return WHOLE_FLEET
    return Scope(record.machine, record.profile, record.session)
