"""The alert courier's HTTP transport (httpx: a sync client with a connection pool that the
courier's worker threads share, per-request timeouts, and no redirects followed, as Standard
Webhooks asks: a 3xx is a failure)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx

from hub.alerts.courier import Answer, DeliveryFailed


class HttpxPost:
    def __init__(self) -> None:
        self._client = httpx.Client(follow_redirects=False, trust_env=False)

    def __call__(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
        try:
            reply = self._client.post(url, content=body, headers=dict(headers), timeout=timeout)
        except httpx.TimeoutException:
            raise DeliveryFailed(f"no answer within {timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc or 'connection failed'}") from None
        return Answer(reply.status_code, retry_after(reply.headers.get("retry-after")))

    def close(self) -> None:
        self._client.close()


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or
    unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
