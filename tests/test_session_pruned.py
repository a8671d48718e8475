"""A session whose first days' events were pruned (retain_days) keeps its detail: the spend
series from the quarter-hour roll-ups on pruned days and from the events after, each call once,
to the cent and beyond; the dashboard says which part is from the roll-ups; the API tells an
attached dashboard the same. A real store on disk, pruned as the hub prunes it."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from hub.api.app import create_app
from hub.api.server import ApiServer
from hub.dashboard import Dashboard, session_detail
from hub.service import FleetService
from hub.store import Store
from hub.tokens import Role, TokenBook
from pricing import PriceBook
from shared.events import Agent, Event, Tokens, UsageEvent
from shared.events import Role as CallRole
from shared.hello import NodeHello

T0 = 1_795_000_000.0  # 2026-11-18 04:26 UTC
DAY = 86400.0
NOW = T0 + 10 * DAY  # the calls below stay in this month: the ledger holds the session
HELLO = NodeHello("spark01", "0.1.0", T0, "linux", 8, ())


def calls() -> list[UsageEvent]:
    """Session s1: a call every 2 h 10 min over 3 days, a third of them a subagent's (logged
    under the session's id, as Claude Code logs them)."""
    out = []
    for n in range(34):
        sub = n % 3 == 0
        out.append(
            UsageEvent(
                event_id=f"claude:s1:msg_{n}",
                ts=NOW - 3 * DAY + n * 7800.0,
                agent=Agent.CLAUDE_CODE,
                model="claude-sonnet-4-5",
                tokens=Tokens(input=1000 + n, output=300 + 7 * n, cache_read=5000 * n),
                session_id="s1",
                parent_session_id="s1" if sub else None,
                role=CallRole.SUBAGENT if sub else CallRole.MAIN,
                machine="spark01",
                project="/work/app",
            )
        )
    return out


def service_on(data: Path) -> FleetService:
    return FleetService(Store.in_dir(data), PriceBook.default(), clock=lambda: NOW, retain_days=1)


@pytest.fixture
def pruned(tmp_path: Path) -> Iterator[tuple[FleetService, Decimal, float, float]]:
    """A service restarted on a store whose first two days of s1 were pruned, and s1's spend,
    first and last call as counted before the prune."""
    before = service_on(tmp_path)
    events = calls()
    before.ingest("spark01", "events", 1, len(events), list[Event](events), HELLO)
    first, last, bins = before.session_series("s1", 72)[:3]
    while before.prune():
        pass
    assert len(before._store.session_usage("s1")) < len(events) // 2  # noqa: SLF001
    before._store.close()  # noqa: SLF001
    service = service_on(tmp_path)
    try:
        yield service, sum(bins, Decimal(0)), first, last
    finally:
        service._store.close()  # noqa: SLF001


def test_a_pruned_sessions_series_comes_from_the_rollups_then_the_events(
    pruned: tuple[FleetService, Decimal, float, float],
) -> None:
    service, spent, first, last = pruned
    series = service.session_series("s1", 72)
    assert sum(series[2], Decimal(0)) == spent > 0
    assert series[:2] == (first, last)
    assert series.rolled_up_before is not None
    assert first < series.rolled_up_before <= NOW - DAY + 900
    assert sum(b > 0 for b in series.bins) > 20  # spread over its life, not one lump
    [row] = service.sessions(["s1"])
    assert row.main.calls + row.subagents.calls == len(calls())


def test_the_dashboard_shows_a_pruned_sessions_detail_and_says_so(
    pruned: tuple[FleetService, Decimal, float, float],
) -> None:
    service, spent, _, _ = pruned
    detail = session_detail(Dashboard(service), "s1")
    assert sum(detail.series, Decimal(0)) == spent
    assert detail.series_label.endswith("; before 2026-11-27 11:15 by quarter-hour")
    figures = dict(detail.figures)
    assert "totals from roll-ups" in figures["events"]
    assert figures["main"].startswith("metered $")


def test_the_api_tells_an_attached_dashboard_the_same(
    pruned: tuple[FleetService, Decimal, float, float], tmp_path: Path
) -> None:
    service, spent, first, _ = pruned
    book = TokenBook(tmp_path / "tokens.json")
    token = book.create("v", Role.VIEWER)
    api = ApiServer(create_app(service, book, hub_name="t", version="0"), "127.0.0.1:0")
    api.start()
    try:
        got = httpx.get(
            f"{api.url}/api/v1/sessions/s1/series",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()
    finally:
        api.stop()
    assert sum(Decimal(b) for b in got["bins"]) == spent
    assert got["first_call"] == first and got["rolled_up_before"] > first
