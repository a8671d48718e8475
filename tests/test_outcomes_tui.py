"""Cost per outcome on the dashboard, under Textual's Pilot on a real `FleetService` (SQLite on
disk): the Spend-by tab grouped by commit, branch, pull request and repository (`o`), and the
session detail's outcome line."""

from __future__ import annotations

import threading
import time
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from rich.text import Text
from textual.widgets import Static

from hub._outcome_cache import OutcomeRowsCache
from hub.ledger import Dimension
from hub.tui.app import FleetApp
from hub.tui.screens import DetailScreen
from shared.outcomes import Commit, PullRequest, SessionOutcome, outcome_to_map
from tests.pilot_waits import until
from tests.synthetic_fleet import SyntheticFleet, build

SIZE = (200, 50)
SHA = "c0ffee" + "0" * 34


@pytest.fixture
def fleet(tmp_path: Path) -> SyntheticFleet:
    fleet = build(tmp_path, machines=2, profiles_per_machine=2, sessions_per_machine=2)
    machine = fleet.machines[0]
    session, _ = fleet.sessions[machine][0]
    now = time.time()
    outcome = SessionOutcome(
        session,
        now,
        "ok",
        repo="github.com/acme/widget",
        branch="feature/x",
        commits=(Commit(SHA, now + 60, 5, 1, "trailer", "teach the widget to count"),),
        pr=PullRequest(7, "closed", True, "https://github.com/acme/widget/pull/7"),
        pr_status="found",
    )
    fleet.service.outcomes.handle(machine, [outcome_to_map(outcome)])
    return fleet


def _text(widget: Static) -> str:
    content = widget.content
    return content.plain if isinstance(content, Text) else str(content)


async def test_spend_by_outcome_groups(fleet: SyntheticFleet) -> None:
    service = fleet.service
    machine = fleet.machines[0]
    session, _ = fleet.sessions[machine][0]
    mine = service.sessions([session])[0]
    app = FleetApp(service, live_window=7200)
    app.animation_level = "none"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.table("sessions").row_count > 0, "the first rows")
        spend = app.table("spend")
        scope = app.query_one("#scope", Static)
        await pilot.press("o")
        await until(pilot, lambda: SHA in spend.rows_by_key, "the commit row", within=20)
        assert app.current_tab == "spend" and "group by commit (o)" in _text(scope)
        row = spend.rows_by_key[SHA]
        assert row.cells[0].text == "c0ffee00 teach the widget to count · +5/-1 · trailer"
        calls = mine.main.calls + mine.subagents.calls
        assert row.cells[1].sort == calls
        api = mine.main.api_equivalent + mine.subagents.api_equivalent
        assert row.cells[7].sort == api
        nothing = spend.rows_by_key["None"]
        assert nothing.cells[0].text.startswith("(no outcome) · 3 sessions without a commit")
        assert nothing.cells[1].sort + calls == service.fleet(app.period).calls
        await pilot.press("o")  # by branch: the PR beside it
        key = "github.com/acme/widget/feature/x"
        await until(pilot, lambda: key in spend.rows_by_key, "the branch row", within=20)
        assert "PR #7 merged" in spend.rows_by_key[key].cells[0].text
        await pilot.press("o")
        pr = "github.com/acme/widget#7"
        await until(pilot, lambda: pr in spend.rows_by_key, "the pull request row", within=20)
        assert spend.rows_by_key[pr].cells[0].text.startswith(f"{pr} merged · 1 commit +5/-1")
        assert Decimal(spend.rows_by_key[pr].cells[7].sort) == api
        await pilot.press("o")
        await until(pilot, lambda: "github.com/acme/widget" in spend.rows_by_key, "by repo")
        await pilot.press("g")  # back to the grouping it left
        await until(pilot, lambda: machine not in spend.rows_by_key, "the account rows")
        assert app.outcome_view is None and app.grouping is Dimension.ACCOUNT
        assert "group by account (g)" in _text(scope)


async def test_the_session_detail_says_what_the_session_produced(fleet: SyntheticFleet) -> None:
    machine = fleet.machines[0]
    (session, _), (other, _) = fleet.sessions[machine]
    app = FleetApp(fleet.service, live_window=7200)
    app.animation_level = "none"

    async def detail_of(key: str) -> str:
        await pilot.press("3")
        table = app.table("sessions")
        await until(pilot, lambda: key in table.rows_by_key, "the session row")
        table.move_cursor(row=table.get_row_index(key))
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, DetailScreen), "the detail view")
        screen: Any = app.screen
        text = _text(screen.query_one("#detail-figures", Static))
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, DetailScreen), "the tab again")
        return text

    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.table("sessions").row_count > 0, "the first rows")
        text = await detail_of(session)
        assert "github.com/acme/widget · feature/x · 1 commit +5/-1 · PR #7 merged" in text
        assert "not read yet" in await detail_of(other)


def test_an_outcome_view_is_read_again_only_after_resting(tmp_path: Path) -> None:
    """A read that took 3 s is not started again until 30 s after it ended (10 s when reads
    are quick)."""
    now = [0.0]
    reads: list[str] = []
    release = threading.Event()

    def read(view: str, since: Any) -> dict[str, Any]:
        reads.append(view)
        now[0] += 3.0  # the read takes 3 s of the clock
        release.set()
        return {"rows": [], "view": view}

    cache = OutcomeRowsCache(read, clock=lambda: now[0])
    assert cache.get("commit", date(2026, 12, 1)) is None  # the first read starts
    assert release.wait(10)
    deadline = time.monotonic() + 10
    while cache.get("commit", date(2026, 12, 1)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert reads == ["commit"]
    now[0] += 29.0  # 29 s after the read ended: still resting
    assert cache.get("commit", date(2026, 12, 1)) == {"rows": [], "view": "commit"}
    time.sleep(0.2)
    assert reads == ["commit"]
    now[0] += 1.0
    release.clear()
    cache.get("commit", date(2026, 12, 1))
    assert release.wait(10) and reads == ["commit", "commit"]


def test_outcomes_older_than_the_retention_are_pruned(fleet: SyntheticFleet) -> None:
    service = fleet.service
    machine = fleet.machines[1]
    old_session, _ = fleet.sessions[machine][0]
    old = SessionOutcome(old_session, time.time() - 3 * 86400, "not_a_repo", "gone")
    service.outcomes.handle(machine, [outcome_to_map(old)])
    assert service.outcomes.of_session(machine, old_session) == old
    service.retain_days = 2
    service.prune()
    assert service.outcomes.of_session(machine, old_session) is None
    kept, _ = fleet.sessions[fleet.machines[0]][0]  # the fixture's, read just now
    assert service.session_outcome(kept) is not None
