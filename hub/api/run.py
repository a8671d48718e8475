"""`fleet-hub serve`: the hub (receiver, store, ledger, commands), its HTTP API and alert
courier (hub.api.front), as a service. Tells systemd when it is ready and pings its watchdog;
SIGTERM stops the API, then the hub, which leaves the store committed. A fatal error exits 1 and
tells systemd why.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

from hub.api.front import HubFront
from hub.api.gc_freeze import freeze_after
from hub.api.server import ApiServer
from hub.config import HubConfig
from hub.serve import Hub
from hub.service import FleetService
from shared.cli import EXIT_FAILURE
from shared.systemd import sd_notify, watchdog_interval

log = logging.getLogger(__name__)


def serve(config: HubConfig, start_hub: Callable[[Hub, str], FleetService | None]) -> int:
    """Run until SIGTERM / SIGINT. `start_hub(hub, prog)` starts the hub or says why not."""
    assert config.path is not None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    hub = Hub(config)
    front = HubFront(hub)  # a bad sink secret file: exit 2 before anything starts
    service = start_hub(hub, "fleet-hub serve")
    if service is None:
        sd_notify("STATUS=failed: cannot listen\nERRNO=98")
        return EXIT_FAILURE
    try:
        front.start(service)
    except OSError as exc:
        hub.stop()
        print(
            f"fleet-hub serve: {exc}; is another fleet-hub serving? ([api] listen in "
            f"{config.path})",
            file=sys.stderr,
        )
        sd_notify(f"STATUS=failed: {exc}\nERRNO=98")
        return EXIT_FAILURE
    api = front.api
    assert api is not None
    print(
        f"fleet-hub serving: events {hub.events_url}, commands {hub.commands_url}, api {api.url}",
        flush=True,
    )
    sd_notify(f"READY=1\nSTATUS=serving: api {api.url}")
    seeding = hub.seeding
    freeze_after(service.wait_loaded, *([seeding.join] if seeding is not None else []))
    try:
        status = supervise(stop, api, watchdog_interval())
    finally:
        sd_notify("STOPPING=1")
        front.stop()
        hub.stop()
        log.info("hub stopped; the store is committed")
    return status


CHECK_EVERY_S = 1.0


def supervise(stop: threading.Event, api: ApiServer, ping: float | None) -> int:
    """Wait for `stop`, pinging systemd's watchdog while the API serves. An API that stopped
    by itself is fatal: exit 1 (and systemd's Restart=on-failure starts the hub again)."""
    every = min(CHECK_EVERY_S, ping / 3) if ping else CHECK_EVERY_S
    while not stop.wait(every):
        if not api.alive:
            why = f"the API stopped: {api.error or 'unexpectedly'}"
            log.error("%s", why)
            print(f"fleet-hub serve: {why}", file=sys.stderr)
            sd_notify(f"STATUS=failed: {why}")
            return EXIT_FAILURE
        if ping:
            sd_notify("WATCHDOG=1")
    return 0
