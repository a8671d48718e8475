"""Cost per outcome classes a Claude subscription's calls by the Agent SDK credit's rule
(`pricing.sdk_credit`), as every other spend surface does: a commit's metered figure holds its
overage and its estimated figure its untold calls, whether the view is read from the outcome
roll-up's sums or call by call, and the rows add up to the report's figures per class."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from hub.outcomes import build_outcome_report, create_table, record
from hub.report import build_hub_report
from hub.store import Store
from node_agent.outcomes.view import outcome_view
from node_agent.report import Query, build_report
from node_agent.scan_credit import CreditOptions
from pricing import Billing, PriceBook
from pricing.outcomes import OutcomeReport
from pricing.sdk_credit import PLAN_CREDIT, CreditTerms, draw_calls
from shared.config import load_config
from shared.events import UsageEvent
from shared.outcomes import Commit, SessionOutcome
from tests.test_outcome_rollup import summed_sessions
from tests.test_sdk_classes import DAY, EXTRA, HELLO, NOW, call, deliver, fresh_ledger
from tests.test_source_claude import SLUG, assistant, write

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


# -- node-agent scan --by commit: the scan's outcome view, by the same rule -----------------


@pytest.mark.parametrize(
    ("plan", "extra_usage"), [("pro", True), ("pro", None), ("pro", False), (None, True)]
)
def test_the_scans_outcome_view_classes_calls_as_its_report(
    tmp_path: Path, plan: str | None, extra_usage: bool | None
) -> None:
    """Many SDK calls an hour (the credit running out inside one), untold and interactive
    ones, `--since` cutting the month; extra usage on, not said, off; no credit known."""
    rng = random.Random(5)
    home = tmp_path / "claude"
    start = datetime(2026, 12, 1, tzinfo=UTC).timestamp()
    for s in range(3):
        session = f"{s:08d}-0000-4000-8000-000000000000"
        lines = []
        for i in range(120):
            ts = start + rng.randrange(0, 3 * 86400)
            entrypoint = rng.choice(("sdk-cli", "sdk-cli", "cli", None))
            extra = {} if entrypoint is None else {"entrypoint": entrypoint}
            stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
            lines.append(
                assistant(f"msg_{s}_{i}", f"req_{s}_{i}", output=rng.randrange(1_000, 400_000),
                          input_tokens=0, cache_read=0, w1=0, session=session,
                          ts=stamp.replace("+00:00", "Z"), **extra)
            )  # fmt: skip
        write(home / "projects" / SLUG / f"{session}.jsonl", lines)
    config_path = tmp_path / "node.toml"
    config_path.write_text(
        f'node = "spark01"\n\n[[profiles]]\nname = "max-a"\nagent = "claude-code"\n'
        f'home = "{home}"\nbilling = "subscription"\n' + (f'plan = "{plan}"\n' if plan else "")
    )
    report = build_report(
        [],
        load_config(config_path),
        Query(("day", "session"), UTC, since=date(2026, 12, 2), keep_calls=True),
        jobs=1,
        credit=CreditOptions(None, extra_usage),
    )
    want = _by_class([row.to_json() for row in report.rollup.rows.values()])
    assert want["metered"] > 0 or extra_usage is not True or plan is None
    assert want["estimated"] > 0  # untold calls (and past the credit, when not known)
    view = outcome_view(report, "commit")
    assert _by_class(view["rows"]) == want
