"""The ledger's running totals: pricing, classes, supersession, periods, run rate, restart."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal, localcontext
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from hub._sessions import RECENT_S, cache_read_ratio
from hub._totals import MONEY
from hub.ledger import FLEET, Basis, Dimension, Ledger, Period, Totals
from hub.store import Store
from pricing import PriceBook, PricedCall, PriceTableError
from shared.config import Billing
from shared.events import Agent, Role, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo

BERLIN = ZoneInfo("Europe/Berlin")
# Sonnet 4.5 list rates, USD/MTok: input 3, output 15, cache read 0.30, 5m cache write 3.75.
SONNET = "claude-sonnet-4-5"
TOKENS = Tokens(input=1000, output=2000, cache_read=10_000, cache_write_5m=400)
PRICE = Decimal("0.0375")  # 0.003 + 0.030 + 0.003 + 0.0015
ZERO = Decimal(0)


def at(year: int, month: int, day: int, hour: int, minute: int, tz: ZoneInfo = BERLIN) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=tz).timestamp()


NOW = at(2026, 11, 18, 12, 0)  # a Wednesday


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def usage(event_id: str, ts: float = NOW - 60, revision: int = 0, **kw: object) -> UsageEvent:
    fields: dict[str, object] = {
        "agent": Agent.CLAUDE_CODE,
        "model": SONNET,
        "tokens": TOKENS,
        "session_id": "s1",
        "machine": "spark01",
        "profile": "key-a",
        "account": "ops@example.com",
        "project": "/src/app",
        "entrypoint": "cli",  # interactive: a subscription's windows cover it
    }
    fields.update(kw)
    return UsageEvent(event_id=event_id, ts=ts, revision=revision, **fields)  # type: ignore[arg-type]


SUBSCRIPTIONS = {("spark01", "max-a"), ("spark02", "max-a")}


def billing(machine: str, profile: str) -> Billing:
    return Billing.SUBSCRIPTION if (machine, profile) in SUBSCRIPTIONS else Billing.API


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.default()


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def ledger(book: PriceBook, clock: Clock) -> Ledger:
    return Ledger(book, billing, BERLIN, clock)


def test_a_call_counts_in_every_scope_and_period(ledger: Ledger) -> None:
    ledger.apply(None, usage("a"))
    for period in Period:
        fleet = ledger.fleet(period)
        assert (fleet.calls, fleet.api_equivalent, fleet.metered) == (1, PRICE, PRICE)
        assert (fleet.input, fleet.output, fleet.cache_read, fleet.cache_write_5m) == (
            1000,
            2000,
            10_000,
            400,
        )
    expected = {
        Dimension.MACHINE: "spark01",
        Dimension.PROFILE: "spark01/key-a",
        Dimension.ACCOUNT: "ops@example.com",
        Dimension.AGENT: "claude-code",
        Dimension.PROJECT: "/src/app",
        Dimension.SESSION: "s1",
        Dimension.MODEL: SONNET,
    }
    for dimension, key in expected.items():
        assert list(ledger.totals(dimension, Period.TODAY)) == [key]
        assert ledger.total(dimension, key, Period.MONTH).api_equivalent == PRICE
    assert ledger.labels() == {
        Period.TODAY: "2026-11-18",
        Period.WEEK: "2026-W47",
        Period.MONTH: "2026-11",
    }


def test_sums_are_exact(ledger: Ledger) -> None:
    for i in range(1000):
        ledger.apply(None, usage(f"e{i}", session_id=f"s{i % 7}"))
    assert ledger.fleet(Period.TODAY).api_equivalent == PRICE * 1000 == Decimal("37.5")
    sessions = ledger.totals(Dimension.SESSION, Period.WEEK)
    assert sum((t.api_equivalent for t in sessions.values()), Decimal(0)) == Decimal("37.5")


def test_a_higher_revision_replaces_the_old_figures(ledger: Ledger) -> None:
    first = usage("a", tokens=Tokens(input=1000))
    ledger.apply(None, first)
    second = msgspec.structs.replace(first, revision=1, tokens=TOKENS, session_id="s2")
    ledger.apply(first, second)
    fleet = ledger.fleet(Period.TODAY)
    assert (fleet.calls, fleet.input, fleet.output, fleet.api_equivalent) == (1, 1000, 2000, PRICE)
    assert list(ledger.totals(Dimension.SESSION, Period.TODAY)) == ["s2"]  # s1 left no row


def test_a_retraction_subtracts_and_adds_nothing(ledger: Ledger) -> None:
    ledger.apply(None, usage("a"))
    ledger.apply(None, usage("b", session_id="s2"))
    retraction = usage("b", revision=1, session_id="s2", duplicate_of="a")
    ledger.apply(usage("b", session_id="s2"), retraction)
    assert ledger.fleet(Period.TODAY).calls == 1
    assert ledger.fleet(Period.TODAY).api_equivalent == PRICE
    assert list(ledger.totals(Dimension.SESSION, Period.TODAY)) == ["s1"]
    assert ledger.burn_rate_per_hour() == PRICE * 60  # its figures cover the last minute
    # a retraction of something never counted changes nothing
    ledger.apply(None, usage("c", duplicate_of="a"))
    assert ledger.fleet(Period.TODAY).calls == 1


def test_classes_come_from_the_profile_billing(ledger: Ledger) -> None:
    ledger.apply(None, usage("sub", profile="max-a"))
    ledger.apply(None, usage("api", profile="key-a"))
    ledger.apply(None, usage("unannounced", profile="who-knows"))
    ledger.apply(None, usage("none", profile=None))
    profiles = ledger.totals(Dimension.PROFILE, Period.TODAY)
    sub = profiles["spark01/max-a"]
    assert (sub.subscription_included, sub.metered, sub.api_equivalent) == (PRICE, ZERO, PRICE)
    for key in ("spark01/key-a", "spark01/who-knows", None):
        assert (profiles[key].metered, profiles[key].subscription_included) == (PRICE, ZERO)
    fleet = ledger.fleet(Period.TODAY)
    assert fleet.api_equivalent == 4 * PRICE and fleet.metered == 3 * PRICE
    # the metered basis counts money paid; API-equivalent counts every priced call
    assert fleet.amount(Basis.METERED) == 3 * PRICE
    assert ledger.burn_rate_per_hour(basis=Basis.METERED) == 3 * PRICE * 60


def test_estimated_calls_are_paid_money_on_the_metered_basis(ledger: Ledger) -> None:
    unsplit = usage("u", cache_write_unsplit=True)  # 5m and 1h writes differ: an estimate
    ledger.apply(None, unsplit)
    fleet = ledger.fleet(Period.TODAY)
    assert (fleet.estimated, fleet.metered) == (PRICE, ZERO)
    assert fleet.amount(Basis.METERED) == PRICE
    assert ledger.run_rate()[-2].amount(Basis.METERED) == PRICE


def test_unknown_model_is_counted_never_priced(ledger: Ledger) -> None:
    ledger.apply(None, usage("a", model="mystery-model-9"))
    ledger.apply(None, usage("b"))
    fleet = ledger.fleet(Period.TODAY)
    assert (fleet.calls, fleet.unknown_calls, fleet.unknown_tokens) == (2, 1, TOKENS.total)
    assert fleet.api_equivalent == fleet.metered == PRICE
    mystery = ledger.total(Dimension.MODEL, "mystery-model-9", Period.TODAY)
    assert mystery.api_equivalent == 0 and mystery.unknown_calls == 1
    cost = mystery.to_row({"model": "mystery-model-9"}).to_json()["cost"]
    assert cost["unknown"] is None  # an amount exists but is not known: never "$0"


class BrokenBook(PriceBook):
    def price(self, event: UsageEvent, billing: Billing = Billing.API) -> PricedCall:
        if event.model == "broken":
            raise PriceTableError("anthropic.toml", "models[3].rates.input", "not a number")
        return super().price(event, billing)


def test_a_price_table_problem_never_stops_the_ledger(book: PriceBook, clock: Clock) -> None:
    ledger = Ledger(BrokenBook(book.tables), billing, BERLIN, clock)
    ledger.apply(None, usage("a", model="broken"))
    ledger.apply(None, usage("b"))
    fleet = ledger.fleet(Period.TODAY)
    assert (fleet.calls, fleet.unknown_calls, fleet.api_equivalent) == (2, 1, PRICE)
    assert ledger.price_errors == 1


def test_a_call_at_an_impossible_time_is_counted_aside(ledger: Ledger) -> None:
    ledger.apply(None, usage("a", ts=float("nan")))
    ledger.apply(None, usage("b", ts=1e300))
    assert ledger.unplaceable == 2 and ledger.fleet(Period.MONTH).calls == 0


def test_midnight_rolls_today_over_without_a_restart(ledger: Ledger, clock: Clock) -> None:
    clock.now = at(2026, 11, 30, 23, 59)  # Monday 30 November, Berlin
    ledger.apply(None, usage("late", ts=at(2026, 11, 30, 23, 58)))
    assert ledger.fleet(Period.TODAY).calls == 1

    clock.now = at(2026, 12, 1, 0, 1)  # Tuesday 1 December: new day and month, same week
    assert ledger.fleet(Period.TODAY).calls == 0
    assert ledger.fleet(Period.MONTH).calls == 0
    assert ledger.fleet(Period.WEEK).calls == 1
    ledger.apply(None, usage("early", ts=at(2026, 12, 1, 0, 0)))
    assert [ledger.fleet(p).calls for p in Period] == [1, 2, 1]
    assert ledger.labels()[Period.TODAY] == "2026-12-01"

    assert ledger.kept_days() == ["2026-11-30", "2026-12-01"]
    clock.now = at(2026, 12, 7, 9, 0)  # next Monday: November's last day is covered by nothing
    assert [ledger.fleet(p).calls for p in Period] == [0, 0, 1]
    assert ledger.kept_days() == ["2026-12-01"]
    # ... so its figures are gone: withdrawing its call must not drive anything negative
    ledger.apply(
        usage("late", ts=at(2026, 11, 30, 23, 58)), usage("late", revision=1, duplicate_of="x")
    )
    assert [ledger.fleet(p).calls for p in Period] == [0, 0, 1]
    # and a call from before the covered days is not counted anywhere
    ledger.apply(None, usage("old", ts=at(2026, 11, 29, 12, 0)))
    assert ledger.fleet(Period.MONTH).calls == 1


def test_days_follow_the_ledger_time_zone(book: PriceBook) -> None:
    ts = at(2026, 11, 18, 23, 30, tz=ZoneInfo("UTC"))  # already the 19th in Berlin
    utc = Ledger(book, billing, UTC, Clock(ts + 60))
    berlin = Ledger(book, billing, BERLIN, Clock(ts + 60))
    for ledger in (utc, berlin):
        ledger.apply(None, usage("a", ts=ts))
    assert utc.labels()[Period.TODAY] == "2026-11-18"
    assert berlin.labels()[Period.TODAY] == "2026-11-19"
    assert utc.fleet(Period.TODAY).calls == berlin.fleet(Period.TODAY).calls == 1


def test_run_rate_and_burn_rate(ledger: Ledger, clock: Clock) -> None:
    ledger.apply(None, usage("now", ts=NOW - 1))
    ledger.apply(None, usage("recent", ts=NOW - 14 * 60, profile="max-a"))
    ledger.apply(None, usage("older", ts=NOW - 20 * 60, machine="spark02"))
    points = ledger.run_rate()
    assert NOW % 60 == 0 and len(points) == 360 and points[-1].start == NOW
    assert [p.api_equivalent for p in points if p.api_equivalent] == [PRICE] * 3
    assert points[-2].tokens == TOKENS.total  # NOW - 1 falls in the minute before NOW
    assert ledger.burn_rate_per_hour() == 2 * PRICE * 4  # last 15 minutes, × 4 per hour
    # the figures begin 20 minutes ago: a longer window is taken over those 20 minutes
    assert ledger.burn_rate_per_hour(minutes=30) == 3 * PRICE * 3
    assert ledger.burn_rate_per_hour(basis=Basis.METERED) == PRICE * 4  # max-a: subscription
    assert ledger.burn_rate_per_hour(("machine", "spark02"), minutes=60) == PRICE * 3
    assert ledger.burn_rate_per_hour(("profile", "spark01/max-a")) == PRICE * 4
    assert set(ledger.scopes()) == {
        FLEET,
        ("machine", "spark01"),
        ("machine", "spark02"),
        ("profile", "spark01/key-a"),
        ("profile", "spark01/max-a"),
        ("profile", "spark02/key-a"),
    }
    with pytest.raises(ValueError):
        ledger.burn_rate_per_hour(minutes=0)

    clock.now = NOW + 6 * 3600  # the window moved past every call
    assert ledger.burn_rate_per_hour() == 0
    assert all(p.api_equivalent == 0 for p in ledger.run_rate()) and ledger.scopes() == []
    assert ledger.fleet(Period.TODAY).calls == 3  # the day's totals are not a window


def hello(node: str) -> NodeHello:
    return NodeHello(
        node,
        "0.1.0",
        NOW - 86_400,
        "linux",
        8,
        (ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION),),
    )


def scenario() -> Iterator[tuple[str, list[UsageEvent]]]:
    """Batches from two nodes: new calls, revisions, a retraction, an unknown model, a re-send,
    and calls from earlier months and hours."""
    yield "spark01", [usage(f"a{i}", ts=NOW - i * 600, profile="max-a") for i in range(30)]
    yield "spark02", [usage(f"b{i}", ts=NOW - i * 7200, session_id="s9") for i in range(40)]
    yield "spark01", [usage("a3", revision=2, ts=NOW - 1800, tokens=Tokens(input=5))]
    yield "spark01", [usage("a5", revision=1, ts=NOW - 3000, duplicate_of="a4")]
    yield "spark02", [usage("m", model="mystery-model-9"), usage("b1", revision=1)]
    yield "spark02", [usage("old", ts=NOW - 90 * 86_400)]


def snapshot(ledger: Ledger) -> object:
    by_dimension = {(d, p): ledger.totals(d, p) for d in Dimension for p in Period}
    fleet = {p: ledger.fleet(p) for p in Period}
    rates = {s: ledger.run_rate(s) for s in ledger.scopes()}
    return by_dimension, fleet, rates


def test_restart_rebuilds_identical_totals(tmp_path: Path, book: PriceBook, clock: Clock) -> None:
    store = Store.in_dir(tmp_path)
    live = Ledger(book, lambda m, p: store.billing().get((m, p), Billing.API), BERLIN, clock)
    for seq, (node, events) in enumerate(scenario(), start=1):
        result = store.ingest(node, "events", seq, seq, events, hello(node), NOW)
        for old, new in result.changes:
            live.apply(old, new)
    store.close()

    reopened = Store.in_dir(tmp_path)
    table = reopened.billing()
    restarted = Ledger(book, lambda m, p: table.get((m, p), Billing.API), BERLIN, clock)
    restarted.rebuild(reopened.usage_events(since=restarted.horizon(), counted_only=True))
    assert snapshot(restarted) == snapshot(live)
    fleet = restarted.fleet(Period.MONTH)
    assert fleet.calls > 0 and fleet.unknown_calls == 1 and fleet.subscription_included > 0
    # rebuilding from everything gives the same: the horizon loses nothing that counts
    everything = Ledger(book, lambda m, p: table.get((m, p), Billing.API), BERLIN, clock)
    everything.rebuild(reopened.usage_events())
    assert snapshot(everything) == snapshot(live)
    # and so does loading the store's roll-ups, as a hub does at start-up
    loaded = Ledger(book, lambda m, p: table.get((m, p), Billing.API), BERLIN, clock)
    horizon = loaded.horizon()
    cells = reopened.rollup(BERLIN, since=horizon)
    loaded.load(cells, reopened.rollup_minutes(horizon), [])
    assert snapshot(loaded) == snapshot(live)
    reopened.close()


def test_a_batch_applied_at_once_equals_its_calls_one_by_one(book: PriceBook) -> None:
    changes: list[tuple[UsageEvent | None, UsageEvent]] = []
    for node, events in scenario():
        for event in events:
            event = msgspec.structs.replace(event, machine=node)
            old = next(
                (new for _, new in reversed(changes) if new.event_id == event.event_id), None
            )
            changes.append((old, event))
    changes.append((None, usage("sub", role=Role.SUBAGENT, parent_session_id="s1")))
    one_by_one = Ledger(book, billing, BERLIN, Clock(NOW))
    for old, new in changes:
        one_by_one.apply(old, new)
    at_once = Ledger(book, billing, BERLIN, Clock(NOW))
    at_once.apply_all(changes)
    assert snapshot(at_once) == snapshot(one_by_one)
    rows = [{r.key: r for r in led.sessions.active_since(0.0)} for led in (at_once, one_by_one)]
    assert rows[0] == rows[1]
    assert at_once.fleet(Period.MONTH).calls == 71  # 30 + 40 + "m" + "sub", less a retraction


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Havana", "Australia/Lord_Howe"])
def test_calls_fall_on_their_local_day_across_dst_changes(book: PriceBook, zone: str) -> None:
    # Havana moves its clocks at midnight, Lord Howe by half an hour: the ledger keeps the last
    # day's bounds to place a batch's calls, and must agree with the zone's calendar anyway.
    tz = ZoneInfo(zone)
    ledger = Ledger(book, billing, tz, Clock(NOW))
    start = datetime(2026, 3, 1, tzinfo=UTC).timestamp()
    for ts in [start + k * 1799.5 for k in range(18_000)]:  # a year, every half hour or so
        assert ledger._day_of(ts) == datetime.fromtimestamp(ts, tz).date()  # noqa: SLF001


def test_totals_handed_out_are_copies(ledger: Ledger) -> None:
    ledger.apply(None, usage("a"))
    got = ledger.totals(Dimension.MACHINE, Period.TODAY)["spark01"]
    got.add(Totals(calls=5))
    ledger.fleet(Period.TODAY).add(Totals(calls=5))
    assert ledger.total(Dimension.MACHINE, "spark01", Period.TODAY).calls == 1
    assert ledger.fleet(Period.TODAY).calls == 1


# ---- the session book the ledger keeps for the sessions view ---------------------------------


def test_a_session_row_splits_main_from_subagent_spend(ledger: Ledger) -> None:
    ledger.apply(None, usage("m1", git_branch="feat", model=SONNET))
    ledger.apply(
        None,
        usage("sub1", session_id="agent-7", role=Role.SUBAGENT, parent_session_id="s1"),
    )
    ledger.apply(None, usage("sub2", role=Role.AUXILIARY, parent_session_id="s1"))
    row = ledger.sessions.get("s1")
    assert row is not None
    assert ledger.sessions.get("agent-7") is None  # filed under its parent
    assert (row.main.calls, row.subagents.calls) == (1, 2)
    assert row.main.api_equivalent == PRICE
    assert row.subagents.api_equivalent == 2 * PRICE
    assert row.total.api_equivalent == 3 * PRICE
    assert (row.machine, row.profile, row.project, row.git_branch) == (
        "spark01",
        "key-a",
        "/src/app",
        "feat",
    )


def test_a_session_row_names_the_main_threads_model_not_a_later_subagents(
    ledger: Ledger,
) -> None:
    """The demo's Opus sessions showed Haiku every third call (their subagent's model)."""
    haiku = "claude-haiku-4-5"
    ledger.apply(None, usage("sub0", ts=NOW - 90, model=haiku, role=Role.SUBAGENT))
    row = ledger.sessions.get("s1")
    assert row is not None and row.model == haiku  # until the main thread is seen
    ledger.apply(None, usage("m1", ts=NOW - 60, model="claude-opus-4-6"))
    ledger.apply(None, usage("sub1", ts=NOW - 30, model=haiku, role=Role.SUBAGENT))
    assert row.model == "claude-opus-4-6"
    ledger.apply(None, usage("m2", ts=NOW - 10, model=SONNET))
    assert row.model == SONNET


def test_a_superseded_call_leaves_the_session_row_as_if_only_the_new_one_came(
    ledger: Ledger,
) -> None:
    old = usage("m1")
    ledger.apply(None, old)
    new = usage("m1", revision=1, tokens=msgspec.structs.replace(TOKENS, output=2 * TOKENS.output))
    ledger.apply(old, new)
    fresh = Ledger(ledger._book, billing, BERLIN, lambda: NOW)  # noqa: SLF001
    fresh.apply(None, new)
    assert ledger.sessions.get("s1") == fresh.sessions.get("s1")


def test_burn_is_taken_over_the_time_the_figures_cover(ledger: Ledger, clock: Clock) -> None:
    # A fleet that started two minutes ago burns its two calls in two minutes, not in 15.
    ledger.apply(None, usage("first", ts=NOW - 120))
    ledger.apply(None, usage("second", ts=NOW - 30))
    assert ledger.covered(15 * 60) == 120
    assert ledger.burn_rate_per_hour(minutes=5) == 2 * PRICE * 30
    assert ledger.burn_rate_per_hour(minutes=60) == 2 * PRICE * 30
    # Stopped: after 5 quiet minutes the short window reads zero, the hour still counts both.
    clock.now = NOW + 5 * 60
    assert ledger.burn_rate_per_hour(minutes=5) == 0
    with localcontext(MONEY):
        assert ledger.burn_rate_per_hour(minutes=60) == 2 * PRICE * 3600 / (7 * 60)
    # One call alone is taken over a minute at least, not over its own instant.
    fresh = Ledger(ledger._book, billing, BERLIN, lambda: NOW)  # noqa: SLF001
    fresh.apply(None, usage("only", ts=NOW - 1))
    assert fresh.burn_rate_per_hour(minutes=5) == PRICE * 60


def test_tokens_per_minute_are_the_last_five_minutes_of_wall_time(
    ledger: Ledger, clock: Clock
) -> None:
    ledger.apply(None, usage("old", ts=NOW - 3600))  # the session has lived an hour
    ledger.apply(None, usage("m1", ts=NOW - 30))
    row = ledger.sessions.get("s1")
    assert row is not None and RECENT_S == 300
    rate = TOKENS.total * 60 / RECENT_S  # one call's tokens in the last 5 minutes
    assert row.tokens_per_minute(NOW) == rate
    # no call since: the figure holds while the call is in the window (no jump at a minute
    # boundary), and is zero once it is more than 5 minutes old
    for later in (60, 180, 269):
        clock.now = NOW + later
        ledger.run_rate()  # the clock moves: old seconds are pruned
        assert row.tokens_per_minute(clock.now) == rate, later
    clock.now = NOW + 271
    ledger.run_rate()
    assert row.tokens_per_minute(clock.now) == 0


def test_tokens_per_minute_of_a_young_session_count_the_time_it_has_lived(
    ledger: Ledger, clock: Clock
) -> None:
    ledger.apply(None, usage("m1", ts=NOW - 120))
    ledger.apply(None, usage("m2", ts=NOW - 10))
    row = ledger.sessions.get("s1")
    assert row is not None
    assert row.tokens_per_minute(NOW) == 2 * TOKENS.total / 2  # two calls in its 2 minutes
    ledger.apply(None, usage("m3", ts=NOW - 5, session_id="s2"))
    young = ledger.sessions.get("s2")
    assert young is not None
    assert young.tokens_per_minute(NOW) == TOKENS.total  # a first call: over a minute at least


def test_cache_read_ratio_tells_thrash() -> None:
    thrash = Totals(input=100, cache_write_5m=90_000, cache_read=0)
    healthy = Totals(input=100, cache_write_5m=1_000, cache_read=98_900)
    assert cache_read_ratio(thrash) == 0
    assert cache_read_ratio(healthy) == pytest.approx(0.989)
    assert cache_read_ratio(Totals()) is None
