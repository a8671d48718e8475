"""`RemoteBackend`: the budgets and alerts of a hub the dashboard is attached to, read and
changed through its API (`/api/v1/budgets`, `/api/v1/alerts`) with the dashboard's token, so
the hub audits each change under the token's name (`who` is the hub's business here)."""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import quote

from hub.governance import GovernanceError
from hub.remote import HubUnavailable, RemoteFleet
from hub.source import FleetSource

NEEDS_OPERATOR = "needs an operator token"


class RemoteBackend:
    def __init__(self, source: FleetSource) -> None:
        self.remote = cast(RemoteFleet, source)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            return self.remote.call(method, path, body)
        except HubUnavailable as exc:
            if exc.status == 403 and method != "GET":  # a refused read: the hub's own words
                raise GovernanceError(f"{NEEDS_OPERATOR} ({exc})", needs_operator=True) from None
            raise GovernanceError(str(exc)) from None

    def budgets(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._call("GET", "/budgets")["budgets"]
        return rows

    def alerts(self, limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        page = self._call("GET", f"/alerts?limit={limit}")
        return list(page["alerts"]), list(page["silences"])

    def add_budget(self, table: dict[str, Any], who: str) -> None:
        self._call("POST", "/budgets", table)

    def remove_budget(self, name: str, who: str) -> None:
        self._call("DELETE", f"/budgets/{_quote(name)}")

    def override(self, name: str, limit: str | None, until: float, why: str, who: str) -> None:
        body = {"limit": limit, "until": until, "why": why}
        self._call("POST", f"/budgets/{_quote(name)}/override", body)

    def ack(self, alert_id: str, who: str, until: float | None = None) -> None:
        self._call("POST", "/alerts/ack", {"id": alert_id, "until": until})

    def silence(self, scope: str, kind: str, minutes: float, why: str, who: str) -> None:
        body = {"scope": scope, "kind": kind, "minutes": minutes, "why": why}
        self._call("POST", "/alerts/silences", body)

    def retry(self, alert_id: str) -> int:
        return int(self._call("POST", "/alerts/retry", {"id": alert_id})["retried"])


def _quote(part: str) -> str:
    return quote(part, safe="")
