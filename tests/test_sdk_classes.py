"""The five-class figures of Claude subscription calls past the Agent SDK credit: every call is
classed by the one rule (`pricing.sdk_credit`) whatever order, however often and at whatever
revision it arrived, across a restart and a re-pricing, and the store's roll-ups (hence
`fleet-hub report`), the hub's ledger (the dashboard, the API, metrics) and `node-agent scan`
agree to the cent."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hub.credit_settings import SubscriptionSettings
from hub.ledger import Dimension, Ledger, Period, Totals, profile_key
from hub.report import build_hub_report
from hub.service import FleetService
from hub.store import Store
from pricing import Billing, PriceBook
from pricing.rollup import Attribution, Rollup
from pricing.sdk_credit import PLAN_CREDIT, ZERO, CreditTerms, draw_calls
from shared.events import Agent, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo
from tests.test_hub_rollup import DoubledPrices

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
