"""The event sender ends at a stop at once, also when the stop lands between its look at the
stop flag and its clearing of the wake-up (the daemon's stop sets both): it must not sleep
the rest of its heartbeat. A real hub on loopback answers its heartbeats."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from node_agent.link import EventSender, LinkConfig
from shared.hello import NodeHello, hello_to_map
from tests.fleet_harness import running_hub, wait_for


class StopAfterLook(threading.Event):
    """A stop flag that, once armed, is set (with the sender's wake-up, as the daemon's
    `WakingEvent` does) just after a look that still read it unset: the interleaving of a
    SIGTERM arriving right after the sender's loop looked at the flag."""

    def __init__(self, wake: threading.Event) -> None:
        super().__init__()
        self.wake = wake
        self.armed = False

    def is_set(self) -> bool:
        was = super().is_set()
        if self.armed and not was:
            self.armed = False
            self.set()
            self.wake.set()
        return was


def test_a_stop_right_after_the_loop_looked_ends_the_sender_at_once(tmp_path: Path) -> None:
    with running_hub(tmp_path) as (_hub, setup):
        wake = threading.Event()
        stop = StopAfterLook(wake)
        sender = EventSender(
            LinkConfig("spark07", setup.key("spark07")),
            setup.events,
            tmp_path / "outbox.db",
            lambda: hello_to_map(NodeHello("spark07", "0.1.0", time.time(), "linux", 2)),
            wake=wake,
            stop=stop,
            heartbeat=120.0,  # idle: the sender sleeps until a wake-up or two minutes
        )
        thread = threading.Thread(target=sender.run)
        thread.start()
        try:
            wait_for(lambda: sender.last_ack is not None, 30, "the first heartbeat acked")
            stop.armed = True
            wake.set()  # the sender wakes, looks at the flag: the stop lands just after
            thread.join(timeout=10)
            assert not thread.is_alive(), "the sender slept on through the stop"
        finally:
            threading.Event.set(stop)
            wake.set()
            thread.join()
