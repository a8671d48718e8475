"""A plan or billing change a node announces on a heartbeat (a hello with no calls, as an idle
node sends every few seconds) re-draws the profile's Agent SDK credit at once: the live figures
equal what a restart computes, never only after it (found by an outside review)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hub.credit_settings import SubscriptionSettings
from hub.store import Store
from pricing import Billing
from shared.events import Agent, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo

NOW = datetime(2026, 12, 5, 12, tzinfo=UTC).timestamp()
EXTRA = (SubscriptionSettings("spark01/max-0", None, extra_usage=True),)


def _hello(billing: Billing, plan: str | None) -> NodeHello:
    profile = ProfileInfo("max-0", Agent.CLAUDE_CODE, billing, None, plan)
    return NodeHello("spark01", "0.1.0", NOW - 86400, "linux", 8, (profile,))


def _calls() -> list[UsageEvent]:
    return [
        UsageEvent(
            event_id=f"claude:m{n}:r{n}",
            revision=0,
            agent=Agent.CLAUDE_CODE,
            model="claude-sonnet-4-5-20250929",
            tokens=Tokens(output=1_000_000),
            session_id="s",
            machine="spark01",
            profile="max-0",
            ts=NOW - 3600 * n,
            entrypoint="sdk-cli",
        )  # fmt: skip
        for n in range(5)
    ]


def _overage(store: Store) -> Decimal:
    found = store._db.execute("SELECT sum(overage) FROM rollup_credit").fetchone()[0]
    return Decimal(found or 0)


def _figures_after_a_heartbeat(tmp_path: Path, first: NodeHello, then: NodeHello) -> Decimal:
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 0, -1, [], first, NOW)
        store.use_subscriptions(EXTRA)
        store.ingest("spark01", "events", 0, 4, _calls(), first, NOW)
        before = _overage(store)
        store.ingest("spark01", "events", 5, 4, [], then, NOW + 60)  # the heartbeat
        live = _overage(store)
    with Store.in_dir(tmp_path) as store:
        store.use_subscriptions(EXTRA)
        assert _overage(store) == live  # a restart computes nothing else
    assert live != before
    return live


def test_a_plan_announced_on_a_heartbeat_is_drawn_at_once(tmp_path: Path) -> None:
    # five $15 SDK calls: $55 past Pro's $20 credit, none past Max 20x's $200
    live = _figures_after_a_heartbeat(
        tmp_path, _hello(Billing.SUBSCRIPTION, "pro"), _hello(Billing.SUBSCRIPTION, "max_20x")
    )
    assert live == 0


def test_billing_announced_on_a_heartbeat_is_drawn_at_once(tmp_path: Path) -> None:
    live = _figures_after_a_heartbeat(
        tmp_path, _hello(Billing.API, None), _hello(Billing.SUBSCRIPTION, "pro")
    )
    assert live == Decimal(55)
