"""The dashboard: the only part of fleetmeter that imports Textual."""

from __future__ import annotations

import signal
from types import FrameType

from hub.source import FleetSource
from hub.tui.app import FleetApp

__all__ = ["FleetApp", "run_dashboard"]


def run_dashboard(service: FleetSource, *, who: str | None = None) -> None:
    """Run the TUI in this terminal until the operator quits (or SIGTERM / SIGHUP arrive:
    the caller's cleanup then runs as after a quit)."""
    app = FleetApp(service, who=who)

    def leave(signum: int, frame: FrameType | None) -> None:
        app.call_later(app.exit)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        app.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
