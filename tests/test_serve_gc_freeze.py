"""`fleet-hub serve` freezes its start-up objects out of the cyclic collector once the figures
are loaded and the detectors seeded (`hub.api.gc_freeze`): a full collection then walks only
what came after, and no longer stalls a report request for tens of ms."""

from __future__ import annotations

import gc
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.api.gc_freeze import freeze_after
from tests.api_harness import little_fleet
from tests.fleet_harness import wait_for


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freezes_only_after_every_part_is_built(unfrozen: None) -> None:
    loaded, seeded = threading.Event(), threading.Event()
    thread = freeze_after(loaded.wait, seeded.wait)
    loaded.set()
    thread.join(0.3)
    assert thread.is_alive() and gc.get_freeze_count() == 0  # the seed still runs
    seeded.set()
    thread.join(10)
    assert not thread.is_alive()
    assert gc.get_freeze_count() > 1_000  # the test process's modules, at least


def test_a_served_hub_freezes_its_start_up(tmp_path: Path) -> None:
    with little_fleet(tmp_path) as hub:
        log = hub.setup.config.parent / "hub.log"
        pattern = re.compile(r"start-up objects frozen out of the collector: (\d+)")
        wait_for(lambda: pattern.search(log.read_text()) is not None, 30, "the freeze")
        found = pattern.search(log.read_text())
        assert found is not None and int(found.group(1)) > 10_000
