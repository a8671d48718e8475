"""The five-class figures of Claude subscription calls past the Agent SDK credit: every call is
classed by the one rule (`pricing.sdk_credit`) whatever order, however often and at whatever
revision it arrived, across a restart and a re-pricing, and the store's roll-ups (hence
`fleet-hub report`), the hub's ledger (the dashboard, the API, metrics) and `node-agent scan`
agree to the cent."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.config import load_hub_config
from hub.credit_settings import SubscriptionSettings
from hub.ledger import Dimension, Ledger, Period, Totals, profile_key
from hub.remote import RemoteFleet
from hub.report import build_hub_report
from hub.service import FleetService
from hub.store import Store
from hub.tui.app import FleetApp
from node_agent.report import Query, build_report
from node_agent.scan_credit import CreditOptions
from pricing import Billing, PriceBook
from pricing.rollup import Attribution, Rollup
from pricing.sdk_credit import PLAN_CREDIT, ZERO, CreditTerms, draw_calls
from shared.config import load_config
from shared.events import Agent, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo
from tests.api_harness import fleet_hub
from tests.fleet_harness import (
    ROOT,
    ProfileSpec,
    child_env,
    hub_report,
    make_hub,
    processes,
    start_hub,
    start_node,
    stop,
    wait_for,
    write_node,
)
from tests.pilot_waits import until
from tests.test_hub_rollup import DoubledPrices
from tests.test_prices_install import table
from tests.test_source_claude import OTHER_SESSION, SESSION, SLUG, assistant, write
from tests.test_tui import cell, money_cells

NOW = datetime(2026, 12, 20, 12, tzinfo=UTC).timestamp()
DAY = 86400.0
MODEL = "claude-sonnet-4-5-20250929"
PRO = ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, None, "pro")  # $20 credit
API = ProfileInfo("api", Agent.CLAUDE_CODE, Billing.API, None, None)
HELLO = NodeHello("spark01", "0.1.0", NOW - DAY, "linux", 8, (PRO, API))
EXTRA = (SubscriptionSettings("spark01/max-a", None, extra_usage=True),)
BY = ("day", "profile", "session", "model")


def call(n: int, rng: random.Random, revision: int = 0, **kw: Any) -> UsageEvent:
    """Sonnet 4.5 output at $15/MTok: $0.75 to $6 a call."""
    fields: dict[str, Any] = {
        "agent": Agent.CLAUDE_CODE,
        "model": MODEL,
        "tokens": Tokens(output=rng.randrange(50_000, 400_000, 10_000) + revision * 10_000),
        "session_id": f"s{n % 3}",
        "machine": "spark01",
        "profile": "max-a" if n % 5 else "api",
        # December and the end of November: two months, each with its own credit
        "ts": NOW - rng.choice((1, 2, 3, 25)) * DAY + n * 61.0,
        "entrypoint": rng.choice(("sdk-cli", "sdk-cli", "sdk-py", "cli", None)),
    }
    fields.update(kw)
    return UsageEvent(event_id=f"claude:msg_{n}:req_{n}", revision=revision, **fields)


def expected_report(
    events: Iterable[UsageEvent], book: PriceBook, extra_usage: bool
) -> dict[str, Any]:
    """The report recounted call by call: each priced at `book`, classed by its profile's
    billing, then moved by the credit (`draw_calls`) where the profile has one."""
    kept = [e for e in events if e.counts]
    rollup = Rollup(BY, UTC)
    terms = CreditTerms(PLAN_CREDIT["pro"], extra_usage)
    mine = [e for e in kept if e.profile == "max-a"]
    prices = {e.event_id: book.price(e, Billing.API) for e in kept}
    drawn = dict(
        draw_calls(
            ((e.ts, e.event_id, e.entrypoint, prices[e.event_id].api_equivalent) for e in mine),
            terms,
        )
    )
    for event in kept:
        billing = Billing.SUBSCRIPTION if event.profile == "max-a" else Billing.API
        priced = book.price(event, billing)
        key = rollup.key(event, _NO_ATTRIBUTION)
        rollup.add_calls(key, 1, event.tokens, priced)
        if (done := drawn.get(event.event_id)) is not None and done.moved:
            rollup.rows[key].move(done.moved.overage, done.moved.untold, estimated=priced.estimated)
    return {"rows": [r.to_json() for r in rollup.sorted_rows()], "total": rollup.total.to_json()}


_NO_ATTRIBUTION = Attribution()


def report_of(store: Store) -> dict[str, Any]:
    got = build_hub_report(store, by=BY, tz=UTC)
    return {"rows": got["rows"], "total": got["total"]}


def ledger_figures(ledger: Ledger) -> dict[str | None, Totals]:
    return ledger.totals(Dimension.SESSION, Period.MONTH)


def fresh_ledger(store: Store, book: PriceBook) -> Ledger:
    billing = store.billing()
    ledger = Ledger(book, lambda m, p: billing.get((m, p)) or Billing.API, UTC, lambda: NOW)
    horizon = ledger.horizon()
    ledger.load(
        store.rollup(UTC, since=horizon),
        store.rollup_minutes(since=horizon),
        [],
        minute_moves=store.credit_minute_moves(since=horizon),
    )
    return ledger


def deliver(store: Store, ledger: Ledger, batches: Sequence[list[UsageEvent]], seq: int = 1) -> int:
    for batch in batches:
        result = store.ingest("spark01", "events", seq, seq, batch, HELLO, NOW)
        ledger.apply_all(result.changes, result.prices, result.redraws)
        assert not result.credit_redrawn
        seq += 1
    return seq


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_order_re_delivery_revisions_and_retractions_class_alike(
    tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    calls = [call(n, rng) for n in range(60)]
    # later revisions of some calls (a streamed call's larger snapshot) and a retraction
    revised = [call(n, random.Random(seed * 100 + n), revision=1, ts=calls[n].ts) for n in (4, 17)]
    revised = [
        UsageEvent(**{**_fields(r), "entrypoint": calls[n].entrypoint})
        for r, n in zip(revised, (4, 17), strict=True)
    ]
    retracted = UsageEvent(**{**_fields(calls[9]), "revision": 2, "duplicate_of": "claude:x"})
    final = {e.event_id: e for e in calls}
    for later in [*revised, retracted]:
        final[later.event_id] = later
    book = PriceBook.default()

    shuffled = calls[:]
    rng.shuffle(shuffled)  # out of order
    cuts = sorted(rng.sample(range(1, len(shuffled)), 8))
    batches = [shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    batches += [rng.sample(calls, 12)]  # re-delivered
    batches.insert(rng.randrange(len(batches)), [*revised, retracted])

    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 0, -1, [], HELLO, NOW)  # the profiles first
        assert store.use_subscriptions(EXTRA)
        live = fresh_ledger(store, book)
        deliver(store, live, batches)
        want = expected_report(final.values(), book, extra_usage=True)
        got = report_of(store)
        assert got == want
        total = want["total"]["cost"]
        assert Decimal(total["metered"]) > 0  # the overage is metered…
        assert Decimal(total["estimated"]) > 0  # …and untold calls are estimated
        # the live ledger (what the dashboard, the API and metrics read) followed the store
        assert ledger_figures(live) == ledger_figures(fresh_ledger(store, book))
        assert live.fleet(Period.MONTH) == fresh_ledger(store, book).fleet(Period.MONTH)
        assert live.run_rate() == fresh_ledger(store, book).run_rate()
        month = live.total(Dimension.PROFILE, profile_key("spark01", "max-a"), Period.MONTH)
        assert month.metered == sum(
            (
                Decimal(r["cost"]["metered"])
                for r in want["rows"]
                if r["profile"] == "max-a" and r["day"] >= "2026-12-01"
            ),
            ZERO,
        )


def _fields(event: UsageEvent) -> dict[str, Any]:
    return {f: getattr(event, f) for f in event.__struct_fields__}


def test_a_restart_and_a_repricing_keep_the_classes_exact(tmp_path: Path) -> None:
    rng = random.Random(7)
    calls = [call(n, rng) for n in range(40)]
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 0, -1, [], HELLO, NOW)
        store.use_subscriptions(EXTRA)
        deliver(store, fresh_ledger(store, PriceBook.default()), [calls[:25], calls[25:]])
        before = report_of(store)
    assert before == expected_report(calls, PriceBook.default(), extra_usage=True)

    doubled = DoubledPrices(PriceBook.default().tables)
    with Store(tmp_path / "hub.db", book=doubled) as reopened:  # a restart, new tables
        assert report_of(reopened) == before  # the classes were kept, not recomputed
        assert not reopened.use_subscriptions(EXTRA)  # same terms: nothing to draw again
        while not reopened.reprice(step=7)[1]:
            pass
        assert report_of(reopened) == expected_report(calls, doubled, extra_usage=True)
        # doubled prices spend the credit sooner: more is overage
        assert Decimal(report_of(reopened)["total"]["cost"]["metered"]) > 2 * Decimal(
            before["total"]["cost"]["metered"]
        )
        # the terms change (extra usage off): past the credit is billed nowhere, included
        assert reopened.use_subscriptions(())
        off = expected_report(calls, doubled, extra_usage=False)
        assert report_of(reopened) == off
        assert all(r["cost"]["metered"] == "0.00" for r in off["rows"] if r["profile"] == "max-a")


def test_a_store_from_before_the_credit_draws_its_kept_calls_when_the_hub_starts(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    calls = [call(n, rng) for n in range(30)]
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 0, -1, [], HELLO, NOW)
        store.use_subscriptions(EXTRA)
        deliver(store, fresh_ledger(store, PriceBook.default()), [calls])
        want = report_of(store)
    assert want == expected_report(calls, PriceBook.default(), extra_usage=True)
    db = sqlite3.connect(tmp_path / "hub.db")  # as schema 4 left it: no credit kept
    for name in ("credit_calls", "credit_terms", "rollup_credit"):
        db.execute(f"DROP TABLE {name}")
    db.execute("PRAGMA user_version = 4")
    db.commit()
    db.close()
    with Store.in_dir(tmp_path) as store:
        assert report_of(store) != want  # upgraded: nothing drawn yet
        assert store.use_subscriptions(EXTRA)  # what the hub does as it starts
        assert report_of(store) == want


def test_a_served_hub_reloads_the_figures_when_the_terms_change(tmp_path: Path) -> None:
    rng = random.Random(11)
    calls = [call(n, rng, entrypoint="sdk-cli", profile="max-a") for n in range(30)]
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 1, 1, calls, HELLO, NOW)
    service = FleetService(Store.in_dir(tmp_path), PriceBook.default(), clock=lambda: NOW)
    assert service.wait_loaded(30)
    key = profile_key("spark01", "max-a")
    assert service.ledger.total(Dimension.PROFILE, key, Period.MONTH).metered == 0  # off
    service.use_subscriptions(EXTRA)
    assert service.wait_settled(30)
    month = service.ledger.total(Dimension.PROFILE, key, Period.MONTH)
    december = [c for c in calls if c.ts >= datetime(2026, 12, 1, tzinfo=UTC).timestamp()]
    spent = sum((PriceBook.default().price(c).api_equivalent or ZERO for c in december), ZERO)
    assert month.metered == spent - PLAN_CREDIT["pro"]
    assert month.subscription_included == PLAN_CREDIT["pro"]
    assert service.credits()[key]["overage_usd"] == str((spent - 20).normalize())


# -- end to end: a real serve, a real node-agent, the scan, the API, metrics and the dashboard --


def _transcript(home: Path, session: str, calls: list[tuple[str, float, str | None]]) -> None:
    """Claude Code lines, one call of $15 (Sonnet 4.5 output, 1M tokens) each: (id, time,
    entrypoint)."""
    lines = []
    for name, ts, entrypoint in calls:
        extra = {} if entrypoint is None else {"entrypoint": entrypoint}
        stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
        lines.append(
            assistant(
                f"msg_{name}",
                f"req_{name}",
                output=1_000_000,
                input_tokens=0,
                cache_read=0,
                w1=0,
                session=session,
                ts=stamp.replace("+00:00", "Z"),
                **extra,
            )
        )
    write(home / "projects" / SLUG / f"{session}.jsonl", lines)


Figures = tuple[Decimal, Decimal, Decimal, Decimal]  # api-equivalent, metered, included, est.


def _cost(cost: dict[str, Any]) -> Figures:
    return tuple(  # type: ignore[return-value]
        Decimal(cost[k] or "0")
        for k in ("api_equivalent", "metered", "subscription_included", "estimated")
    )


class _Surfaces:
    """Each surface's figures for the profile: the report, the API (profiles and the header's
    summary), metrics and `node-agent scan`."""

    def __init__(self, tmp: Path, setup: Any, url: str, token: str, node_config: Path) -> None:
        self.tmp, self.setup, self.url, self.node_config = tmp, setup, url, node_config
        self.headers = {"Authorization": f"Bearer {token}"}
        self.last: list[Figures] = []

    def report(self) -> Figures:
        rows = hub_report(self.setup, self.tmp, "profile")["rows"]
        return next((_cost(r["cost"]) for r in rows if r["profile"] == "max-a"), _NONE)

    def api(self) -> Figures:
        rows = httpx.get(
            f"{self.url}/api/v1/profiles?period=month", headers=self.headers, timeout=30
        ).json()
        return next((_cost(r["spend"]["cost"]) for r in rows if r["key"] == "spark01/max-a"), _NONE)

    def summary(self) -> Figures:
        got = httpx.get(f"{self.url}/api/v1/summary", headers=self.headers, timeout=30).json()
        return _cost(got)

    def metrics(self) -> Figures:
        text = httpx.get(f"{self.url}/metrics", headers=self.headers, timeout=30).text
        found = {
            s.labels["class"]: Decimal(str(s.value)).quantize(Decimal("0.01"))
            for family in text_string_to_metric_families(text)
            if family.name == "fleetmeter_spend_today_usd"
            for s in family.samples
            if (s.labels["dimension"], s.labels["key"]) == ("profile", "spark01/max-a")
        }
        return tuple(  # type: ignore[return-value]
            found.get(k, ZERO)
            for k in ("api_equivalent", "metered", "subscription_included", "estimated")
        )

    def scan(self) -> Figures:
        done = subprocess.run(
            [sys.executable, "-m", "node_agent.cli", "scan", "--json", "--by", "profile"]
            + ["--config", str(self.node_config), "--extra-usage", "on"],
            capture_output=True,
            text=True,
            env=child_env(self.tmp),
            cwd=ROOT,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "not known" in done.stderr  # the untold call is named, not guessed
        [row] = [r for r in orjson.loads(done.stdout)["rows"] if r["profile"] == "max-a"]
        return _cost(row["cost"])

    def all_agree(self, want: Figures) -> bool:
        try:
            self.last = [f() for f in (self.report, self.api, self.summary, self.metrics)]
        except httpx.HTTPError:  # a restarted hub that does not answer yet
            return False
        return all(got == want for got in self.last)

    def wait(self, want: Figures, what: str) -> None:
        """Until every surface shows `want` (the last figures in the error, when not)."""
        try:
            wait_for(lambda: self.all_agree(want), 60, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: report, API, summary, metrics: {self.last}") from None


async def _dashboard_shows(app: FleetApp) -> None:
    """The Profiles tab of a dashboard attached to the hub: today's classes and the overage."""
    async with app.run_test(size=(240, 50)) as pilot:
        await pilot.press("2")
        profiles = app.table("profiles")
        key = profile_key("spark01", "max-a")
        await until(
            pilot,
            lambda: _shown(profiles, key) == ("$25.00", "$35.00", "$15.00"),
            "the profile's classes",
            30,
        )
        # the credit's own column (read from the hub at its next full round)
        await until(pilot, lambda: cell(profiles, key, "overage") == "$25.00", "the overage", 30)


_NONE: Figures = (ZERO, ZERO, ZERO, ZERO)
WANT_KEYS = ("metered", "estimated", "subscription_included")


def _shown(profiles: Any, key: str) -> tuple[str, ...] | None:
    try:
        return money_cells(profiles, key)
    except KeyError:  # not drawn yet
        return None


def _dollars(*amounts: int) -> Figures:
    return tuple(Decimal(a) for a in amounts)  # type: ignore[return-value]


async def test_a_served_hub_the_scan_and_the_dashboard_class_the_overage_alike(
    tmp_path: Path,
) -> None:
    now = time.time()
    today = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    base = max(now - 600, today.timestamp() + 1)  # today (the dashboard and metrics show it)
    setup = make_hub(tmp_path)
    setup.config.write_text(
        setup.config.read_text()
        + '\n[[subscriptions]]\nprofile = "spark01/max-a"\nextra_usage = true\n'
    )
    done = fleet_hub(tmp_path, "token", "create", "t-v", "--role", "viewer", "--config",
                     str(setup.config))  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.split()[-1]
    url = f"http://{load_hub_config(setup.config).api_listen}"
    home = tmp_path / "claude"
    # two SDK calls ($30 against a $20 credit: $10 overage), one interactive, one untold
    _transcript(home, SESSION, [("c1", base + 10, "sdk-cli"), ("c2", base + 20, "sdk-cli"),
                                ("c3", base + 30, "cli"), ("c4", base + 40, None)])  # fmt: skip
    node_config = write_node(
        tmp_path,
        "spark01",
        setup,
        [ProfileSpec("max-a", Agent.CLAUDE_CODE, home, Billing.SUBSCRIPTION)],
    )
    node_config.write_text(node_config.read_text() + 'plan = "pro"\n')  # the $20 credit
    with processes() as started:
        started.append(start_hub(setup, tmp_path))
        started.append(start_node(node_config, tmp_path))
        seen = _Surfaces(tmp_path, setup, url, token, node_config)
        first = _dollars(60, 10, 35, 15)
        seen.wait(first, "every surface to show the overage")
        assert seen.scan() == first

        # a call from before them arrives late (another session's file): the credit it drew
        # moves the boundary, $15 more is overage
        _transcript(home, OTHER_SESSION, [("c0", base + 5, "sdk-py")])
        late = _dollars(75, 25, 35, 15)
        seen.wait(late, "the late call's redraw")
        assert seen.scan() == late
        with RemoteFleet(url, token) as remote:
            await _dashboard_shows(FleetApp(remote))

        # a restart reads the same from the store
        stop(started[0])
        started[0] = start_hub(setup, tmp_path)
        seen.wait(late, "the figures after a restart")

        # the tables corrected ($18 a call): re-priced, the credit is spent sooner
        month_start = today.replace(day=1).date().isoformat()
        rates = {"input": "3", "output": "18", "reasoning": "18", "cache_read": "0.3",
                 "cache_write_5m": "3.75", "cache_write_1h": "6"}  # fmt: skip
        fix = tmp_path / "sonnet-fix.toml"
        fix.write_text(
            table(rates, model="claude-sonnet-4-5", start=month_start, until=None).replace(
                "Claude Opus 4.5", "Claude Sonnet 4.5"
            )
        )
        done = fleet_hub(tmp_path, "prices", "install", str(fix), "--config", str(setup.config))
        assert done.returncode == 0, done.stderr
        # $54 of SDK calls against $20: $34 overage; the interactive call and the untold one
        repriced = _dollars(90, 34, 38, 18)
        seen.wait(repriced, "the re-priced classes")
        assert seen.scan() == repriced


# -- node-agent scan: the same rule over a month of transcripts -----------------------------


@pytest.mark.parametrize("extra_usage", [True, False, None])
def test_the_scan_draws_the_credit_as_the_rule_does(
    tmp_path: Path, extra_usage: bool | None
) -> None:
    """Many calls an hour, the credit running out inside one, `--since` cutting the month (the
    calls before it draw the credit all the same), untold calls, and extra usage on, off or
    not said (then the part past the credit is estimated)."""
    rng = random.Random(3)
    home = tmp_path / "claude"
    start = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    events = []
    for s in range(3):
        session = f"{s:08d}-0000-4000-8000-000000000000"
        lines = []
        for i in range(150):
            ts = start + rng.randrange(0, 3 * 86400)
            entrypoint = rng.choice(("sdk-cli", "sdk-cli", "cli", None))
            output = rng.randrange(1_000, 400_000)
            extra = {} if entrypoint is None else {"entrypoint": entrypoint}
            stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
            lines.append(
                assistant(f"msg_{s}_{i}", f"req_{s}_{i}", output=output, input_tokens=0,
                          cache_read=0, w1=0, session=session,
                          ts=stamp.replace("+00:00", "Z"), **extra)
            )  # fmt: skip
            events.append((ts, f"{s}_{i}", session, entrypoint, output))
        write(home / "projects" / SLUG / f"{session}.jsonl", lines)
    config_path = tmp_path / "node.toml"
    config_path.write_text(
        f'node = "spark01"\n\n[[profiles]]\nname = "max-a"\nagent = "claude-code"\n'
        f'home = "{home}"\nbilling = "subscription"\nplan = "pro"\n'
    )
    since = date(2026, 12, 2)
    report = build_report(
        [],
        load_config(config_path),
        Query(("day", "session"), UTC, since=since),
        jobs=1,
        credit=CreditOptions(None, extra_usage),
    )

    # the rule by hand: every call priced alone, drawn in order over the whole month
    book = PriceBook.default()
    price = {
        name: book.price(
            UsageEvent(event_id=name, ts=ts, agent=Agent.CLAUDE_CODE, model=MODEL,
                       tokens=Tokens(output=output), session_id=session)
        ).api_equivalent
        for ts, name, session, _, output in events
    }  # fmt: skip
    terms = CreditTerms(PLAN_CREDIT["pro"], bool(extra_usage))
    drawn = dict(draw_calls(((ts, n, e, price[n]) for ts, n, _, e, _ in events), terms))
    want: dict[tuple[str, str], dict[str, Decimal]] = {}
    for ts, name, session, entrypoint, _ in events:
        day = datetime.fromtimestamp(ts, UTC).date()
        if day < since:
            continue
        cost = want.setdefault((day.isoformat(), session), dict.fromkeys(WANT_KEYS, ZERO))
        amount, done = price[name], drawn[name]
        assert amount is not None
        if entrypoint is None:
            cost["estimated"] += amount
        elif done.past and extra_usage is None:
            cost["estimated"] += done.past
            cost["subscription_included"] += amount - done.past
        else:
            cost["metered"] += done.moved.overage
            cost["subscription_included"] += amount - done.moved.overage
    got = {
        (row.keys["day"], row.keys["session"]): {
            k: Decimal(v) for k, v in row.to_json()["cost"].items() if k in WANT_KEYS
        }
        for row in report.rollup.rows.values()
    }
    assert got == want
    total = sum((c["metered"] for c in want.values()), ZERO)
    assert (total > 0) is bool(extra_usage)  # the credit did run out in the window
