"""What serves a started hub to the world outside its process: the HTTP API (the dashboard,
the CLI, Prometheus and other dashboards are its clients) and the alert courier (which delivers
the outbox to the sinks). `fleet-hub serve` and the dashboard's embedded hub both run one, so a
hub that a dashboard started is as reachable, and delivers as, the service does.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI

from hub import reconcile_view
from hub.alerts.courier import Courier, sink_secrets
from hub.api import agent_mcp
from hub.api.alert_http import HttpxPost
from hub.api.app import create_app
from hub.api.reconcile_http import HttpxTransport
from hub.api.server import ApiServer
from hub.reconcile.local import StoreBilled
from hub.reconcile.run import Reconciler
from hub.reconcile.schedule import Schedule
from hub.serve import Hub
from hub.service import FleetService
from hub.store import DB_FILE
from hub.tokens import TokenBook, ensure_admin_token, tokens_path
from shared.cli import package_version

log = logging.getLogger(__name__)


class HubFront:
    """The API and the courier of `hub`. Made before the hub starts, so that a bad sink secret
    file is a config error (ConfigError, exit 2) before anything listens; `start(service)` once
    the hub's service runs raises OSError when the API cannot listen (nothing is left running
    then); `stop()` ends both, the open streams whole, and may be called more than once. The hub
    itself is the caller's to stop."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._secrets = sink_secrets(hub.config.alerts)
        self.app: FastAPI | None = None
        self.api: ApiServer | None = None
        self._courier: Courier | None = None
        self._post: HttpxPost | None = None
        self._transport: HttpxTransport | None = None  # the providers' reports
        self._schedule: Schedule | None = None  # reconciliation every [reconcile] interval

    @property
    def url(self) -> str:
        assert self.api is not None, "start() first"
        return self.api.url

    def start(self, service: FleetService) -> None:
        hub, config = self.hub, self.hub.config
        assert config.path is not None
        ensure_admin_token(config.path)
        transport = HttpxTransport()
        reconciler = Reconciler(
            config.reconcile,
            service.report,
            hub.alerts,
            transport,
            book=hub.book,
            local=StoreBilled(config.data_dir / DB_FILE, hub.book),  # imports, Cursor's dollars
            overage=service.credit_meters.overage_between,
        )
        hub.price_listeners.append(reconciler.use_prices)
        app = create_app(
            service,
            TokenBook(tokens_path(config.path)),
            hub_name=config.name,
            version=package_version(),
            rejects=lambda: dict(hub.receiver.rejects.counts) if hub.receiver else {},
            governor=hub.governor,
            alerts=hub.alerts,
            reconciler=reconciler,
        )
        # the agents' MCP (streamable HTTP) at /mcp, behind agent and viewer tokens
        answers = agent_mcp.HubAnswers(service, hub.budget_verdicts, hub.session_findings)
        agent_mcp.mount(app, agent_mcp.McpEndpoint(answers, TokenBook(tokens_path(config.path))))
        api = ApiServer(app, config.api_listen, config.api_tls_cert_key_file)
        try:
            api.start()
        except OSError:
            transport.close()
            raise
        self.app, self.api, self._transport = app, api, transport
        reconcile_view.register(service, reconcile_view.LocalReconcile(reconciler))
        service.api_url = api.url
        assert self.hub.alerts is not None
        self._post = HttpxPost()
        self._courier = Courier(
            self.hub.alerts, config.alerts, config.name, self._post, self._secrets
        )
        self._courier.start()
        if config.reconcile.holds_bills and config.reconcile.interval > 0:
            self._schedule = Schedule(reconciler, config.reconcile.interval)
            self._schedule.start()

    def stop(self) -> None:
        if self._schedule is not None:
            self._schedule.stop()
            self._schedule = None
        if self._courier is not None:
            self._courier.stop()  # a delivery still in flight is sent again at the next start
            self._courier = None
        if self._post is not None:
            self._post.close()
            self._post = None
        if self.api is not None and self.app is not None:
            self.api.stop(before=self.app.state.broker.close)  # streams end whole, not cut
            self.api = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
