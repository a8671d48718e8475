"""The dashboard's Reconciliation tab (7) under Pilot, on a real hub and the providers served
from a local HTTP server in their documented shapes: embedded (a `Hub` in process with its
API front, the store on disk) and attached to a real `fleet-hub serve` through its API.

Embedded: `u` reconciles on a worker thread (the tabs keep answering while a slow provider
is asked), then one row per provider and day with exact figures, the causes, the day's status
and the trend; the finalised day's drift is an alert; enter shows the day per model and key;
a key without `read:analytics` is one line and the rest goes on; the tab asks nobody on its
own. Not set up: the tab says how. Attached: the hub's scheduled run is shown without asking
the providers again, with Claude Code's spend per user from the analytics report."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from textual.widgets import Static

from hub.api.front import HubFront
from hub.config import load_hub_config
from hub.reconcile.anthropic import COST as ADMIN_COST
from hub.reconcile.anthropic import USAGE
from hub.reconcile_rows import trend
from hub.remote import RemoteFleet
from hub.serve import Hub
from hub.tui.app import FleetApp
from hub.tui.governance import InfoScreen
from hub.tui.table import LiveTable
from shared.events import Agent, Event, Tokens, UsageEvent
from tests.analytics_api import ANALYTICS_KEY, AnalyticsData, mount
from tests.analytics_api import COST as ANALYTICS_COST
from tests.api_harness import fleet_hub
from tests.budget_harness import hello, send
from tests.fleet_harness import free_port, make_hub, processes, start_hub
from tests.pilot_waits import until
from tests.provider_api import (
    ANTHROPIC_KEY,
    LIST_CENTS,
    ProviderApi,
    ProviderData,
    bill_anthropic_day,
)
from tests.test_tui_halt import select
from tests.test_tui_layout import fits

NODE = "spark01"
MODEL = "claude-sonnet-4-5-20250929"
TOKENS = Tokens(input=1000, output=20_000, cache_read=100_000)  # $0.333 a call at list
CALLS = 10  # a day: $3.33
TODAY = datetime.now(UTC).date()
DAYS = (TODAY - timedelta(days=2), TODAY - timedelta(days=1), TODAY)
TIMES = {DAYS[0]: 1, DAYS[1]: 2, DAYS[2]: 3}  # what the provider bills, in fleet days


def calls_on(day: date) -> list[Event]:
    noon = datetime.combine(day, time(12), UTC).timestamp()
    at = min(noon, datetime.now(UTC).timestamp() - 60)  # today's calls: not in the future
    return [
        UsageEvent(
            event_id=f"claude:{NODE}:{day}:msg_{i}",
            ts=at,
            agent=Agent.CLAUDE_CODE,
            model=MODEL,
            tokens=TOKENS,
            session_id=f"s-{day}",
            machine=NODE,
            profile="key-a",
        )
        for i in range(CALLS)
    ]


def billed() -> ProviderData:
    """Each day of DAYS billed `TIMES[day]` times the fleet's calls, at list price."""
    data = ProviderData()
    for day, times in TIMES.items():
        n = CALLS * times
        bill_anthropic_day(data, day, MODEL, TOKENS, n, LIST_CENTS)
    return data


def key(tmp: Path, name: str, secret: str) -> Path:
    path = tmp / name
    path.write_text(secret)
    path.chmod(0o600)
    return path


def config(
    tmp: Path, api: ProviderApi, *, interval: float, analytics_key: str, openai: str = ""
) -> str:
    return (
        openai
        + f"""
[reconcile]
interval = {interval}
days = 3
[reconcile.anthropic]
key_file = "{key(tmp, "anthropic.key", ANTHROPIC_KEY)}"
base_url = "{api.url}"
retries = 0
analytics = true
analytics_key_file = "{key(tmp, "analytics.key", analytics_key)}"
[[reconcile.keys]]
provider = "anthropic"
key = "apikey_1"
profiles = ["{NODE}/key-a"]
[[reconcile.actors]]
actor = "Ann@Example.com"  # the report says ann@example.com: emails match without case
profiles = ["{NODE}/key-a"]
"""
    )


@contextmanager
def embedded(tmp: Path, extra: str) -> Iterator[Hub]:
    """A hub in this process with its API front (what `fleet-hub dashboard` starts)."""
    setup = make_hub(tmp)
    setup.config.write_text(setup.config.read_text() + extra)
    hub = Hub(load_hub_config(setup.config))
    service = hub.start()
    front = HubFront(hub)
    front.start(service)
    try:
        for day in DAYS:
            send(setup, NODE, calls_on(day), hello(NODE))
        yield hub
    finally:
        front.stop()
        hub.stop()


def cells(table: LiveTable, row: str) -> dict[str, str]:
    return {c.key: table.get_cell(row, c.key).text for c in table.spec}


def heard(app: FleetApp) -> list[str]:
    """The messages the app will notify from now on (and still shows)."""
    said: list[str] = []
    notify = app.notify

    def noting(message: str, **kw: Any) -> None:
        said.append(message)
        notify(message, **kw)

    app.notify = noting  # type: ignore[method-assign]
    return said


def provider_asks(api: ProviderApi) -> int:
    return sum(api.count(p) for p in (USAGE, ADMIN_COST, ANALYTICS_COST))


async def test_embedded_reconcile_now_rows_detail_and_alert(tmp_path: Path) -> None:
    api = ProviderApi(billed(), page_size=2)
    mount(api, AnalyticsData())
    api.delay = 0.4  # a slow provider: the run takes seconds
    dead = f"""
[reconcile.openai]
key_file = "{key(tmp_path, "openai.key", "sk-admin-x")}"
base_url = "http://127.0.0.1:{free_port()}"
retries = 0
"""  # nobody answers there
    extra = config(tmp_path, api, interval=0, analytics_key=ANTHROPIC_KEY, openai=dead)
    with api.running(), embedded(tmp_path, extra) as hub:
        assert hub.service is not None
        app = FleetApp(hub.service, who="ann@tui")
        app.animation_level = "none"
        async with app.run_test(size=(160, 45)) as pilot:
            await pilot.press("7")
            note = app.query_one("#reconcile-note", Static)
            await until(pilot, lambda: "u: reconcile now" in str(note.content), "no run yet")
            table = app.table("reconcile")
            assert table.row_count == 0 and provider_asks(api) == 0  # nobody asked on its own

            await pilot.press("u")
            await until(pilot, lambda: api.requests != [], "the providers to be asked")
            # the run is on a worker thread: the dashboard still answers keys and ticks
            ticks = app.ticks
            await pilot.press("1")
            assert app.current_tab == "machines" and app.reconcile.running
            await until(pilot, lambda: app.ticks > ticks + 2, "ticks during the run")
            await pilot.press("7")
            row = f"anthropic:{DAYS[1]}"
            await until(pilot, lambda: row in table.rows_by_key, "the rows", within=30)
            await until(pilot, lambda: not app.reconcile.running, "the run to end")

            assert cells(table, f"anthropic:{DAYS[0]}") == {
                "provider": "anthropic", "day": DAYS[0].isoformat(), "fleet": "$3.33",
                "billed": "$3.33", "drift": "$0.00", "percent": "+0.0%", "status": "final",
                "trend": "▁", "cause": "",
            }  # fmt: skip
            assert cells(table, row) == {
                "provider": "anthropic", "day": DAYS[1].isoformat(), "fleet": "$3.33",
                "billed": "$6.66", "drift": "+$3.33", "percent": "+50.0%", "status": "final",
                "trend": "▁█", "cause": "unseen_usage",
            }  # fmt: skip
            today = cells(table, f"anthropic:{TODAY}")
            assert (today["billed"], today["drift"], today["percent"]) == (
                "$9.99", "+$6.66", "+66.7%"
            )  # fmt: skip
            assert (today["status"], today["trend"]) == ("partial", "▁▆█")
            assert app.reconcile.entries[row].billed == Decimal("6.66")  # exact, from the core
            # a provider nobody answers for: one row, its one-line error, the rest shown
            down = cells(table, "openai:-")
            assert (down["status"], down["fleet"]) == ("unreachable", "–")
            assert (
                down["cause"].startswith("openai /v1/organization/")
                and "no answer" in down["cause"]
            )

            # the analytics key lacks read:analytics: one line over the rows, the rest went on
            said = str(note.content)
            assert said.startswith("Claude Code analytics: anthropic") and "\n" not in said
            assert len(said) <= 160 and note.region.height == 1

            # the finalised day's drift is an alert (today's is not: still being finalised)
            assert hub.alerts is not None
            ids = [a.finding.id for a in hub.alerts.alerts(50)]
            assert f"reconcile:anthropic:{DAYS[1]}:{MODEL}:apikey_1:unseen_usage" in ids
            assert not [i for i in ids if str(TODAY) in i]

            # enter: the day per model and key, its cause in words
            await select(pilot, table, row)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, InfoScreen), "the detail")
            assert isinstance(app.screen, InfoScreen)
            text = "\n".join(app.screen.lines)
            assert MODEL in text and "apikey_1" in text and "+$3.33" in text
            assert "tokens more than any node reported" in text
            assert "lacks the read:analytics scope" in text  # the whole line, on enter
            await pilot.press("escape")

            # redraws read the kept answer: the providers are not asked again
            asked = provider_asks(api)
            await pilot.pause(1.5)
            assert provider_asks(api) == asked


async def test_not_set_up_says_how(tmp_path: Path) -> None:
    with embedded(tmp_path, "") as hub:
        assert hub.service is not None
        app = FleetApp(hub.service)
        app.animation_level = "none"
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("7")
            note = app.query_one("#reconcile-note", Static)
            await until(pilot, lambda: "not set up" in str(note.content), "the set-up note")
            text = str(note.content)
            assert "[reconcile.anthropic]" in text and "[[reconcile.keys]]" in text
            # the defaults as they are, and nothing that needs an Enterprise plan to copy
            assert "days = 3 " in text and "\nanalytics = true" not in text
            # whole on an 80x24 screen: no line wrapped, none below the tab's bottom
            await pilot.pause()
            assert note.region.height == len(text.splitlines())
            assert note.region.bottom <= app.query_one("#feed-row").region.y
            assert not app.table("reconcile").display
            await pilot.press("u")
            await pilot.pause(0.3)
            assert app.table("reconcile").row_count == 0


@pytest.mark.parametrize("size", [(80, 24)])
async def test_attached_shows_the_scheduled_run_and_claude_code_per_user(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    api = ProviderApi(billed(), page_size=2)
    fleet_day = CALLS * Decimal("0.333")  # $3.33 at list price
    spend = AnalyticsData()
    for day, times in TIMES.items():
        cents = fleet_day * times * 100
        spend.spend[day] = [("claude_code", MODEL, cents * Decimal("0.8"), cents)]
        spend.users[day] = [
            ("user_01Ann", "ann@example.com", "claude_code", cents * Decimal("0.8"), cents),
        ]
    spend.users[DAYS[1]].append(
        ("user_01Bob", "bob@example.com", "claude_code", Decimal(500), Decimal(500))
    )
    mount(api, spend)
    setup = make_hub(tmp_path)
    setup.config.write_text(
        setup.config.read_text() + config(tmp_path, api, interval=3600, analytics_key=ANALYTICS_KEY)
    )
    viewer = fleet_hub(
        tmp_path, "token", "create", "v", "--role", "viewer", "--config", str(setup.config)
    )
    token = viewer.stdout.split()[-1]
    with api.running(), processes() as started:
        proc = start_hub(setup, tmp_path)
        started.append(proc)
        for day in DAYS:
            send(setup, NODE, calls_on(day), hello(NODE))
        url = f"http://{load_hub_config(setup.config).api_listen}"
        with RemoteFleet(url, token) as remote:
            app = FleetApp(remote)
            app.animation_level = "none"
            async with app.run_test(size=size) as pilot:
                await pilot.press("7")
                table = app.table("reconcile")
                row = f"anthropic:{DAYS[1]}"
                # the hub's schedule runs 5 s after it starts: no key pressed here
                await until(pilot, lambda: row in table.rows_by_key, "the scheduled run", 40)
                assert cells(table, row)["billed"] == "$6.66"
                assert cells(table, row)["drift"] == "+$3.33"
                # 80x24: the figures and the status whole, nothing running off the edge
                await until(pilot, lambda: fits(table), "the tab to fit")
                must = ["provider", "day", "fleet", "billed", "drift", "status"]
                assert [k for k in table.shown_columns if k in must] == must
                tab = app.query_one("#tabs Tab#--content-tab-reconcile")
                assert tab.region.right <= size[0]  # its label on screen
                asked = provider_asks(api)
                await pilot.pause(6)  # a read of the latest answer or more, and many ticks
                assert provider_asks(api) == asked
                # u through the API: the hub's run of the last minute is the answer
                said = heard(app)
                await pilot.press("u")
                await until(pilot, lambda: "Reconciled" in said, "the run through the API", 30)
                assert provider_asks(api) == asked and not app.reconcile.running

                await select(pilot, table, row)
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, InfoScreen), "the detail")
                assert isinstance(app.screen, InfoScreen)
                text = "\n".join(app.screen.lines)
                assert "Claude Code (the Enterprise analytics cost report)" in text
                ann = next(line for line in text.splitlines() if "Ann@Example.com" in line)
                # fleet at list $3.33, list $6.66, billed after the discount $5.33 (5.328)
                assert ann == (
                    "  Ann@Example.com: fleet $3.33, billed $6.66 at list price ($5.33 after "
                    "the discount), drift +$3.33"
                )
                await pilot.press("escape")
                assert app.reconcile.watch is not None  # what GET /reconcile/latest gave
                latest = app.reconcile.watch.view().latest
                assert latest is not None
        actors = latest["result"]["claude_code"]["actors"]
        day1 = {a["actor"]: a for a in actors if a["day"] == DAYS[1].isoformat()}
        assert Decimal(day1["Ann@Example.com"]["drift"]["usd"]) == Decimal("3.33")
        assert day1["Ann@Example.com"]["user_id"] == "user_01Ann"
        assert day1["bob@example.com"]["fleet"]["profiles"] == []
        alerts = orjson.loads(
            fleet_hub(tmp_path, "alerts", "--json", "--config", str(setup.config)).stdout
        )["alerts"]
        scopes = {a["scope"] for a in alerts if a["kind"] == "reconcile_unseen_usage"}
        assert "provider=anthropic,actor=Ann@Example.com" in scopes
        assert "provider=anthropic,actor=bob@example.com" in scopes
        # today is past the analytics data's watermark: shown, never alerted
        assert not [a for a in alerts if str(TODAY) in a["id"]]
        # the command says it too (the hub's shared answer: no second round of asks)
        asked = provider_asks(api)
        done = fleet_hub(tmp_path, "reconcile", "--config", str(setup.config))
        assert done.returncode == 0, done.stderr
        assert "Claude Code per user" in done.stdout
        ann_day1 = next(
            line.split()
            for line in done.stdout.splitlines()
            if line.split()[:2] == [DAYS[1].isoformat(), "Ann@Example.com"]
        )
        assert ann_day1[2:] == ["3.33", "6.66", "5.328", "3.33"]
        assert provider_asks(api) == asked


def test_the_trend_reads_a_drift_either_way() -> None:
    """A day's block is as tall as its drift is large, under- or over-billed alike; "·" for a
    day with nothing billed."""
    assert trend([Decimal(-50), None, Decimal(25), Decimal(0)]) == "█·▄▁"
    assert trend([Decimal(0), Decimal(0)]) == "▁▁"
