"""GET a provider's paginated report, with backoff on 429 and 5xx.

The HTTP client sits behind `Transport` (httpx in the hub: hub/api/reconcile_http.py). Pages
follow `has_more` / `next_page` (both providers use them). A 429 or 5xx, or a dropped connection, is
tried again after `Retry-After` or an exponential wait; a 401 or 403 is said in words naming
the key file (never the key).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Protocol, TypeVar

import orjson

from hub.reconcile.model import ConnectorError
from hub.reconcile.settings import ProviderSettings
from hub.reconcile.values import instant_of

Line = TypeVar("Line")

RETRY_STATUSES: Final = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_PAGES: Final = 1000  # a cursor that never ends is a provider fault, not a long report
FIRST_WAIT: Final = 1.0
LONGEST_WAIT: Final = 60.0


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


class NoReply(OSError):
    """No reply: refused, reset, timed out."""


class CursorExpired(ConnectorError):
    """A page cursor the provider no longer knows (HTTP 410: its data was refreshed since the
    first page): the listing starts again from its first page."""


class Transport(Protocol):
    def get(
        self,
        url: str,
        params: Sequence[tuple[str, str]],
        headers: Mapping[str, str],
        timeout: float,
    ) -> Reply:
        """Raises OSError (e.g. `NoReply`) when no reply came."""
        ...


@dataclass(frozen=True, slots=True)
class Timing:
    """When a fetch is (buckets ending later are still open) and how it waits to retry."""

    now: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep
    first_wait: float = FIRST_WAIT


REAL_TIME: Final = Timing()


@dataclass(frozen=True, slots=True)
class Buckets:
    """Where a report's daily buckets are and how their bounds are spelt."""

    path: str
    query: Sequence[tuple[str, str]]
    start: str  # "starting_at" (RFC 3339) or "start_time" (epoch seconds)
    end: str
    day_of: Callable[[object, str], date]


@dataclass
class Pager:
    """One provider's pages: its settings, headers and how it waits between tries."""

    settings: ProviderSettings
    transport: Transport
    headers: Mapping[str, str]
    timing: Timing = REAL_TIME
    # what a 403 means here, when not the admin scope (Anthropic's analytics: read:analytics)
    forbidden: str | None = None

    def pages(self, path: str, params: Sequence[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        """Every page of `path`'s report, in order."""
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            query = [*params, *([("page", cursor)] if cursor else [])]
            page = self._get(path, query)
            yield page
            if page.get("has_more") is not True:
                return
            cursor = page.get("next_page")
            if not isinstance(cursor, str) or not cursor:
                raise ConnectorError(
                    f"{self.settings.name} {path}: has_more without a next_page cursor"
                )
        raise ConnectorError(f"{self.settings.name} {path}: more than {MAX_PAGES} pages")

    def lines(
        self,
        buckets: Buckets,
        parse: Callable[[date, Mapping[str, Any]], Line],
        partial: set[date],
        fetched: float,
    ) -> list[Line]:
        """Every result of every bucket, parsed with its UTC day; a bucket that ends after
        `fetched` is a day the provider is still finalising (added to `partial`)."""
        out: list[Line] = []
        where = f"{self.settings.name} {buckets.path}"
        for page in self.pages(buckets.path, buckets.query):
            for bucket in page["data"]:
                if not isinstance(bucket, Mapping):
                    raise ConnectorError(f"{where}: a bucket is not an object")
                day = buckets.day_of(bucket.get(buckets.start), f"{where} {buckets.start}")
                if instant_of(bucket.get(buckets.end), f"{where} {buckets.end}") > fetched:
                    partial.add(day)
                results = bucket.get("results")
                if not isinstance(results, list) or not all(
                    isinstance(r, Mapping) for r in results
                ):
                    raise ConnectorError(f"{where}: a bucket's results are not a list of objects")
                out.extend(parse(day, r) for r in results)
        return out

    def _get(self, path: str, query: Sequence[tuple[str, str]]) -> dict[str, Any]:
        url = self.settings.base_url + path
        name = self.settings.name
        why = ""
        for attempt in range(self.settings.retries + 1):
            try:
                reply = self.transport.get(url, query, self.headers, self.settings.timeout)
            except OSError as exc:
                why = f"no answer ({type(exc).__name__})"
                self._wait(attempt, None)
                continue
            if reply.status in RETRY_STATUSES:
                why = f"HTTP {reply.status}"
                self._wait(attempt, reply.headers)
                continue
            return self._decoded(path, reply)
        raise ConnectorError(
            f"{name} {path}: {why} after {self.settings.retries + 1} tries; try again later"
        )

    def _wait(self, attempt: int, headers: Mapping[str, str] | None) -> None:
        if attempt >= self.settings.retries:
            return
        wait = min(self.timing.first_wait * 2**attempt, LONGEST_WAIT)
        after = _retry_after(headers)
        self.timing.sleep(min(after, LONGEST_WAIT) if after is not None else wait)

    def _decoded(self, path: str, reply: Reply) -> dict[str, Any]:
        name = self.settings.name
        if reply.status == 403 and self.forbidden is not None:
            raise ConnectorError(
                f"{name} {path}: the key in {self.forbidden} (HTTP 403: {_message(reply.body)})"
            )
        if reply.status in (401, 403):
            lacks = "was refused" if reply.status == 401 else "lacks the admin scope"
            raise ConnectorError(
                f"{name} {path}: the key in {self.settings.key_file} {lacks} (HTTP "
                f"{reply.status}: {_message(reply.body)}); reports need an Admin API key"
                + (" (sk-ant-admin...)" if name == "anthropic" else "")
            )
        if reply.status == 410:
            raise CursorExpired(f"{name} {path}: HTTP 410: {_message(reply.body)}")
        if not 200 <= reply.status < 300:
            raise ConnectorError(f"{name} {path}: HTTP {reply.status}: {_message(reply.body)}")
        try:
            page = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            raise ConnectorError(f"{name} {path}: the answer is not JSON") from None
        if not isinstance(page, dict) or not isinstance(page.get("data"), list):
            raise ConnectorError(f"{name} {path}: the answer has no 'data' list")
        return page


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    if headers is None:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < 86400 else None


def _message(body: bytes) -> str:
    """The provider's own error message, short and on one line."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "no JSON body"
    error = data.get("error") if isinstance(data, dict) else None
    text = error.get("message") if isinstance(error, dict) else error
    return " ".join(str(text or "no message").split())[:200]
