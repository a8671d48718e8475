"""The dashboard attached to a running hub: `fleet-hub --hub URL --token T`, or the hub the
config names when its API answers (`hub.cli` starts an embedded hub only when none does)."""

from __future__ import annotations

import os
import ssl
import sys
import urllib.parse
from pathlib import Path

from hub.api_client import TOKEN_VARIABLE
from hub.shutdown import Shutdown
from hub.tokens import read_admin_token
from shared.cli import EXIT_FAILURE, EXIT_USAGE
from shared.config import ConfigError


def hub_url(given: str) -> str:
    """`--hub`'s URL, checked: http(s)://HOST:PORT. Raises ConfigError (exit 2) otherwise."""
    parts = urllib.parse.urlsplit(given)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"--hub {given!r}: give the hub's API as http://HOST:PORT (or https://), "
            "e.g. --hub http://127.0.0.1:7463"
        )
    return given.rstrip("/")


def hub_token(given: str | None, config: Path) -> str:
    """`--token`, else $FLEETMETER_TOKEN, else the admin token beside `config`."""
    token = given or os.environ.get(TOKEN_VARIABLE) or read_admin_token(config)
    if not token:
        raise ConfigError(
            f"no token for the hub: give --token (from `fleet-hub token create NAME --role "
            f"operator`, or viewer to only look), or set ${TOKEN_VARIABLE}"
        )
    return token


def run_attached(url: str, token: str, verify: ssl.SSLContext | bool = True) -> int:
    """The dashboard on a mirror of the hub at `url` until the operator quits."""
    from hub.remote import HubUnavailable, RemoteFleet
    from hub.tui import run_dashboard  # Textual is loaded only for the dashboard

    remote = RemoteFleet(url, token, verify=verify)
    try:
        remote.start()
    except HubUnavailable as exc:
        print(f"fleet-hub: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.status in (401, 403) else EXIT_FAILURE
    with Shutdown(remote.close) as shutdown:  # after a quit, a signal or a lost terminal
        run_dashboard(remote, shutdown=shutdown)
    return 0
