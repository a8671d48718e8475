"""The branch's pull request, from GitHub's REST API (`GET /repos/{owner}/{repo}/pulls?head=
owner:branch&state=all`), following its `Link: <...>; rel="next"` pages.

Only asked when a token is configured. `base_url` is configurable (GitHub Enterprise's
`https://HOST/api/v3`, or a local server in tests). A rate limit (403 or 429 with
`x-ratelimit-remaining: 0`, or `retry-after`) stops asking until its reset, and each answer
that is not a PR says why in words (`PrLookup.status`), never raises.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode

from shared.outcomes import PullRequest

DEFAULT_API: Final = "https://api.github.com"
TIMEOUT_S: Final = 10.0
MAX_PAGES: Final = 10
TOKEN_VARIABLES: Final = ("FLEETMETER_GITHUB_TOKEN", "GITHUB_TOKEN")
API_VARIABLE: Final = "FLEETMETER_GITHUB_API"
HOST_VARIABLE: Final = "FLEETMETER_GITHUB_HOST"  # the remotes' host it serves


_NEXT: Final = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


@dataclass(frozen=True, slots=True)
class PrLookup:
    pr: PullRequest | None
    status: str  # "found", "none", or why it is not known


class GitHub:
    def __init__(self, token: str, base_url: str = DEFAULT_API, host: str = "github.com") -> None:
        self.token = token
        self.base_url = base_url.rstrip("/")
        self.host = host.lower()  # the host of the remotes whose PRs it knows
        self.limited_until: float | None = None  # rate limited: ask again after this time

    def pull_request(self, owner: str, name: str, branch: str) -> PrLookup:
        """The branch's PR: an open one first, else the newest (by number)."""
        if self.limited_until is not None and time.time() < self.limited_until:
            return PrLookup(None, self._limited())
        query = urlencode({"head": f"{owner}:{branch}", "state": "all", "per_page": "100"})
        url: str | None = f"{self.base_url}/repos/{quote(owner)}/{quote(name)}/pulls?{query}"
        found: list[dict[str, Any]] = []
        for _page in range(MAX_PAGES):
            if url is None:
                break
            answer = self._get(url)
            if isinstance(answer, str):
                return PrLookup(None, answer)
            items, url = answer
            found += [i for i in items if isinstance(i, dict) and _head_is(i, branch)]
        prs = [pr for item in found if (pr := _pull(item)) is not None]
        if not prs:
            return PrLookup(None, "none")
        prs.sort(key=lambda pr: (pr.state == "open", pr.number), reverse=True)
        return PrLookup(prs[0], "found")

    def _get(self, url: str) -> tuple[list[Any], str | None] | str:
        request = urllib.request.Request(
            url,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {self.token}",
                "X-GitHub-Api-Version": "2022-11-28",
                "User-Agent": "fleetmeter-node-agent",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                link = response.headers.get("Link", "")
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return self._refused(exc)
        except (urllib.error.URLError, TimeoutError, OSError) as exc:
            return f"forge unreachable: {getattr(exc, 'reason', exc)}"
        except ValueError:
            return "forge answered with something that is not JSON"
        if not isinstance(body, list):
            return "forge answered with something that is not a list of pull requests"
        match = _NEXT.search(link)
        return body, match.group(1) if match else None

    def _refused(self, exc: urllib.error.HTTPError) -> str:
        headers = exc.headers
        remaining = headers.get("x-ratelimit-remaining")
        retry_after = headers.get("retry-after")
        if exc.code in (403, 429) and (remaining == "0" or retry_after is not None):
            reset = headers.get("x-ratelimit-reset")
            now = time.time()
            if retry_after is not None and retry_after.isdigit():
                self.limited_until = now + int(retry_after)
            elif reset is not None and reset.isdigit():
                self.limited_until = float(reset)
            else:
                self.limited_until = now + 60
            return self._limited()
        if exc.code == 401:
            return "forge refused the token (401): check it"
        if exc.code == 404:
            return "forge knows no such repository, or the token cannot see it (404)"
        return f"forge answered {exc.code} {exc.reason}"

    def _limited(self) -> str:
        assert self.limited_until is not None
        when = time.strftime("%H:%M:%S UTC", time.gmtime(self.limited_until))
        return f"rate limited by the forge until {when}"


def _head_is(item: dict[str, Any], branch: str) -> bool:
    head = item.get("head")
    return isinstance(head, dict) and head.get("ref") == branch


def _pull(item: dict[str, Any]) -> PullRequest | None:
    number, state = item.get("number"), item.get("state")
    if type(number) is not int or state not in ("open", "closed"):
        return None
    url = item.get("html_url")
    merged = item.get("merged_at") is not None
    return PullRequest(number, state, merged, url if isinstance(url, str) else "")


def forge_from_env(environ: Mapping[str, str] = os.environ) -> GitHub | None:
    """GitHub's client when a token is in the environment (never on the command line, where
    `ps` would show it); its API at $FLEETMETER_GITHUB_API (default api.github.com)."""
    token = next((environ[v] for v in TOKEN_VARIABLES if environ.get(v)), None)
    if token is None:
        return None
    api = environ.get(API_VARIABLE) or DEFAULT_API
    return GitHub(token.strip(), api, environ.get(HOST_VARIABLE) or "github.com")
