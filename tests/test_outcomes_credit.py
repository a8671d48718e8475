"""Cost per outcome classes a Claude subscription's calls by the Agent SDK credit's rule
(`pricing.sdk_credit`), as every other spend surface does: a commit's metered figure holds its
overage and its estimated figure its untold calls, whether the view is read from the outcome
roll-up's sums or call by call, and the rows add up to the report's figures per class."""

from __future__ import annotations

import random
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hub.outcomes import build_outcome_report, create_table, record
from hub.report import build_hub_report
from hub.store import Store
from pricing import Billing, PriceBook
from pricing.outcomes import OutcomeReport
from pricing.sdk_credit import PLAN_CREDIT, CreditTerms, draw_calls
from shared.events import UsageEvent
from shared.outcomes import Commit, SessionOutcome
from tests.test_outcome_rollup import summed_sessions
from tests.test_sdk_classes import DAY, EXTRA, HELLO, NOW, call, deliver, fresh_ledger

CLASSES = ("metered", "estimated", "subscription_included", "api_equivalent")
SESSIONS = {
    # s0: two commits, one amid the December calls; s1: one in November; s2: none
    "s0": (Commit("aaaa", NOW - 2 * DAY + 900, 1, 0, "trailer", "one"),
           Commit("bbbb", NOW - 0.5 * DAY, 1, 0, "trailer", "two")),
    "s1": (Commit("cccc", NOW - 24 * DAY, 1, 0, "trailer", "three"),),
}  # fmt: skip


def _outcomes() -> list[SessionOutcome]:
    return [
        SessionOutcome(s, NOW, "ok", "", "r", "main", commits) for s, commits in SESSIONS.items()
    ]


def _expected(events: list[UsageEvent], by: str, book: PriceBook) -> dict[str, Any]:
    """The view recounted call by call: each priced and classed by its profile's billing, then
    moved by the credit's rule (`draw_calls`) as the report's rows are."""
    kept = [e for e in events if e.counts]
    terms = CreditTerms(PLAN_CREDIT["pro"], extra_usage=True)
    mine = [e for e in kept if e.profile == "max-a"]
    drawn = dict(
        draw_calls(
            (
                (e.ts, e.event_id, e.entrypoint, book.price(e, Billing.API).api_equivalent)
                for e in mine
            ),
            terms,
        )
    )
    report = OutcomeReport(by)
    by_session: dict[str, list[Any]] = {}
    for event in kept:
        billing = Billing.SUBSCRIPTION if event.profile == "max-a" else Billing.API
        by_session.setdefault(event.session_id, []).append((event, book.price(event, billing)))
    outcomes = {o.session_id: o for o in _outcomes()}
    for session, calls in by_session.items():
        moves = {k: d.moved for k, d in drawn.items() if d.moved}
        report.add_session(outcomes.get(session), calls, moves)
    return report.to_json()


def _by_class(rows: list[dict[str, Any]]) -> dict[str, Decimal]:
    return {
        name: sum((Decimal(r["cost"][name] or 0) for r in rows), Decimal(0)) for name in CLASSES
    }


@pytest.mark.parametrize(("seed", "order"), [(1, "shuffled"), (2, "shuffled"), (3, "late")])
def test_outcome_rows_class_the_overage_as_the_report_does(
    tmp_path: Path, seed: int, order: str
) -> None:
    rng = random.Random(seed)
    calls = [call(n, rng) for n in range(60)]
    book = PriceBook.default()
    if order == "shuffled":  # out of order: late calls re-draw the months, sessions read raw
        sent = calls[:]
        rng.shuffle(sent)
    else:  # each session in order (read as sums), but s2's calls all come last: they draw
        # the credit before calls of s0 and s1 delivered earlier, moving those into overage
        ordered = sorted(calls, key=lambda e: e.ts)
        sent = [e for e in ordered if e.session_id != "s2"]
        sent += [e for e in ordered if e.session_id == "s2"]
    batches = [sent[i : i + 7] for i in range(0, len(sent), 7)]
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 0, -1, [], HELLO, NOW)
        assert store.use_subscriptions(EXTRA)
        with store.writing() as db:
            create_table(db)
            record(db, "spark01", _outcomes())
        deliver(store, fresh_ledger(store, book), batches)
        report = build_hub_report(store, by=("profile",), tz=UTC)
        if order == "late":
            assert summed_sessions(store) == 3
        total = {name: Decimal(report["total"]["cost"][name]) for name in CLASSES}
        assert total["metered"] > 0 and total["estimated"] > 0  # overage and untold calls
        for by in ("commit", "repo"):
            fast = build_outcome_report(store, by, UTC)
            slow = build_outcome_report(store, by, UTC, from_sums=False)
            assert fast == slow
            assert fast == _expected(calls, by, book)
            # every call is in one row: the rows add up to the report's figures per class
            assert _by_class(fast["rows"]) == total, by
