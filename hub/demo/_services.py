"""The demo hub's HTTP API and alert courier, as `fleet-hub serve` runs them: the API on a
free loopback port (written into the demo's hub.toml, so that `fleet-hub budget|alerts|
resume ... --config <demo dir>/hub/hub.toml` act on the running demo, with the admin token
beside the config), the courier delivering the outbox's alerts to the configured sinks."""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from hub.alerts.courier import Courier, sink_secrets
from hub.api.alert_http import HttpxPost
from hub.api.run import hub_app
from hub.api.server import ApiServer
from hub.demo._loop import set_api_listen
from hub.serve import Hub
from hub.tokens import ensure_admin_token

LISTEN = "127.0.0.1:0"


class HubServices:
    """`start()` serves the API and starts the courier; `stop()` ends both (idempotent)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.api: ApiServer | None = None
        self._close_streams: Callable[[], None] | None = None  # the API's live streams
        self._courier: Courier | None = None
        self._post: HttpxPost | None = None

    def start(self) -> None:
        hub, config = self.hub, self.hub.config
        assert hub.service is not None and hub.alerts is not None and config.path is not None
        secrets = sink_secrets(config.alerts)  # a bad secret: a ConfigError, before serving
        ensure_admin_token(config.path)
        app = hub_app(hub, hub.service)
        self._close_streams = app.state.broker.close
        self.api = ApiServer(app, LISTEN)
        self.api.start()
        set_api_listen(config.path, urlsplit(self.api.url).netloc)
        # httpx logs every request at INFO: a line per alert would bury the demo's own news
        logging.getLogger("httpx").setLevel(logging.WARNING)
        self._post = HttpxPost()
        self._courier = Courier(hub.alerts, config.alerts, config.name, self._post, secrets)
        self._courier.start()

    def stop(self) -> None:
        courier, self._courier = self._courier, None
        if courier is not None:
            courier.stop()  # a delivery in flight is sent again by the next start
        post, self._post = self._post, None
        if post is not None:
            post.close()
        api, self.api = self.api, None
        if api is not None:
            api.stop(before=self._close_streams)  # open streams end whole, not cut
