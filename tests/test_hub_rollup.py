"""The store's roll-ups on real SQLite files: they always equal a recount of the events stored
(after random batches, revisions, retractions, restarts, price-table changes and prunes), the
ledger loads from them as it would from the events, reports on pruned days come from them, and
a schema v2 store with data migrates into them."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub._pricing import billing_of, safe_price
from hub._rollup import Cell
from hub._schema import CACHE_KIB, SCHEMA_VERSION
from hub.ledger import Dimension, Ledger, Period
from hub.report import build_hub_report
from hub.service import FleetService
from hub.store import DB_FILE, Store
from pricing import Billing, PriceBook, PricedCall
from pricing.rollup import GROUP_KEYS, Attribution, Rollup
from shared.codec import pack
from shared.events import Agent, LimitEvent, LimitKind, Role, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo

HERE = Path(__file__).resolve().parent
T0 = 1_795_000_000.0  # 2026-11-18 04:26 UTC
DAY = 86400.0
EVERY_KEY = tuple(GROUP_KEYS)
BERLIN = ZoneInfo("Europe/Berlin")
KOLKATA = ZoneInfo("Asia/Kolkata")  # +05:30: days cut at half hours


class DoubledPrices(PriceBook):
    """The shipped tables at twice the price: a price-table change between two runs."""

    def price(self, event: UsageEvent, billing: Billing = Billing.API) -> PricedCall:
        priced = super().price(event, billing)
        if priced.api_equivalent is None:
            return priced
        return msgspec.structs.replace(priced, api_equivalent=priced.api_equivalent * 2)


BOOKS = {"shipped": PriceBook.default(), "doubled": DoubledPrices(PriceBook.default().tables)}


def usage(event_id: str, revision: int = 0, *, ts: float = T0, **kw: Any) -> UsageEvent:
    fields: dict[str, Any] = {
        "agent": Agent.CLAUDE_CODE,
        "model": "claude-sonnet-4-5",
        "tokens": Tokens(input=100, output=50 + revision, cache_read=1000),
        "session_id": "s1",
        "machine": "spark01",
        "profile": "max-a",
        "project": "/work/app",
        "entrypoint": "cli",  # interactive: the plan's windows (not the Agent SDK credit)
    }
    fields.update(kw)
    return UsageEvent(event_id=event_id, ts=ts, revision=revision, **fields)


SUBSCRIPTION = ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, None, "max_20x")
HELLO = NodeHello("spark01", "0.1.0", T0 - 3600, "linux", 8, (SUBSCRIPTION,))


def recount(
    events: Iterable[tuple[UsageEvent, PriceBook]],
    billing: dict[tuple[str, str], Billing],
    by: Sequence[str],
    tz: tzinfo,
) -> dict[str, Any]:
    """The report as the hub made it before the roll-ups: every event priced one by one (with
    the book it was stored under)."""
    rollup = Rollup(tuple(by), tz)
    unknown: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    for event, book in sorted(events, key=lambda pair: (pair[0].ts, pair[0].event_id)):
        if not event.counts:
            skipped["retracted"] += 1
            continue
        priced, _ = safe_price(book, event, billing_of(billing, event.machine, event.profile))
        if priced.api_equivalent is None:
            unknown[event.model] += 1
        rollup.add(event, priced, Attribution())
    return {
        "group_by": list(by),
        "rows": [row.to_json() for row in rollup.sorted_rows()],
        "total": rollup.total.to_json(),
        "skipped": dict(skipped),
        "unknown_models": dict(unknown),
    }


# ---- the property ------------------------------------------------------------------------

MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "gpt-5", "no-such-model")
# A call keeps its time across revisions (its source's identity fixes both): e0..e11 lie on
# the 7 days around T0, at different times of day.
IDS = [f"e{i}" for i in range(12)]
TIMES = {event_id: T0 + (i % 7 - 3) * DAY + i * 3001.5 for i, event_id in enumerate(IDS)}
calls = st.builds(
    lambda event_id, revision, model, profile, role, retract, tokens: usage(
        event_id,
        revision,
        ts=TIMES[event_id],
        model=model,
        profile=profile,
        role=role,
        parent_session_id="s1" if role is not Role.MAIN else None,
        session_id=f"s{event_id[-1]}",
        duplicate_of="e0" if retract else None,
        tokens=Tokens(*tokens),
    ),
    st.sampled_from(IDS),
    st.integers(0, 5),
    st.sampled_from(MODELS),
    st.sampled_from(["max-a", "api", None]),
    st.sampled_from(list(Role)),
    st.booleans(),
    st.tuples(*[st.integers(0, 300_000)] * 7),
)
steps = st.one_of(
    st.tuples(st.just("batch"), st.lists(calls, max_size=8)),
    st.tuples(st.just("foreign"), st.lists(calls, max_size=3)),
    st.tuples(st.just("restart"), st.sampled_from(list(BOOKS))),
    st.tuples(st.just("prune"), st.integers(-3, 3)),
    st.tuples(st.just("hello"), st.none()),
)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(steps, min_size=1, max_size=12))
def test_rollups_equal_a_recount_of_the_events(
    tmp_path_factory: pytest.TempPathFactory, plan: list[tuple[str, Any]]
) -> None:
    data = tmp_path_factory.mktemp("store")
    book_name = "shipped"
    store = Store.in_dir(data, book=BOOKS[book_name])
    kept: dict[str, tuple[UsageEvent, PriceBook]] = {}  # every event ever stored, as kept
    seq = 0
    try:
        for step, arg in plan:
            if step == "restart":
                store.close()
                book_name = arg
                store = Store.in_dir(data, book=BOOKS[book_name])
            elif step == "prune":
                store.prune(T0 + arg * DAY, T0 + 10 * DAY, step=3)
            elif step == "hello":
                seq += 1
                store.ingest("spark01", "events", seq, seq - 1, [], HELLO, T0)
            else:
                node = "spark01" if step == "batch" else "spark02"
                seq += 1
                result = store.ingest(node, "events", seq, seq, arg, None, T0)
                for _old, new in result.changes:
                    kept[new.event_id] = (new, BOOKS[book_name])
        billing = store.billing()
        for by, tz in ((EVERY_KEY, UTC), (("day", "machine"), BERLIN), (("week",), KOLKATA)):
            expected = recount(kept.values(), billing, by, tz)
            assert build_hub_report(store, by=by, tz=tz) == expected
        # and the raw events still kept are those of the recount not yet pruned
        stored = {e.event_id: e for e in store.usage_events()}
        assert all(kept[i][0] == e for i, e in stored.items())
    finally:
        store.close()


# ---- re-priced revisions, retractions, pruned days -----------------------------------------


def test_a_revision_withdraws_what_its_row_was_stored_at(tmp_path: Path) -> None:
    """Stored under the shipped tables, superseded under doubled ones: the roll-ups lose the
    first price and gain the second, exactly."""
    with Store.in_dir(tmp_path, book=BOOKS["shipped"]) as store:
        store.ingest("spark01", "events", 1, 1, [usage("a"), usage("b")], None, T0)
    with Store.in_dir(tmp_path, book=BOOKS["doubled"]) as store:
        store.ingest("spark01", "events", 2, 2, [usage("a", 1)], None, T0)
        report = build_hub_report(store, by=["session"], tz=UTC)
    shipped = BOOKS["shipped"]
    a1, b = shipped.price(usage("a", 1)).api_equivalent, shipped.price(usage("b")).api_equivalent
    assert a1 is not None and b is not None
    assert Decimal(report["total"]["cost"]["api_equivalent"]) == 2 * a1 + b
    assert report["total"]["calls"] == 2


def test_a_retraction_leaves_no_empty_cell_and_is_counted_as_skipped(tmp_path: Path) -> None:
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 1, 1, [usage("a"), usage("b")], None, T0)
        store.ingest("spark01", "events", 2, 2, [usage("b", 2, duplicate_of="a")], None, T0)
        report = build_hub_report(store, by=["day"], tz=UTC)
        cells = list(store.rollup(UTC))
    assert report["total"]["calls"] == 1 and report["skipped"] == {"retracted": 1}
    assert sum(c.calls for c in cells) == 1 and sum(c.retracted for c in cells) == 1


def test_reports_and_the_ledger_keep_pruned_days(tmp_path: Path) -> None:
    old, recent = T0 - 100 * DAY, T0 - 3600
    batch = [usage("old", ts=old), usage("new", ts=recent, model="no-such-model")]
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 1, 1, batch, None, T0)
        before = build_hub_report(store, by=["day", "model"], tz=UTC)
        while store.prune(T0 - 90 * DAY, T0, step=1):
            pass
        assert [e.event_id for e in store.usage_events()] == ["new"]
        after = build_hub_report(store, by=["day", "model"], tz=UTC)
        since = build_hub_report(store, by=["day"], tz=UTC, since=date(2026, 8, 10))
    assert after == before
    assert [row["day"] for row in before["rows"]] == ["2026-08-10", "2026-11-18"]
    assert before["unknown_models"] == {"no-such-model": 1}
    assert [row["day"] for row in since["rows"]] == ["2026-08-10", "2026-11-18"]


def test_prune_hands_pages_back_to_the_file_system(tmp_path: Path) -> None:
    with Store.in_dir(tmp_path) as store:
        for k in range(20):
            batch = [usage(f"{k}.{i}", ts=T0 - 200 * DAY + k, origin="x" * 400) for i in range(200)]
            store.ingest("spark01", "events", k + 1, k + 1, batch, None, T0)
        db = sqlite3.connect(tmp_path / DB_FILE)
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        while store.prune(T0 - 90 * DAY, T0, step=500):
            pass
        assert db.execute("PRAGMA page_count").fetchone()[0] < pages / 2
        assert db.execute("PRAGMA freelist_count").fetchone()[0] < 50
        db.close()
        assert build_hub_report(store, by=["day"], tz=UTC)["total"]["calls"] == 4000


def test_the_ledger_loads_from_rollups_as_it_would_from_the_events(tmp_path: Path) -> None:
    now = T0 + 100  # b, c and d are in the sessions' recent token rates
    events = [
        usage("a", ts=T0 - 3 * DAY),
        usage("b", ts=T0 - 30, session_id="s2", profile="api", git_branch="main"),
        usage("c", ts=T0 - 20, role=Role.SUBAGENT, parent_session_id="s1", session_id="x"),
        usage("d", ts=T0 - 10, model="no-such-model", profile=None),
        usage("e", ts=T0 - 5, duplicate_of="a"),
    ]
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 1, 1, events, HELLO, T0)
        billing = store.billing()

        def ledger() -> Ledger:
            return Ledger(
                PriceBook.default(),
                lambda m, p: billing_of(billing, m, p),
                BERLIN,
                lambda: now,
            )

        loaded, rebuilt = ledger(), ledger()
        horizon = loaded.horizon()
        loaded.load(
            store.rollup(BERLIN, since=horizon),
            store.rollup_minutes(since=horizon),
            store.usage_events(since=now - 360, counted_only=True),
            minute_moves=store.credit_minute_moves(since=horizon),
        )
        rebuilt.rebuild(store.usage_events(since=horizon), store.credit_moves())
    for period in Period:
        assert loaded.fleet(period) == rebuilt.fleet(period)
        for dimension in Dimension:
            assert loaded.totals(dimension, period) == rebuilt.totals(dimension, period)
    assert loaded.run_rate() == rebuilt.run_rate()
    assert loaded.first_call == rebuilt.first_call
    keys = rebuilt.sessions.keys()
    assert sorted(loaded.sessions.keys()) == sorted(keys) == ["s1", "s2"]
    for key in keys:
        assert loaded.sessions.get(key) == rebuilt.sessions.get(key)


# ---- migration ---------------------------------------------------------------------------


def make_v2_store(path: Path, events: Sequence[UsageEvent], *, version: int = 2) -> None:
    """A hub.db as fleetmeter's schema v2 wrote it, holding `events`, a limit event, a node,
    a subscription profile and an audit record."""
    db = sqlite3.connect(path)
    db.executescript((HERE / "data" / "hub_schema_v2.sql").read_text())
    for e in events:
        db.execute(
            "INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                e.event_id,
                e.revision,
                int(e.counts),
                e.ts,
                e.machine,
                e.profile,
                e.account,
                e.session_id,
                e.model,
                e.agent.value,
                T0,
                pack(e),
            ),
        )
    limit = LimitEvent("l1", T0, Agent.CLAUDE_CODE, LimitKind.RATE_LIMIT_HIT, machine="spark01")
    db.execute(
        "INSERT INTO limits VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("l1", T0, "spark01", None, None, "claude-code", "rate_limit_hit", T0, pack(limit)),
    )
    db.execute("INSERT INTO nodes (node, first_seen, last_seen) VALUES ('spark01', ?, ?)", (T0, T0))
    db.execute(
        "INSERT INTO profiles VALUES ('spark01', 'max-a', 'claude-code', 'subscription', NULL, "
        "'max_20x', ?, ?)",
        (T0, T0),
    )
    db.execute("INSERT INTO streams VALUES ('spark01', 'events', 7, ?)", (T0,))
    db.execute(
        "INSERT INTO audit (ts, who, action, target, result) VALUES (?, 'ops', 'pause', "
        "'spark01:1:1.0', 'paused')",
        (T0,),
    )
    if version == 1:
        db.execute("CREATE INDEX usage_machine ON usage (machine, profile, ts)")
    db.execute(f"PRAGMA user_version = {version}")
    db.commit()
    db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_a_store_with_data_from_an_older_schema_migrates(tmp_path: Path, version: int) -> None:
    events = [
        usage("a", 3, ts=T0 - 40 * DAY),
        usage("b", ts=T0, profile="api", session_id="s2"),
        usage("c", 1, ts=T0 + 60, duplicate_of="a"),
        usage("d", ts=T0 + 120, model="no-such-model"),
        usage("e", ts=T0 + 180, role=Role.SUBAGENT, parent_session_id="s1", session_id="x"),
    ]
    path = tmp_path / DB_FILE
    make_v2_store(path, events, version=version)
    billing = {("spark01", "max-a"): Billing.SUBSCRIPTION}
    with Store(path) as store:
        assert {e.event_id: e for e in store.usage_events()} == {e.event_id: e for e in events}
        for by, tz in ((EVERY_KEY, UTC), (("month", "profile"), BERLIN)):
            pairs = [(e, BOOKS["shipped"]) for e in events]
            assert build_hub_report(store, by=by, tz=tz) == recount(pairs, billing, by, tz)
        assert store.stream_seq("spark01", "events") == 7
        assert [p.name for p in store.profiles()] == ["max-a"]
        assert [r.who for r in store.audit_log()] == ["ops"]
        assert [e.event_id for e in store.limit_events()] == ["l1"]
        # a later revision of a migrated call withdraws the price the migration gave it
        store.ingest(
            "spark01", "events", 8, 8, [usage("b", 1, profile="api", session_id="s2")], None, T0
        )
        moved = build_hub_report(store, by=["session"], tz=UTC)
    pairs = [(e, BOOKS["shipped"]) for e in events if e.event_id != "b"]
    pairs.append((usage("b", 1, profile="api", session_id="s2"), BOOKS["shipped"]))
    assert moved == recount(pairs, billing, ["session"], UTC)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    indexes = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "usage_machine" not in indexes and {"usage_ts", "usage_session"} <= indexes
    db.close()


# ---- the service: retention and start-up -----------------------------------------------------


def service_on(data: Path, now: float, **kw: Any) -> FleetService:
    return FleetService(Store.in_dir(data), PriceBook.default(), clock=lambda: now, **kw)


def test_the_service_prunes_old_events_and_keeps_their_figures(tmp_path: Path) -> None:
    now = T0 + 10 * DAY  # 2026-11-28: three days back is still this month
    service = service_on(tmp_path, now, retain_days=1)
    batch = [usage("old", ts=now - 3 * DAY), usage("new", ts=now - 60, session_id="s2")]
    service.ingest("spark01", "events", 1, 1, list(batch), HELLO)
    assert service.wait_settled(30)  # the hello set a billing: the figures are loaded again
    month, report = service.fleet(Period.MONTH), service.report(["day", "session"], UTC)
    assert month.calls == 2
    assert service.prune() == 1
    assert service.prune() == 0  # resting: it caught up
    assert [e.event_id for e in service._store.usage_events()] == ["new"]  # noqa: SLF001
    service._store.close()  # noqa: SLF001
    restarted = service_on(tmp_path, now, retain_days=1)
    assert restarted.fleet(Period.MONTH) == month
    assert restarted.report(["day", "session"], UTC) == report
    assert {row.key for row in restarted.sessions()} == {"s1", "s2"}
    # a node re-sending the pruned call (a re-read log) cannot count it twice
    restarted.ingest("spark01", "events", 2, 2, [usage("old", 1, ts=now - 3 * DAY)])
    assert restarted.fleet(Period.MONTH) == month
    assert restarted.report(["day", "session"], UTC) == report


def test_calls_from_before_the_retention_edge_are_told_once_per_node(tmp_path: Path) -> None:
    """A node set up on a machine with months of old logs: the hub does not store what lies
    before its retention edge (set at its first prune, at start), and says so in the feed and
    its log once per node, not silently."""
    now = T0 + 100 * DAY
    service = service_on(tmp_path, now, retain_days=90)
    assert service.prune() == 0  # a fresh hub: nothing to prune, but the edge is set
    old = [usage(f"old{i}", ts=now - 95 * DAY) for i in range(3)]
    service.ingest("spark01", "events", 1, 3, old, HELLO)
    service.ingest("spark01", "events", 4, 4, [usage("old3", ts=now - 95 * DAY)])
    service.ingest("spark02", "events", 1, 1, [usage("new", ts=now - 60, machine="spark02")])
    service.ingest("spark02", "events", 2, 2, [usage("old4", ts=now - 91 * DAY, machine="spark02")])
    assert [e.event_id for e in service._store.usage_events()] == ["new"]  # noqa: SLF001
    edge = datetime.fromtimestamp(now - 90 * DAY, UTC).strftime("%Y-%m-%d %H:%M")
    told = [item for item in service.feed if "retain_days" in item.text]
    assert [(item.machine, item.text) for item in told] == [
        (
            node,
            f"{node} sends events from before {edge} UTC, which this hub does not store "
            "(retain_days = 90 in hub.toml; for older logs: node-agent scan)",
        )
        for node in ("spark01", "spark02")
    ]


class WatchedStore(Store):
    """A store whose figures load (on `snapshot`'s connection) waits for `gate` and whose
    statements there are kept in `statements`."""

    def __init__(self, path: Path, gate: threading.Event) -> None:
        super().__init__(path)
        self.gate = gate
        self.statements: list[str] = []

    @contextmanager
    def snapshot(self, cache_kib: int = CACHE_KIB) -> Iterator[Store]:
        with super().snapshot(cache_kib) as reader:
            reader._db.set_trace_callback(self.statements.append)  # noqa: SLF001
            plain = reader.rollup

            def gated(*args: Any, **kw: Any) -> Iterator[Cell]:
                assert self.gate.wait(30)
                return plain(*args, **kw)

            reader.rollup = gated  # type: ignore[method-assign]
            yield reader


def test_start_up_reads_sums_and_the_last_minutes_not_the_events(tmp_path: Path) -> None:
    """What made a hub with a month of events take 22.9 s before it listened: it re-priced
    every event of the month. Now only the last few minutes' raw rows are read."""
    now = T0 + 10 * DAY
    with Store.in_dir(tmp_path) as store:
        batch = [usage(f"e{i}", ts=now - i * 3600, session_id=f"s{i % 7}") for i in range(200)]
        store.ingest("spark01", "events", 1, 1, batch, HELLO, now)
    gate = threading.Event()
    gate.set()
    store = WatchedStore(tmp_path / DB_FILE, gate)
    service = FleetService(store, PriceBook.default(), clock=lambda: now)
    assert service.wait_loaded(30)
    reads = [s for s in store.statements if "FROM usage" in s]
    assert reads, store.statements
    for sql in reads:
        assert "ts >= " in sql, sql
        since = float(sql.split("ts >= ")[1].split()[0])
        # events decoded: the last minutes'; the sessions' run-rates: the last hour's amounts
        assert since >= now - (600 if "payload" in sql else 3700), sql
    assert service.fleet(Period.MONTH).calls == sum(
        1 for e in batch if e.ts >= datetime(2026, 11, 1, tzinfo=UTC).timestamp()
    )
    store.close()


def test_batches_are_acked_while_the_figures_load_and_count_once(tmp_path: Path) -> None:
    """The receiver does not wait for the figures: a batch committed while they load is
    applied once they have, exactly once (a revision of a loaded call replaces it)."""
    now = T0 + 10 * DAY
    first = [usage("a", ts=now - DAY), usage("b", ts=now - 7200, session_id="s2")]
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 1, 1, first, HELLO, now)
    gate = threading.Event()
    store = WatchedStore(tmp_path / DB_FILE, gate)
    service = FleetService(store, PriceBook.default(), clock=lambda: now)
    assert not service.wait_loaded(0.3)  # the load waits at the gate...
    later = [usage("a", 5, ts=now - DAY), usage("c", ts=now - 30, session_id="s3")]
    result = service.ingest("spark01", "events", 2, 2, later)  # ... and this batch commits
    assert len(result.changes) == 2
    gate.set()
    assert service.wait_loaded(30)
    month = service.fleet(Period.MONTH)
    store.close()
    again = service_on(tmp_path, now)
    assert month == again.fleet(Period.MONTH) and month.calls == 3
    assert {row.key for row in again.sessions()} == {row.key for row in service.sessions()}
    assert month.output == sum(e.tokens.output for e in (later[0], first[1], later[1]))


def test_a_billing_change_reloads_the_figures_without_holding_the_receiver(
    tmp_path: Path,
) -> None:
    """A hello that makes a profile a subscription re-classes every call of it: the figures
    load again on their own thread (a month of sums takes a second or more), while the
    receiver goes on committing batches, which count once the load is done."""
    now = T0 + 10 * DAY
    calls = [usage("a", ts=now - DAY), usage("b", ts=now - 7200, session_id="s2")]
    api = NodeHello(
        "spark01", "0.1.0", T0 - 3600, "linux", 8, (replace(SUBSCRIPTION, billing=Billing.API),)
    )
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 1, 1, calls, api, now)
    gate = threading.Event()
    gate.set()
    store = WatchedStore(tmp_path / DB_FILE, gate)
    service = FleetService(store, PriceBook.default(), clock=lambda: now)
    assert service.wait_loaded(30)
    before = service.fleet(Period.MONTH)
    assert before.metered > 0 and before.subscription_included == 0
    gate.clear()  # the reload now waits at the gate: the receiver must not
    on_receiver: list[object] = []
    plain = store.rollup

    def read_by_the_receiver(*args: Any, **kw: Any) -> Iterator[Cell]:
        on_receiver.append(args)
        return plain(*args, **kw)

    store.rollup = read_by_the_receiver  # type: ignore[method-assign]
    service.ingest("spark01", "events", 2, 2, [], HELLO)
    late = usage("c", ts=now - 30, session_id="s3")
    assert len(service.ingest("spark01", "events", 3, 3, [late]).changes) == 1
    assert on_receiver == []  # the month's sums were not read on the receiver's thread
    gate.set()
    deadline = time.monotonic() + 30
    while service.fleet(Period.MONTH).calls < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    after = service.fleet(Period.MONTH)
    assert after.calls == 3 and after.metered == 0
    assert after.subscription_included > before.metered
    store.close()


def test_a_hub_stopped_while_its_figures_load_ends_the_load_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`serve` that cannot listen stops at once, closing the store under a load still
    running: the load printed a traceback (a closed database) into the one-line error."""
    now = T0 + 10 * DAY
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 1, 1, [usage("a", ts=now - DAY)], HELLO, now)
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    gate = threading.Event()
    store = WatchedStore(tmp_path / DB_FILE, gate)
    service = FleetService(store, PriceBook.default(), clock=lambda: now)
    service.close()
    store.close()
    gate.set()
    loads = [t for t in threading.enumerate() if t.name == "ledger-load"]
    for thread in loads:
        thread.join(30)
    assert loads and failures == []


def test_kept_calls_are_repriced_when_the_tables_change(tmp_path: Path) -> None:
    """Calls stored under other tables (here: twice the price) are brought to the hub's, in
    steps, with their roll-ups and the figures; calls of pruned days keep their old price."""
    now = T0 + 10 * DAY
    calls = [usage(f"e{i}", ts=now - i * 600, session_id=f"s{i % 3}") for i in range(7)]
    with Store.in_dir(tmp_path, book=BOOKS["doubled"]) as store:
        store.ingest("spark01", "events", 1, 1, calls, HELLO, now)
        assert store.reprice() == (0, True)  # the tables it was priced under
    store = Store.in_dir(tmp_path, book=BOOKS["shipped"])
    service = FleetService(store, BOOKS["shipped"], clock=lambda: now)
    doubled = service.fleet(Period.MONTH)
    assert store.reprice(step=3) == (3, False)
    assert service.reprice() == 4  # the rest, then the figures reload
    assert service.reprice() == 0
    billing = store.billing()
    shipped = recount([(e, BOOKS["shipped"]) for e in calls], billing, ["session"], UTC)
    assert build_hub_report(store, by=["session"], tz=UTC) == shipped
    month = service.fleet(Period.MONTH)
    assert month.calls == doubled.calls == 7
    assert 2 * month.api_equivalent == doubled.api_equivalent > 0
    store.close()
    assert service_on(tmp_path, now).fleet(Period.MONTH) == month
