"""The dashboard's Budgets and Alerts tabs under Pilot, on a real hub: embedded (a `Hub` in
process, its store on disk) and attached to a real `fleet-hub serve` through its API, with
signed batches over nng crossing real budgets. A budget added from the tab lands in hub.toml
and the governor; its crossing shows on the tab (exact figures) and in the header; an override
from the tab is in the audit log with who and why; an alert acknowledged from the Alerts tab is
acknowledged in the outbox (and the API says so); a viewer's token is refused every operator
key and changes nothing."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import tomlkit
from textual.geometry import Region
from textual.pilot import Pilot
from textual.widgets import Button, Input, Label, Static, Tab
from textual.widgets._footer import FooterKey

import hub.governance
from hub import _format as fmt
from hub.budgets.model import parse_budget
from hub.governance_rows import bar, spent_text
from hub.remote import RemoteFleet
from hub.serve import Hub
from hub.service import Update
from hub.tui.app import FleetApp
from hub.tui.governance import FormScreen, InfoScreen
from hub.tui.table import LiveTable
from node_agent.simulate.fake_agent import launch
from shared.events import Agent
from tests.api_harness import ServedHub, serve_hub
from tests.budget_harness import add_budget, api_price, hello, send, usage
from tests.fleet_harness import (
    ProfileSpec,
    child_env,
    processes,
    running_hub,
    start_node,
    write_node,
)
from tests.pilot_waits import asking, until
from tests.test_dashboard_figures import BIG, MONEY
from tests.test_fleet_commands import states
from tests.test_tui_halt import select

NODE = "spark01"


def cell(table: LiveTable, key: str, column: str) -> str:
    return table.get_cell(key, column).text if key in table.rows_by_key else ""


async def fill(pilot: Pilot[Any], app: FleetApp, values: dict[str, str]) -> None:
    """Type into the open form (its fields by key) and press enter on the last one."""
    await until(pilot, lambda: isinstance(app.screen, FormScreen), "the form")
    form = app.screen
    for key, value in values.items():
        form.query_one(f"#field-{key}", Input).value = value
    form.query_one(f"#field-{list(values)[-1]}", Input).focus()
    await pilot.pause()
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(app.screen, FormScreen), "the form to close")


def embedded_app(embedded: Hub) -> FleetApp:
    """The dashboard on an embedded hub, its local user 'ann@tui'."""
    assert embedded.service is not None
    app = FleetApp(embedded.service, who="ann@tui")
    app.animation_level = "none"
    return app


def crossing_calls() -> tuple[list[Any], Decimal]:
    """Three calls of spark01's and the exact price of the first two (the budget's limit)."""
    calls = [usage(NODE, n) for n in range(3)]
    return calls, api_price(calls[0]) + api_price(calls[1])


@pytest.fixture(autouse=True)
def only_on_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tabs read again only when the hub says something changed (no timer to hide a
    missed signal)."""
    monkeypatch.setattr(hub.governance, "REFRESH_S", 3600.0)


async def test_embedded_add_cross_override_and_acknowledge(tmp_path: Path) -> None:
    calls, limit = crossing_calls()
    with running_hub(tmp_path) as (embedded, setup):
        app = embedded_app(embedded)
        async with app.run_test(size=(160, 45)) as pilot:
            # a: the form adds the budget through the governor (written to hub.toml)
            await pilot.press("5")
            await pilot.press("a")
            await fill(
                pilot, app,
                {"name": "spark01-day", "scope": f"machine={NODE}", "period": "day",
                 "basis": "api", "limit": str(limit), "action": "alert"},
            )  # fmt: skip
            budgets = app.table("budgets")
            await until(pilot, lambda: "spark01-day" in budgets.rows_by_key, "the budget's row")
            written = tomlkit.parse(setup.config.read_text())["budgets"]
            assert [t["name"] for t in written] == ["spark01-day"]
            assert cell(budgets, "spark01-day", "state") == "ok"
            assert "breached" not in (app.header_figures.line(160) if app.header_figures else "")

            # two calls meet the limit exactly: breached, in the tab and the header
            send(setup, NODE, calls[:2], hello(NODE))
            await until(
                pilot, lambda: cell(budgets, "spark01-day", "state") == "breached", "breached"
            )
            money = fmt.money(limit)
            assert cell(budgets, "spark01-day", "spent") == f"{money} / {money}"
            assert cell(budgets, "spark01-day", "bar").endswith("100.0%")
            await until(
                pilot,
                lambda: (
                    app.header_figures is not None
                    and "budget 'spark01-day' breached" in app.header_figures.line(160)
                ),
                "the header to name the breach",
            )
            await until(
                pilot,
                lambda: "100 %" in cell(budgets, "spark01-day", "last"),
                "the governor's last action",
            )

            # o: raised until later, with why: in the audit log under who
            await select(pilot, budgets, "spark01-day")
            await pilot.press("o")
            await fill(pilot, app, {"limit": "100", "until": "+2h", "why": "release night"})
            await until(
                pilot,
                lambda: (
                    cell(budgets, "spark01-day", "state") == "ok"
                    and "raised to $100.00" in cell(budgets, "spark01-day", "override")
                ),
                "the override on the row",
            )
            assert embedded.service is not None
            audit = [a for a in embedded.service.audit_log() if a.action == "budget override"]
            assert audit and audit[0].who == "ann@tui" and "release night" in audit[0].result
            assert app.breaches.count == 0

            # the Alerts tab: the crossing's alert, acknowledged with a
            await pilot.press("6")
            alerts = app.table("alerts")

            def crossing() -> str | None:
                return next(
                    (k for k in alerts.rows_by_key if "at 100 %" in cell(alerts, k, "text")), None
                )

            await until(pilot, lambda: crossing() is not None, "the crossing's alert")
            key = crossing()
            assert key is not None
            # the line under the header counts what nobody acknowledged, in other words than
            # the state column's "open" (no sink routes it)
            unacked = sum(
                cell(alerts, k, "state") not in ("acked", "silenced") for k in alerts.rows_by_key
            )
            assert f"{unacked} unacked · 0 silences" in app._governance_hints()  # noqa: SLF001
            # and an end: a past one is told on the form, which stays open
            await select(pilot, alerts, key)
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), "the ack's form")
            app.screen.query_one("#field-until", Input).value = "2020-01-01"
            await pilot.press("enter")
            await pilot.pause()
            problem = str(app.screen.query_one("#form-problem", Label).render())
            assert isinstance(app.screen, FormScreen) and "a time in the future" in problem
            await fill(pilot, app, {"until": "+2h"})
            await until(pilot, lambda: cell(alerts, key, "state") == "acked", "acknowledged")
            assert embedded.alerts is not None
            record = embedded.alerts.alert(key)
            assert record is not None and record.acked_by == "ann@tui"
            assert record.acked_until is not None and record.acked_at is not None
            assert abs(record.acked_until - record.acked_at - 7200) < 60
            assert cell(alerts, key, "acked").startswith("ann@tui until ")


async def refused(app: FleetApp, action: str) -> str:
    """What `app` said when `action` was refused ("" when it was not)."""
    app.refusal = None
    await app.run_action(action)
    return app.refusal or ""


def api(served: ServedHub, path: str) -> Any:
    reply = httpx.get(served.url + path, headers=served.headers("viewer"), timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


async def test_attached_crossing_override_ack_and_a_viewer_refused(tmp_path: Path) -> None:
    calls, limit = crossing_calls()
    served = serve_hub(tmp_path)
    with processes() as started:
        started.append(served.proc)
        made = add_budget(
            served, name="spark01-day", scope=f"machine={NODE}", period="day", basis="api",
            limit=str(limit), action="alert",
        )  # fmt: skip
        assert made.status_code == 201, made.text
        with (
            RemoteFleet(served.url, served.tokens["operator"]) as ops_remote,
            RemoteFleet(served.url, served.tokens["viewer"]) as viewer_remote,
        ):
            ops, viewer = FleetApp(ops_remote), FleetApp(viewer_remote)
            for app in (ops, viewer):
                app.animation_level = "none"
            async with ops.run_test(size=(160, 45)) as pilot, viewer.run_test(size=(160, 45)):
                await pilot.press("5")
                budgets = ops.table("budgets")
                await until(pilot, lambda: "spark01-day" in budgets.rows_by_key, "the row")
                send(served.setup, NODE, calls[:2], hello(NODE))
                for app in (ops, viewer):  # through the stream: no reading on a timer needed
                    table = app.table("budgets")

                    def crossed(t: LiveTable = table) -> bool:
                        return cell(t, "spark01-day", "state") == "breached"

                    await until(pilot, crossed, "the crossing on the tab")
                    assert app.breaches.count == 1 and app.breaches.worst == "spark01-day"
                money = fmt.money(limit)
                assert cell(budgets, "spark01-day", "spent") == f"{money} / {money}"

                # the viewer: every operator key refused, nothing sent
                viewer.action_tab("budgets")
                await select(pilot, viewer.table("budgets"), "spark01-day")
                for action in ("add", "edit", "remove", "override"):
                    assert "needs an operator token" in await refused(viewer, action), action
                    assert not isinstance(viewer.screen, FormScreen)

                # the operator's override: audited under the token's name, with why
                await select(pilot, budgets, "spark01-day")
                await pilot.press("o")
                await fill(pilot, ops, {"limit": "", "until": "+1h", "why": "demo for the CFO"})
                await until(
                    pilot,
                    lambda: cell(budgets, "spark01-day", "state") == "lifted",
                    "lifted on the tab",
                )
                rows = [r for r in api(served, "/api/v1/audit")["rows"]]
                over = [r for r in rows if r["action"] == "budget override"]
                assert over and over[0]["who"] == "t-operator"
                assert "demo for the CFO" in over[0]["result"] and "lifted" in over[0]["result"]

                # the Alerts tab: acknowledged from the tab, the API then says so
                await pilot.press("6")
                alerts = ops.table("alerts")

                def crossing() -> str | None:
                    return next(
                        (k for k in alerts.rows_by_key if "at 100 %" in cell(alerts, k, "text")),
                        None,
                    )

                await until(pilot, lambda: crossing() is not None, "the crossing's alert")
                key = crossing()
                assert key is not None
                viewer.action_tab("alerts")
                vtable = viewer.table("alerts")
                await until(pilot, lambda: key in vtable.rows_by_key, "the viewer's alert row")
                await select(pilot, vtable, key)
                # a on the Alerts tab: acknowledge
                assert "needs an operator token" in await refused(viewer, "add")
                told: list[Update] = []
                viewer_remote.subscribe(told.append)
                await select(pilot, alerts, key)
                await pilot.press("a")
                await fill(pilot, ops, {"until": ""})  # no end: for good
                await until(pilot, lambda: cell(alerts, key, "state") == "acked", "acked")
                # the stream told the other dashboard that the outbox changed
                await until(pilot, lambda: any(u.alerts for u in told), "the stream's word")
                found = {a["id"]: a for a in api(served, "/api/v1/alerts")["alerts"]}
                assert found[key]["state"] == "acked"
                assert found[key]["acked"]["who"] == "t-operator"
                assert found[key]["acked"]["until"] is None
                # the viewer's tab follows (the stream tells it the outbox changed)
                await until(pilot, lambda: cell(vtable, key, "state") == "acked", "viewer acked")


async def test_enter_walks_the_empty_fields_and_saves_from_a_corrected_one(
    tmp_path: Path,
) -> None:
    """Typed key by key as a person does: enter goes to the next empty field; once the form is
    filled, enter on the field just corrected saves (not only enter on the last field)."""
    with running_hub(tmp_path) as (embedded, setup):
        app = embedded_app(embedded)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("5", "a")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), "the form")
            form = app.screen
            for text in ("walk", "fleet", "day", "paid", "abc", "alert"):
                await pilot.press(*text, "enter")
            await pilot.pause()
            assert app.screen is form and "limit 'abc'" in str(
                form.query_one("#form-problem").render()
            )
            limit = form.query_one("#field-limit", Input)
            limit.focus()
            await pilot.pause()
            limit.value = ""
            await pilot.press("1", "0", "0", "0", "enter")
            budgets = app.table("budgets")
            await until(pilot, lambda: "walk" in budgets.rows_by_key, "the budget saved")
            assert not isinstance(app.screen, FormScreen)


async def test_remove_asks_and_a_bad_value_keeps_the_form_open(tmp_path: Path) -> None:
    with running_hub(tmp_path) as (embedded, setup):
        app = embedded_app(embedded)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("5")
            await pilot.press("a")
            await until(pilot, lambda: isinstance(app.screen, FormScreen), "the form")
            form = app.screen
            values = {"name": "x", "scope": "planet=mars", "period": "day", "basis": "paid",
                      "limit": "5", "action": "alert"}  # fmt: skip
            for key, value in values.items():
                form.query_one(f"#field-{key}", Input).value = value
            form.query_one("#field-action", Input).focus()
            await pilot.press("enter")
            await pilot.pause()
            assert app.screen is form  # still open, saying what is wrong
            problem = str(form.query_one("#form-problem").render())
            assert "planet" in problem, problem
            form.query_one("#field-scope", Input).value = "fleet"
            await pilot.press("enter")
            budgets = app.table("budgets")
            await until(pilot, lambda: "x" in budgets.rows_by_key, "the budget")
            await select(pilot, budgets, "x")
            await pilot.press("x")
            await asking(pilot)
            await pilot.press("y")
            await until(pilot, lambda: "x" not in budgets.rows_by_key, "the budget removed")
            assert "budgets" not in tomlkit.parse(setup.config.read_text())
            assert embedded.governor is not None and embedded.governor.budgets == []


def inside(region: Region, size: tuple[int, int]) -> bool:
    return region.x >= 0 and region.y >= 0 and region.right <= size[0] and region.bottom <= size[1]


def fits(table: LiveTable) -> bool:
    return table.virtual_size.width <= table.scrollable_content_region.width


@pytest.mark.parametrize("size", [(80, 24), (160, 45)], ids=["80x24", "160x45"])
async def test_layout_of_the_tabs_the_header_and_the_forms(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    calls, limit = crossing_calls()
    with running_hub(tmp_path) as (embedded, setup):
        assert embedded.governor is not None and embedded.service is not None
        budget = parse_budget(
            {"name": "spark01-day-with-a-long-name", "scope": f"machine={NODE}",
             "period": "day", "basis": "api", "limit": str(limit)}
        )  # fmt: skip
        embedded.governor.add_budget(budget, "test")
        send(setup, NODE, calls[:2], hello(NODE))
        app = embedded_app(embedded)
        async with app.run_test(size=size) as pilot:
            await until(pilot, lambda: app.breaches.count == 1, "the breach")
            # every tab's label on the screen, the footer's halt keys whole
            for label in app.query(Tab):
                assert label.region.width > 0 and inside(label.region, size), label.label
            await until(pilot, lambda: len(app.query(FooterKey)) > 0, "the footer")
            await pilot.pause()
            keys = {k.key: k for k in app.query(FooterKey)}
            for key in ("p", "r", "k", "P", "R", "question_mark", "q"):
                assert key in keys and inside(keys[key].region, size), key
            # the header names the breach and fits
            figures = app.query_one("#figures", Static)
            # the header is redrawn on its own refresh, after the count changed
            await until(pilot, lambda: "breached" in str(figures.render()), "the header's breach")
            line = str(figures.render())
            assert len(line) <= figures.content_size.width, line
            if size == (160, 45):
                assert "budget 'spark01-day-with-a-long-name' breached" in line, line

            for key, tab, must in (
                ("5", "budgets", {"name", "state", "spent"}),
                ("6", "alerts", {"raised", "state", "text"}),
            ):
                await pilot.press(key)
                table = app.table(tab)

                def filled(t: LiveTable = table) -> bool:
                    return t.row_count > 0 and fits(t)

                await until(pilot, filled, f"{tab} to fit")
                assert must <= set(table.shown_columns), (tab, table.shown_columns)

            # enter on an alert: the whole of it, inside the screen
            alerts = app.table("alerts")
            first = alerts.shown_keys[0]
            await select(pilot, alerts, first)
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, InfoScreen), "the alert's detail")
            await pilot.pause()
            assert inside(app.screen.query_one("#dialog").region, size)
            whole = str(app.screen.query_one("#info-text", Static).render())
            assert f"id        {first}" in whole and "evidence" in whole, whole
            await pilot.press("escape")

            # the forms fit whole, their buttons too
            await pilot.press("5")
            await select(pilot, app.table("budgets"), budget.name)
            for key in ("a", "e", "o"):
                await pilot.press(key)
                await until(pilot, lambda: isinstance(app.screen, FormScreen), "the form")
                await pilot.pause()
                form = app.screen
                assert inside(form.query_one("#dialog").region, size), key
                for widget in (*form.query(Input), *form.query(Button)):
                    assert widget.region.height > 0 and inside(widget.region, size), key
                await pilot.press("escape")
                await until(pilot, lambda: not isinstance(app.screen, FormScreen), "closed")


def test_the_header_says_the_breaches_at_every_width_and_cuts_no_figure() -> None:
    h = dataclasses.replace(BIG, breached=2, worst_budget="spark02-day")
    figures = set(MONEY.findall(h.line(1000)))
    for width in range(34, 260):
        line = h.line(width)
        assert len(line) <= width, (width, line)
        assert set(MONEY.findall(line)) <= figures, (width, line)
        assert line.startswith("2 ") and "breached" in line, (width, line)  # never dropped
        assert "$912.44/h" in line and line.endswith("nodes 3/3"), (width, line)
    assert "2 budgets breached, worst 'spark02-day'" in h.line(160)
    one = dataclasses.replace(BIG, breached=1, worst_budget="spark02-day")
    assert one.line(200).startswith("budget 'spark02-day' breached │ ")
    assert "breached" not in BIG.line(400)  # none breached: the header as before


def test_a_spend_that_cannot_be_verified_never_reads_as_all_of_it() -> None:
    row = {"basis": "paid", "spent": "12.3", "limit_in_force": "50", "unverified": None}
    assert spent_text(row) == "$12.30 / $50.00"
    assert spent_text({**row, "unverified": "1 call of unknown price"}) == "$12.30 + ? / $50.00"
    unknown = {**row, "spent": "0", "unverified": "spark02 has gone quiet"}
    assert spent_text(unknown) == "unknown / $50.00"  # never $0.00
    assert spent_text({**row, "limit_in_force": None}) == "$12.30 / lifted"
    quota = {"basis": "quota", "spent": "85.0", "limit_in_force": "80", "unverified": None}
    assert spent_text(quota) == "85 % / 80 %"
    assert bar(Decimal("104.2")) == "██████████ 104.2%" and bar(Decimal("0.0")).startswith("░")


async def test_a_real_runaway_stopped_at_a_budget_added_from_the_tab(tmp_path: Path) -> None:
    """A real `node-agent run` and a runaway fake agent (about $1 a call) on an embedded hub:
    the budget added from the tab pauses its whole tree; the tab says stopped, with the
    governor's action; the header names it; lifted from the tab, the person resumes it."""
    node = "spark07"
    with running_hub(tmp_path) as (embedded, setup), processes() as started:
        home = tmp_path / "homes" / "api-a"
        home.mkdir(parents=True)
        config = write_node(tmp_path, node, setup, [ProfileSpec("api-a", Agent.CLAUDE_CODE, home)])
        started.append(start_node(config, tmp_path))
        app = embedded_app(embedded)
        async with app.run_test(size=(160, 45)) as pilot:
            await until(
                pilot, lambda: node in app.table("machines").rows_by_key, "the node", within=30
            )
            await pilot.press("5", "a")
            await fill(
                pilot, app,
                {"name": "spark07 day", "scope": f"machine={node}", "period": "day",
                 "basis": "paid", "limit": "5.00", "action": "pause"},
            )  # fmt: skip
            budgets = app.table("budgets")
            await until(pilot, lambda: "spark07 day" in budgets.rows_by_key, "the budget")
            agent = launch(
                Agent.CLAUDE_CODE, home, "--children", "1", "--machine", node,
                "--profile", "api-a", "--mode", "runaway", "--pace", "0.3",
                env=child_env(tmp_path),
            )  # fmt: skip
            try:
                await until(
                    pilot,
                    lambda: cell(budgets, "spark07 day", "state") == "stopped",
                    "stopped on the tab",
                    within=60,
                )
                # (a stop that came before the node announced the new agent says "no agent
                # to pause"; the governor pauses it when the node's next hello names it)
                await until(
                    pilot,
                    lambda: states(agent) == {psutil.STATUS_STOPPED},
                    "the agent's tree stopped (state T)",
                    within=30,
                )
                assert cell(budgets, "spark07 day", "last").startswith("100 %: ")
                assert "$5.00" in cell(budgets, "spark07 day", "spent")
                assert app.header_figures is not None
                assert "budget 'spark07 day' breached" in app.header_figures.line(160)

                # lifted for an hour from the tab, then R on its machine resumes it
                await select(pilot, budgets, "spark07 day")
                await pilot.press("o")
                await fill(pilot, app, {"limit": "", "until": "+1h", "why": "worth it"})
                await until(
                    pilot, lambda: cell(budgets, "spark07 day", "state") == "lifted", "lifted"
                )
                await until(
                    pilot,
                    lambda: (
                        [p.state for _, p in app.dashboard.processes_of(machine=node)] == ["paused"]
                    ),
                    "the node to report it paused (R resumes what it reports paused)",
                    within=20,
                )
                await pilot.press("1")
                await select(pilot, app.table("machines"), node)
                await pilot.press("R")
                await asking(pilot)
                await pilot.press("y")
                await until(
                    pilot,
                    lambda: psutil.STATUS_STOPPED not in states(agent),
                    "the agent running again",
                    within=20,
                )
                assert app.breaches.count == 0
            finally:
                agent.destroy()
