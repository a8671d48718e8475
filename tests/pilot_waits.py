"""Waiting on a Textual app driven by Pilot: shared by the dashboard's Pilot tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from textual.pilot import Pilot
from textual.widgets import Button

from hub.tui.screens import ConfirmScreen


async def until(
    pilot: Pilot[Any], predicate: Callable[[], object], what: str, within: float = 10.0
) -> float:
    """Let the app run until `predicate()` holds; returns how long that took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > within:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await pilot.pause(0.02)
    return time.monotonic() - start


async def asking(pilot: Pilot[Any]) -> ConfirmScreen:
    """Wait for the confirmation dialog to be up and listening (its safe answer focused)."""
    app = pilot.app
    await until(
        pilot,
        lambda: isinstance(app.screen, ConfirmScreen) and isinstance(app.focused, Button),
        "the confirmation dialog",
    )
    assert isinstance(app.screen, ConfirmScreen)
    return app.screen
