"""The dashboard: the only part of fleetmeter that imports Textual."""

from __future__ import annotations

from contextlib import nullcontext

from hub.shutdown import Shutdown
from hub.source import FleetSource
from hub.tui.app import FleetApp

__all__ = ["FleetApp", "run_dashboard"]


def run_dashboard(
    service: FleetSource, *, who: str | None = None, shutdown: Shutdown | None = None
) -> None:
    """Run the TUI in this terminal until the operator quits, or SIGTERM, SIGHUP or SIGINT
    arrive or the terminal goes away (`shutdown`: the caller's, whose cleanup then runs as
    after a quit, or by force if the app cannot end; see hub.shutdown)."""
    app = FleetApp(service, who=who)
    with nullcontext(shutdown) if shutdown is not None else Shutdown(lambda: None) as ending:
        if ending.requested:
            return  # asked to end while starting
        ending.asks(app.leave_soon)
        try:
            app.run()
        finally:
            ending.asks(None)
