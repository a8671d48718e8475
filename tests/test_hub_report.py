"""`fleet-hub report --json`: the scan's row shape over the hub store's calls."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec
import pytest

from hub.report import build_hub_report
from hub.store import Store
from node_agent.render import render_json
from node_agent.report import Report
from pricing import PriceBook
from pricing.rollup import Attribution, Rollup, UnknownGroupKeyError
from shared.config import Billing
from shared.events import Agent, Role, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo

BERLIN = ZoneInfo("Europe/Berlin")
T0 = datetime(2026, 11, 18, 12, 0, tzinfo=BERLIN).timestamp()
# Sonnet 4.5 list rates, USD/MTok: input 3, output 15, cache read 0.30, 5m cache write 3.75.
TOKENS = Tokens(input=1000, output=2000, cache_read=10_000, cache_write_5m=400)  # $0.0375

PROFILES = {
    "spark01": (
        ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, "ops-a@example.com"),
        ProfileInfo("key-a", Agent.CODEX, Billing.API, "team@example.com"),
    ),
    "spark02": (ProfileInfo("key-a", Agent.CLAUDE_CODE, Billing.API, "team@example.com"),),
}


def usage(event_id: str, ts: float = T0, revision: int = 0, **kw: object) -> UsageEvent:
    fields: dict[str, object] = {
        "agent": Agent.CLAUDE_CODE,
        "model": "claude-sonnet-4-5",
        "tokens": TOKENS,
        "session_id": "s1",
        "machine": "spark01",
        "profile": "key-a",
        "entrypoint": "cli",  # interactive: a subscription's windows cover it
    }
    fields.update(kw)
    return UsageEvent(event_id=event_id, ts=ts, revision=revision, **fields)  # type: ignore[arg-type]


def hello(node: str) -> NodeHello:
    return NodeHello(node, "0.1.0", T0 - 86_400, "linux", 8, PROFILES[node])


def fill(store: Store, batches: list[tuple[str, list[UsageEvent]]]) -> None:
    for seq, (node, events) in enumerate(batches, start=1):
        store.ingest(node, "events", seq, seq, events, hello(node), T0)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.default()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.in_dir(tmp_path)


def fleet_events() -> list[UsageEvent]:
    """Calls as the store files them: machine = sending node, account from the profile."""
    models = ["claude-sonnet-4-5", "gpt-5-codex", "mystery-model-9", "claude-opus-4-1"]
    out = []
    for i in range(120):
        node = "spark01" if i % 3 else "spark02"
        profile = "max-a" if node == "spark01" and i % 2 else "key-a"
        info = next(p for p in PROFILES[node] if p.name == profile)
        out.append(
            usage(
                f"e{i}",
                ts=T0 - i * 5000,
                model=models[i % len(models)],
                tokens=Tokens(input=100 * i, output=7 * i, cache_read=1000 * (i % 5)),
                session_id=f"s{i % 9}",
                machine=node,
                profile=profile,
                account=info.account,
                agent=info.agent,
                project=f"/src/p{i % 4}" if i % 7 else None,
                role=Role.SUBAGENT if i % 5 == 0 else Role.MAIN,
            )
        )
    return out


def direct(events: list[UsageEvent], book: PriceBook, by: tuple[str, ...], tz: tzinfo) -> Rollup:
    rollup = Rollup(by, tz)
    billing = {(node, p.name): p.billing for node, ps in PROFILES.items() for p in ps}
    for event in events:
        priced = book.price(event, billing[(event.machine, event.profile or "")])
        rollup.add(event, priced, Attribution())
    return rollup


@pytest.mark.parametrize(
    "by",
    [
        (),
        ("machine",),
        ("profile", "account"),
        ("machine", "profile", "model"),
        ("model", "day"),
        ("agent", "session", "role"),
        ("project", "week", "month"),
    ],
)
def test_rows_equal_a_direct_rollup(store: Store, book: PriceBook, by: tuple[str, ...]) -> None:
    events = fleet_events()
    # sent as the nodes send them: no account, machine as each node believes it is called
    sent = [(e.machine, [_as_sent(e)]) for e in events]
    fill(store, sent)
    report = build_hub_report(store, by=by, tz=BERLIN)
    want = direct(events, book, by, BERLIN)
    assert report["rows"] == [row.to_json() for row in want.sorted_rows()]
    assert report["total"] == want.total.to_json()
    assert report["group_by"] == list(by)
    assert report["total"]["calls"] == 120
    assert report["unknown_models"] == {"mystery-model-9": 30}


def _as_sent(event: UsageEvent) -> UsageEvent:
    return msgspec.structs.replace(event, account=None, machine="localhost")


def test_totals_equal_a_hand_computed_figure(store: Store, book: PriceBook) -> None:
    fill(
        store,
        [
            ("spark01", [usage("api1"), usage("sub1", profile="max-a")]),
            ("spark02", [usage("api2", machine="spark02"), usage("x", model="mystery-model-9")]),
        ],
    )
    data = build_hub_report(store, by=["machine"], tz=UTC)
    total = data["total"]
    assert total["cost"] == {
        "api_equivalent": "0.1125",  # 3 × $0.0375
        "metered": "0.075",
        "subscription_included": "0.0375",
        "estimated": "0.00",
        "unknown": None,
    }
    assert (total["calls"], total["unknown_calls"], total["unknown_tokens"]) == (4, 1, 13_400)
    assert total["tokens"] == {
        "input": 4000,
        "output": 8000,
        "cache_read": 40_000,
        "cache_write_5m": 1600,
        "cache_write_1h": 0,
        "reasoning": 0,
    }
    rows = {r["machine"]: r for r in data["rows"]}
    assert Decimal(rows["spark01"]["cost"]["metered"]) == Decimal("0.0375")
    assert (rows["spark01"]["cost"]["unknown"], rows["spark02"]["cost"]["unknown"]) == ("0", None)
    assert sum(Decimal(r["cost"]["api_equivalent"]) for r in data["rows"]) == Decimal("0.1125")


def test_superseded_and_retracted_calls(store: Store, book: PriceBook) -> None:
    fill(
        store,
        [
            ("spark01", [usage("a", tokens=Tokens(input=1)), usage("b"), usage("c")]),
            ("spark01", [usage("a", revision=1), usage("c", revision=1, duplicate_of="b")]),
        ],
    )
    data = build_hub_report(store, by=[], tz=UTC)
    assert data["total"]["calls"] == 2 and data["total"]["cost"]["api_equivalent"] == "0.075"
    assert data["skipped"] == {"retracted": 1}


def test_since_and_until_are_days_in_the_zone(store: Store, book: PriceBook) -> None:
    def berlin(day: int, hour: int, minute: int = 0) -> float:
        return datetime(2026, 11, day, hour, minute, tzinfo=BERLIN).timestamp()

    fill(
        store,
        [
            (
                "spark01",
                [
                    usage("before", ts=berlin(16, 23, 59)),
                    usage("first", ts=berlin(17, 0, 0)),
                    usage("last", ts=berlin(18, 23, 59)),
                    usage("after", ts=berlin(19, 0, 0)),
                ],
            )
        ],
    )
    data = build_hub_report(
        store, by=["day"], tz=BERLIN, since=date(2026, 11, 17), until=date(2026, 11, 18)
    )
    assert [(r["day"], r["calls"]) for r in data["rows"]] == [("2026-11-17", 1), ("2026-11-18", 1)]
    open_ended = build_hub_report(store, by=["day"], tz=BERLIN, since=date(2026, 11, 18))
    assert [r["day"] for r in open_ended["rows"]] == ["2026-11-18", "2026-11-19"]


def test_the_shape_is_the_scans(store: Store, book: PriceBook) -> None:
    fill(store, [("spark01", [usage("a")])])
    by = ["machine", "profile", "account", "model"]
    hub = build_hub_report(store, by=by, tz=UTC)
    scan = render_json(Report(direct([usage("a")], book, tuple(by), UTC)))
    assert set(hub) <= set(scan)
    assert set(scan) - set(hub) == {"files", "bytes", "problems"}  # log reading: the nodes' job
    assert list(hub["rows"][0]) == list(scan["rows"][0])
    assert list(hub["total"]) == list(scan["total"])
    json.dumps(hub)  # plain JSON, nothing to convert


def test_an_unknown_grouping_is_refused(store: Store, book: PriceBook) -> None:
    with pytest.raises(UnknownGroupKeyError, match="nonsense"):
        build_hub_report(store, by=["machine", "nonsense"], tz=UTC)
