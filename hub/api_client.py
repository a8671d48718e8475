"""The CLI's client of a running hub's API (stdlib only: the CLI loads no web stack).

Which hub: the one `[api] listen` in the config names. Which token: `--token`, else
`$FLEETMETER_TOKEN`, else the local admin's token file beside the config (`admin.token`,
mode 600, written by `fleet-hub serve`: whoever can read it can read the fleet secret beside
it anyway).
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

from hub.config import HubConfig, split_listen
from hub.tokens import read_admin_token
from shared.config import ConfigError

TOKEN_VARIABLE: Final = "FLEETMETER_TOKEN"
PROBE_TIMEOUT_S: Final = 2.0
CALL_TIMEOUT_S: Final = 30.0  # a kill is answered within 6.5 s; a big report takes longer


class NoHub(Exception):
    """Nothing answers at the configured API address."""


class ApiFailure(Exception):
    """The hub answered with an error: `status` and its one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def api_url(config: HubConfig) -> str:
    host, port = split_listen(config.api_listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"  # every interface: this machine is one of them
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    scheme = "https" if config.api_tls_cert_key_file is not None else "http"
    return f"{scheme}://{shown}:{port}"


def token_for(config: HubConfig, given: str | None) -> str | None:
    if given:
        return given
    if env := os.environ.get(TOKEN_VARIABLE):
        return env
    return read_admin_token(config.path) if config.path is not None else None


def tls_context(config: HubConfig) -> ssl.SSLContext | None:
    """How to check the API's certificate (None: the API is plain HTTP)."""
    cert = config.api_tls_cert_key_file
    if cert is None:
        return None
    # The hub's own certificate is the anchor when it is self-signed and readable here.
    try:
        return ssl.create_default_context(cafile=str(cert))
    except (OSError, ssl.SSLError):
        return ssl.create_default_context()


class HubClient:
    def __init__(self, config: HubConfig, token: str | None) -> None:
        self.base = api_url(config)
        self.token = token
        self._tls = tls_context(config)

    def alive(self) -> bool:
        """Whether a hub answers here (raises nothing)."""
        try:
            self._call("GET", "/api/v1/health", None, None, PROBE_TIMEOUT_S)
        except (NoHub, ApiFailure):
            return False
        return True

    def get(self, path: str, **params: object) -> Any:
        query = {k: str(v) for k, v in params.items() if v is not None}
        return self._call("GET", path, query, None, CALL_TIMEOUT_S)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("POST", path, None, body, CALL_TIMEOUT_S)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path, None, None, CALL_TIMEOUT_S)

    def _call(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        body: dict[str, Any] | None,
        timeout: float,
    ) -> Any:
        url = self.base + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, data, timeout, context=self._tls) as reply:
                return json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            raise ApiFailure(exc.code, _message(exc)) from exc
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NoHub(f"no hub answers at {self.base}: {reason}") from exc


def _message(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read())["error"])
    except (ValueError, KeyError, TypeError, OSError):
        return f"HTTP {exc.code} {exc.reason}"


def running_hub(config: HubConfig, token: str | None) -> HubClient | None:
    """A client of the hub serving this config, or None when none answers. Raises ConfigError
    when one answers but no token is at hand."""
    client = HubClient(config, token_for(config, token))
    if not client.alive():
        return None
    if not client.token:
        raise ConfigError(
            f"a hub serves at {client.base} but no token is at hand: give --token, set "
            f"${TOKEN_VARIABLE}, or run this as the hub's user (its admin.token)"
        )
    return client
