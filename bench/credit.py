"""What a Claude subscription's Agent SDK credit costs: one profile's month of calls (`--calls`,
half of them SDK calls, in batches of 2,000) stored on disk (CPU per 1,000 calls stored: the
store draws the credit at ingest, `hub._credit_store`), then read (`CreditMeters`, a snapshot),
CPU seconds per read, median of `--rounds`; then one call that arrives late (at the month's
start: every SDK call after it is drawn again), CPU of its batch.

With `--budgets`, a governor watches the ingest with two paid-dollars budgets on the
subscription (the profile's day, the fleet's month): what counting the overage and untold calls
(and the late call's re-draw) adds to it.

    python -m bench.credit [--calls 50000] [--rounds 5] [--budgets]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from hub.budgets.governor import Governor
from hub.budgets.model import parse_budget
from hub.credit_meters import CreditMeters
from hub.credit_settings import SubscriptionSettings
from hub.service import FleetService
from hub.store import Store
from pricing import PriceBook
from shared.config import Billing
from shared.events import Agent, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo


def fill(store: Store, calls: int, now: float) -> None:
    hello = NodeHello(
        node="spark01",
        version="0",
        boot_time=now,
        os="linux",
        cpu_count=2,
        profiles=(ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, plan="max_20x"),),
    )
    batch = 2000
    for first in range(0, calls, batch):
        events = [
            UsageEvent(
                event_id=f"claude:msg_{i}:req_{i}",
                ts=now - 3600 + i * 3600 / calls,
                agent=Agent.CLAUDE_CODE,
                model="claude-sonnet-4-5-20250929",
                tokens=Tokens(input=100, output=800, cache_read=40_000, cache_write_1h=900),
                session_id=f"s{i % 50}",
                machine="spark01",
                profile="max-a",
                entrypoint="sdk-cli" if i % 2 else "cli",
            )
            for i in range(first, min(first + batch, calls))
        ]
        store.ingest("spark01", "s1", first + 1, first + len(events), events, hello, now)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budgets", action="store_true", help="a governor with paid budgets")
    args = parser.parse_args(argv)
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.in_dir(Path(tmp), book=PriceBook.default())
        if hasattr(store, "use_subscriptions"):  # (a store from before the credit was kept)
            store.use_subscriptions((SubscriptionSettings("spark01/max-a", None, True),))
        governor = _governor(store) if args.budgets else None
        start = time.process_time()
        fill(store, args.calls, now)
        ingest = (time.process_time() - start) / args.calls * 1000
        meters = CreditMeters(
            store.snapshot,
            store.profiles,
            (SubscriptionSettings("spark01/max-a", None, extra_usage=True),),
        )
        cpu = []
        for _ in range(args.rounds):
            start = time.process_time()
            month = meters.months(now)["spark01/max-a"]
            cpu.append(time.process_time() - start)
        late = time.process_time()
        store.ingest("spark01", "s1", args.calls + 1, args.calls + 1, [_late(now)], None, now)
        late = time.process_time() - late
        if governor is not None:
            spent = {b.budget.name: b.spent for b in governor.standings()}
            print(f"budgets' spend: {', '.join(f'{k} ${v}' for k, v in sorted(spent.items()))}")
            governor.close()
        store.close()
    print(
        f"credit read, {args.calls} calls of one profile this month ({month.sdk_calls} SDK): "
        f"{statistics.median(cpu) * 1000:.1f} ms CPU per read (median of {args.rounds}); "
        f"used ${month.used_usd:.2f} of ${month.terms.credit_usd}, overage ${month.overage_usd:.2f}"
    )
    print(f"ingest: {ingest * 1000:.1f} ms CPU per 1,000 calls stored (batches of 2,000)")
    print(f"one late SDK call at the month's start: {late * 1000:.1f} ms CPU for its batch")


def _governor(store: Store) -> Governor:
    table = [
        parse_budget({"name": "profile day", "scope": "profile=max-a", "period": "day",
                      "basis": "paid", "limit": "1000000"}),
        parse_budget({"name": "fleet month", "scope": "fleet", "period": "month",
                      "basis": "paid", "limit": "1000000"}),
    ]  # fmt: skip
    extra = (SubscriptionSettings("spark01/max-a", None, extra_usage=True),)
    service = FleetService(store, PriceBook.default(), subscriptions=extra)
    service.wait_loaded()
    governor = Governor(store.path, service, table)
    governor.attach(store)
    return governor


def _late(now: float) -> UsageEvent:
    return UsageEvent(
        event_id="claude:msg_late:req_late",
        ts=now - 3600 - 1,
        agent=Agent.CLAUDE_CODE,
        model="claude-sonnet-4-5-20250929",
        tokens=Tokens(input=100, output=800, cache_read=40_000, cache_write_1h=900),
        session_id="s0",
        machine="spark01",
        profile="max-a",
        entrypoint="sdk-cli",
    )


if __name__ == "__main__":
    main()
