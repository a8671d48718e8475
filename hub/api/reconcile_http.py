"""Reconciliation's HTTP client (httpx: per-request timeouts, a pool shared by the API's worker
threads and the schedule, redirects not followed so that an admin key never travels to
another host)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import httpx

from hub.reconcile.transport import NoReply, Reply


class HttpxTransport:
    def __init__(self) -> None:
        self._client = httpx.Client(follow_redirects=False)

    def get(
        self,
        url: str,
        params: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        timeout: float,
    ) -> Reply:
        try:
            response = self._client.get(
                url, params=list(params), headers=dict(headers), timeout=timeout
            )
        except httpx.TransportError as exc:
            raise NoReply(type(exc).__name__) from None
        return Reply(response.status_code, dict(response.headers), response.content)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpxTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
