"""The dashboard's figures as the screen shows them (Textual's Pilot on a real `FleetService`):
the header fitted to the terminal's width, and a rate limit with the switch it caused in the
Profiles tab and in the feed."""

from __future__ import annotations

import re
import time

from textual.widgets import Static

from hub.ledger import profile_key
from shared.events import Agent, LimitEvent, LimitKind, LimitWindow, ProfileEvent, ProfileState
from tests.pilot_waits import until
from tests.synthetic_fleet import SyntheticFleet
from tests.test_tui import cell, feed_text, fleet, fleet_app, started, static_text

__all__ = ["fleet"]  # the fixture


def header_shown(figures: Static) -> str:
    return static_text(figures)


async def test_the_header_fits_the_terminal_and_refits_when_it_is_resized(
    fleet: SyntheticFleet,
) -> None:
    async with fleet_app(fleet).run_test(size=(80, 24)) as pilot:
        app = await started(pilot)
        figures = app.query_one("#figures", Static)

        def fitted() -> bool:
            h = app.header_figures
            return h is not None and header_shown(figures) == h.line(figures.content_region.width)

        await until(pilot, fitted, "the header at 80 columns")
        line = header_shown(figures)
        assert len(line) <= 78, line  # 80 less the padding: nothing runs off the screen
        assert re.search(r"met\S* \$[\d,]+\.\d\d", line) and "/h" in line, line
        assert line.endswith("nodes 3/3"), line
        await pilot.resize_terminal(160, 45)
        await until(pilot, lambda: fitted() and header_shown(figures) != line, "a wider header")
        wide = header_shown(figures)
        assert len(wide) <= 158 and "subscr" in wide and wide.endswith("nodes 3/3"), wide


async def test_a_limit_and_its_switch_show_together_in_the_profiles_tab_and_the_feed(
    fleet: SyntheticFleet,
) -> None:
    async with fleet_app(fleet).run_test(size=(200, 50)) as pilot:
        app = await started(pilot)
        now = time.time()
        reset = now + 3600
        agent = Agent.CLAUDE_CODE
        fleet.send(
            "spark001",
            [
                LimitEvent(
                    "h",
                    now,
                    agent,
                    LimitKind.RATE_LIMIT_HIT,
                    LimitWindow.FIVE_HOUR,
                    resets_at=reset,
                    machine="spark001",
                    profile="p01",
                ),
                ProfileEvent(
                    "l",
                    now,
                    "spark001",
                    "p01",
                    agent,
                    ProfileState.RATE_LIMITED,
                    until=reset,
                    reason="5h window",
                ),
                ProfileEvent(
                    "s",
                    now + 1,
                    "spark001",
                    "p01",
                    agent,
                    ProfileState.SWITCHED_AWAY,
                    switched_to="p02",
                    reason="rate_limited",
                ),
                ProfileEvent(
                    "a",
                    now + 1,
                    "spark001",
                    "p02",
                    agent,
                    ProfileState.ACTIVE,
                    reason="rate_limited",
                ),
            ],
        )
        await pilot.press("2")
        profiles = app.table("profiles")
        key = profile_key("spark001", "p01")
        state = re.compile(r"switched → p02 · limited 59:\d\d")
        await until(pilot, lambda: state.fullmatch(cell(profiles, key, "state")), "the state")
        said = "p01 hit its rate limit (5-hour window, resets "
        await until(pilot, lambda: said in feed_text(app), "the feed")
        feed = feed_text(app)
        assert feed.count(said) == 1
        line = next(x for x in feed.splitlines() if said in x)
        assert line.endswith(") · claude-code switched to p02"), line
        assert "rate_limited" not in feed and "switched_away" not in feed
