"""A Claude subscription whose Agent SDK credit nobody told (its plan is none the table knows and
no `sdk_credit` is configured): its SDK calls and its untold calls count as estimated on the hub,
as `node-agent scan` counts them, never silently as subscription-included; once the plan is
told, the profile is drawn again against the credit."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

from hub.credit import CreditMonth
from hub.credit_settings import credit_terms
from hub.dashboard import credit_cells
from hub.ledger import Dimension, Period, profile_key
from hub.model import ProfileRecord
from hub.store import Store
from pricing import Billing, PriceBook
from pricing.rollup import Attribution, Rollup
from pricing.sdk_credit import CREDIT_SINCE, UNKNOWN_CREDIT_REASON, ZERO
from shared.events import Agent, UsageEvent
from shared.hello import NodeHello, ProfileInfo
from tests.test_sdk_classes import (
    API,
    BY,
    HELLO,
    NOW,
    call,
    expected_report,
    fresh_ledger,
    report_of,
)

UNTOLD_PLAN = ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, None, None)
HELLO_NO_PLAN = NodeHello("spark01", "0.1.0", NOW - 86400, "linux", 8, (UNTOLD_PLAN, API))


def _no_plan_report(events: Sequence[UsageEvent], book: PriceBook) -> dict[str, Any]:
    """The report as the rule says for a profile with no known credit: every SDK or untold call
    of it since the credit began is estimated (all of its API-equivalent), the rest as billed."""
    rollup = Rollup(BY, UTC)
    for event in (e for e in events if e.counts):
        billing = Billing.SUBSCRIPTION if event.profile == "max-a" else Billing.API
        priced = book.price(event, billing)
        key = rollup.key(event, Attribution())
        rollup.add_calls(key, 1, event.tokens, priced)
        drawn = event.profile == "max-a" and event.entrypoint != "cli" and event.ts >= CREDIT_SINCE
        amount = book.price(event, Billing.API).api_equivalent
        if drawn and amount is not None:
            rollup.rows[key].move(ZERO, amount, estimated=priced.estimated)
    return {"rows": [r.to_json() for r in rollup.sorted_rows()], "total": rollup.total.to_json()}


def _month(store: Store) -> CreditMonth:
    terms = store.credit_terms("spark01", "max-a")
    assert terms is not None
    return store.credit_month("spark01", "max-a", "2026-12", terms)


def test_a_subscription_with_no_known_credit_counts_its_sdk_calls_estimated(
    tmp_path: Path,
) -> None:
    rng = random.Random(7)
    calls = [call(n, rng) for n in range(40)]
    assert {c.entrypoint for c in calls} >= {"sdk-cli", "cli", None}
    book = PriceBook.default()
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 0, -1, [], HELLO_NO_PLAN, NOW)
        live = fresh_ledger(store, book)
        seq = 1
        for batch in (calls[:25], calls[25:]):
            result = store.ingest("spark01", "events", seq, seq, batch, HELLO_NO_PLAN, NOW)
            live.apply_all(result.changes, result.prices, result.redraws)
            seq += 1

        want = _no_plan_report(calls, book)
        assert report_of(store) == want
        total = want["total"]["cost"]
        assert Decimal(total["estimated"]) > 0
        # the ledger (dashboard, API, metrics) says the same, live and reloaded
        key = profile_key("spark01", "max-a")
        assert live.total(Dimension.PROFILE, key, Period.MONTH) == fresh_ledger(store, book).total(
            Dimension.PROFILE, key, Period.MONTH
        )
        assert live.total(Dimension.PROFILE, key, Period.MONTH).estimated > 0

        month = _month(store)
        shown = month.to_json()
        assert shown["credit_usd"] is None and shown["remaining_usd"] is None
        assert shown["credit_known"] is False and shown["estimated"] is True
        assert shown["credit_from"] == "not known (no plan)"
        assert UNKNOWN_CREDIT_REASON in shown["note"]
        assert month.used_usd == ZERO and month.overage_usd == ZERO
        text, _ = credit_cells(shown)
        assert text.text == f"~${month.untold_usd:,.2f} / ?"

        # The node now tells the plan (Pro, $20): the profile is drawn against the credit.
        store.ingest("spark01", "events", seq, seq, [], HELLO, NOW)
        want = expected_report(calls, book, extra_usage=False)
        assert report_of(store) == want
        told = _month(store).to_json()
        assert told["credit_usd"] == "20" and told["credit_known"] is True


def test_only_a_claude_subscription_has_credit_terms() -> None:
    def record(agent: Agent, billing: Billing, plan: str | None) -> ProfileRecord:
        return ProfileRecord("spark01", "p", agent, billing, None, plan, 0.0, 0.0)

    assert credit_terms(record(Agent.CLAUDE_CODE, Billing.API, None), ()) is None
    assert credit_terms(record(Agent.CODEX, Billing.SUBSCRIPTION, None), ()) is None
    unknown = credit_terms(record(Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, "team"), ())
    assert unknown is not None and not unknown.known
    assert unknown.source == "not known (plan 'team')"
    known = credit_terms(record(Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, "max_5x"), ())
    assert known is not None and known.known and known.credit_usd == Decimal(100)
    assert unknown.fingerprint() != known.fingerprint()
