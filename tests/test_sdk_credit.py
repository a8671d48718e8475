"""The Agent SDK credit of Claude subscriptions: Claude Code's `entrypoint` carried from the
transcript to the hub (an older node's events still decode), each call classed (interactive,
credit, overage, untold) the same whatever order and however often it arrived, the month
turning in the profile's zone, the config's errors named, and the credit and overage shown by
`GET /profiles` of a real `fleet-hub serve`, held against the provider's bill by reconciliation,
and drawn in the dashboard's Profiles tab (Pilot)."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import orjson
import pynng
import pytest
from msgspec.structs import replace

from hub.config import load_hub_config
from hub.credit import CreditTerms, Draw, draw_of, meter_month, month_bounds
from hub.credit_settings import SubscriptionSettings, parse_subscriptions
from hub.ledger import profile_key
from hub.remote import RemoteFleet
from shared.codec import from_map, pack, to_map, unpack
from shared.config import Billing, ConfigError
from shared.events import Agent, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo, hello_to_map
from shared.wire import batch_body, seal
from tests.api_harness import ServedHub
from tests.fleet_harness import make_hub, start_hub, stop, wait_for
from tests.pilot_waits import until
from tests.provider_api import ANTHROPIC_KEY, ProviderApi, ProviderData
from tests.synthetic_fleet import SyntheticFleet
from tests.test_source_claude import Recorder, assistant, main_file, scan, write
from tests.test_tui import cell, fleet, fleet_app, started

__all__ = ["fleet"]  # the fixture

MODEL = "claude-sonnet-4-5-20250929"
DOLLARS_15 = Tokens(output=1_000_000)  # $15 at Sonnet 4.5's list price
T0 = datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()


def call(n: int, entrypoint: str | None, ts: float = T0, tokens: Tokens = DOLLARS_15) -> UsageEvent:
    return UsageEvent(
        event_id=f"claude:msg_{n}:req_{n}",
        ts=ts + n,
        agent=Agent.CLAUDE_CODE,
        model=MODEL,
        tokens=tokens,
        session_id="s",
        machine="spark01",
        profile="max-a",
        entrypoint=entrypoint,
    )


# -- the node: entrypoint from the transcript, on the wire --------------------------------------


def test_the_entrypoint_is_read_from_each_call_of_the_transcript(tmp_path: Path) -> None:
    write(
        main_file(tmp_path),
        [
            assistant("msg_a", "req_a", entrypoint="sdk-cli"),
            assistant("msg_b", "req_b", entrypoint="cli", ts="2026-09-03T14:03:00.000Z"),
            assistant("msg_c", "req_c", ts="2026-09-03T14:04:00.000Z"),  # an older Claude Code
        ],
    )
    sink: Recorder = scan(tmp_path)
    got = {e.event_id.split(":")[1]: e.entrypoint for e in sink.events.counted_usage()}
    assert got == {"msg_a": "sdk-cli", "msg_b": "cli", "msg_c": None}


def test_an_older_nodes_event_without_it_still_decodes_and_a_newer_one_keeps_it() -> None:
    old = to_map(call(1, None))
    assert "entrypoint" not in old  # absent, as an older node sends it
    assert from_map(old) == call(1, None)
    assert unpack(pack(call(2, "sdk-py"))) == call(2, "sdk-py")


# -- classing ------------------------------------------------------------------------------------


def test_what_an_entrypoint_says() -> None:
    assert draw_of("cli") is Draw.INTERACTIVE
    assert [draw_of(e) for e in ("sdk-cli", "sdk-ts", "sdk-py")] == [Draw.CREDIT] * 3
    assert draw_of(None) is Draw.UNTOLD and draw_of("claude-vscode") is Draw.UNTOLD


def priced(calls: list[UsageEvent]) -> list[tuple[UsageEvent, Decimal | None]]:
    return [(c, Decimal(15)) for c in calls]


def test_sdk_calls_draw_the_credit_then_are_overage_and_the_rest_is_said() -> None:
    calls = [call(i, "sdk-cli") for i in range(3)]  # $45 against a $20 credit
    calls += [call(10, "cli"), call(11, None)]
    month = meter_month(priced(calls), CreditTerms(Decimal(20), extra_usage=True), "2026-12")
    assert (month.used_usd, month.remaining_usd, month.overage_usd) == (20, 0, 25)
    assert (month.sdk_calls, month.overage_calls) == (3, 2)  # the second call crossed the line
    assert month.interactive_usd == 15 and month.untold_usd == 15 and month.untold_calls == 1
    day = datetime.fromtimestamp(T0, UTC).date()
    assert month.overage_by_day == {(day, MODEL): Decimal(25)}
    assert month.estimated and "1 call(s) ($15 API-equivalent) whose log does not say" in (
        month.note()
    )
    off = meter_month(priced(calls), CreditTerms(Decimal(20), extra_usage=False), "2026-12")
    assert off.overage_usd == 0 and off.refused_usd == 25 and off.overage_by_day == {}
    unknown = meter_month([(call(0, "sdk-ts"), None)], CreditTerms(Decimal(20)), "2026-12")
    assert unknown.unpriced_sdk_calls == 1 and unknown.used_usd == 0 and unknown.estimated


def test_the_same_calls_in_any_order_and_sent_twice_meter_alike() -> None:
    calls = [call(i, "sdk-cli", tokens=Tokens(output=100_000 * (i + 1))) for i in range(12)]
    amounts = [(c, Decimal("0.15") * Decimal(i + 1) * 10) for i, c in enumerate(calls)]
    terms = CreditTerms(Decimal(20), extra_usage=True)
    first = meter_month(amounts, terms, "2026-12")
    rng = random.Random(3)
    for _ in range(5):
        shuffled = list(amounts)
        rng.shuffle(shuffled)
        assert meter_month(shuffled, terms, "2026-12") == first
    assert first.used_usd == 20 and first.overage_usd == sum(a for _, a in amounts) - 20


def test_the_month_turns_at_midnight_in_the_profiles_zone() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    late = datetime(2026, 11, 30, 23, 30, tzinfo=UTC).timestamp()  # 00:30 on Dec 1 in Berlin
    start, end, name = month_bounds(late, berlin)
    assert name == "2026-12" and start == datetime(2026, 11, 30, 23, tzinfo=UTC).timestamp()
    assert end == datetime(2026, 12, 31, 23, tzinfo=UTC).timestamp()
    assert month_bounds(late, UTC)[2] == "2026-11"
    assert month_bounds(datetime(2026, 12, 31, 23, tzinfo=UTC).timestamp(), UTC)[2] == "2026-12"


@pytest.mark.parametrize(
    ("item", "said"),
    [
        ({"profile": "max-a"}, 'subscriptions[0].profile must be "MACHINE/PROFILE"'),
        (
            {"profile": "a/b", "sdk_credit": 100},
            'sdk_credit must be dollars as a string like "100"',
        ),
        ({"profile": "a/b", "extra_usage": "yes"}, "subscriptions[0].extra_usage must be true"),
        ({"profile": "a/b", "tz": "Mars/Olympus"}, "'Mars/Olympus' is not an IANA zone"),
        ({"profile": "a/b", "credit": "1"}, "unknown key(s) credit"),
    ],
)
def test_each_bad_subscription_setting_is_named(item: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_subscriptions("hub.toml", [item])
    assert said in str(raised.value) and str(raised.value).startswith("hub.toml: ")


# -- a real hub --------------------------------------------------------------------------------


def hello(node: str) -> NodeHello:
    return NodeHello(
        node=node,
        version="0.1.0",
        boot_time=time.time() - 60,
        os="linux",
        cpu_count=2,
        profiles=(
            ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, plan="pro"),
            ProfileInfo("max-b", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, plan="max_5x"),
        ),
    )


def send(hub: ServedHub, events: list[UsageEvent]) -> None:
    node = "spark01"
    seq0 = hub.seqs.get(node, 0) + 1
    seq1 = seq0 + len(events) - 1
    hub.seqs[node] = seq1
    body = batch_body("s1", seq0, seq1, [pack(e) for e in events], hello_to_map(hello(node)))
    with pynng.Req0(recv_timeout=10_000, send_timeout=5000) as sock:
        sock.dial(hub.setup.events, block=True)
        sock.send(seal(hub.setup.key(node), node, "batch", body))
        sock.recv()


def billed_overage(day: datetime, usd: Decimal, calls: int) -> ProviderData:
    """The provider's report for the profile's key: every call's tokens, the overage billed."""
    data = ProviderData()
    data.anthropic_usage[day.date()] = [
        {
            "api_key_id": "apikey_max",
            "workspace_id": None,
            "model": MODEL,
            "uncached_input_tokens": 0,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "cache_read_input_tokens": 0,
            "output_tokens": DOLLARS_15.output * calls,
        }
    ]
    data.anthropic_cost[day.date()] = [
        {
            "amount": str(usd * 100),
            "currency": "USD",
            "workspace_id": None,
            "cost_type": "tokens",
            "token_type": "output_tokens",
            "model": MODEL,
            "description": "output",
        }
    ]
    return data


def test_the_credit_and_overage_on_a_served_hub(tmp_path: Path) -> None:
    now = time.time()
    start, _, month = month_bounds(now, UTC)
    at = max(now - 600, start + 1)  # this month, whatever the day
    calls = [call(i, "sdk-cli", at) for i in range(3)] + [call(10, "cli", at), call(11, None, at)]
    api = ProviderApi(billed_overage(datetime.fromtimestamp(at, UTC), Decimal(25), len(calls)))
    setup = make_hub(tmp_path)
    key = tmp_path / "anthropic.key"
    key.write_text(ANTHROPIC_KEY)
    key.chmod(0o600)
    setup.config.write_text(
        setup.config.read_text()
        + f"""
[[subscriptions]]
profile = "spark01/max-a"
extra_usage = true

[reconcile]
interval = 0
threshold_usd = 0.01
[reconcile.anthropic]
key_file = "{key}"
base_url = "{api.url}"
[[reconcile.keys]]
provider = "anthropic"
key = "apikey_max"
profiles = ["spark01/max-a"]
"""
    )
    with api.running():
        proc = start_hub(setup, tmp_path)
        hub = ServedHub(
            setup, proc, f"http://{load_hub_config(setup.config).api_listen}", {}, tmp_path
        )
        try:
            send(hub, calls[::-1])  # out of order
            send(hub, calls[:2])  # and again (a node re-sending after a lost ack)
            token = (setup.config.parent / "admin.token").read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}
            assert httpx.get(f"{hub.url}/api/v1/profiles", timeout=30).status_code == 401

            def credit() -> dict[str, object] | None:
                rows = httpx.get(f"{hub.url}/api/v1/profiles", headers=headers, timeout=30).json()
                found = {r["key"]: r["credit"] for r in rows}
                assert (
                    found.get("spark01/max-b") is None or found["spark01/max-b"]["sdk_calls"] == 0
                )
                return found.get("spark01/max-a")

            deadline = time.monotonic() + 30
            while (got := credit()) is None or got["sdk_calls"] != 3:
                assert time.monotonic() < deadline, got
                time.sleep(0.3)
            assert got == {
                "month": month,
                "credit_usd": "20",
                "credit_known": True,
                "credit_from": "plan pro",
                "used_usd": "20",
                "remaining_usd": "0",
                "overage_usd": "25",
                "extra_usage": True,
                "refused_usd": "0",
                "untold_usd": "15",
                "sdk_calls": 3,
                "overage_calls": 2,
                "untold_calls": 1,
                "unpriced_sdk_calls": 0,
                "estimated": True,
                "note": got["note"],
            }
            assert "whose log does not say" in str(got["note"])
            # an attached dashboard reads the same
            with RemoteFleet(hub.url, token) as remote:
                wait_for(
                    lambda: remote.credits().get("spark01/max-a") == got,
                    30,
                    "the attached dashboard's credit",
                )
            schema = httpx.get(f"{hub.url}/api/v1/openapi.json", timeout=30).json()
            assert "overage_usd" in schema["components"]["schemas"]["Credit"]["properties"]

            # the provider billed the overage: held against it as paid, it agrees
            day = datetime.fromtimestamp(at, UTC).date().isoformat()
            done = hub.cli("reconcile", "--since", day, "--until", day, "--json")
            assert done.returncode == 0, done.stderr
            [row] = [r for r in orjson.loads(done.stdout)["rows"] if r["key"] == "apikey_max"]
            assert row["fleet"]["overage_usd"] == "25" and row["fleet"]["usd"] == "25"
            assert row["drift"]["usd"] == "0" and row["cause"] is None
        finally:
            stop(proc)


# -- the dashboard -------------------------------------------------------------------------------


async def test_the_profiles_tab_shows_the_credit_and_the_overage(fleet: SyntheticFleet) -> None:
    fleet.service.use_subscriptions((SubscriptionSettings("spark001/p01", None, extra_usage=True),))
    fleet.service.credit_meters.min_s = 1.0  # read again soon after calls (10 s when serving)
    key = profile_key("spark001", "p01")  # Claude Code on max_20x: a $200 credit
    async with fleet_app(fleet).run_test(size=(240, 50)) as pilot:
        app = await started(pilot)
        await pilot.press("2")
        profiles = app.table("profiles")
        now = time.time()
        start = month_bounds(now, UTC)[0]
        sdk = [
            replace(
                call(i, "sdk-cli", max(now - 600, start + 1)), machine="spark001", profile="p01"
            )
            for i in range(14)
        ]  # $210
        fleet.send("spark001", sdk[:7])
        await until(
            pilot,
            # ("~" if some of the fleet's earlier calls on p01 do not say how the agent was
            # started: estimated)
            lambda: cell(profiles, key, "sdk_credit").lstrip("~") == "$105.00 / $200.00",
            "the credit half drawn",
            15,
        )
        assert cell(profiles, key, "overage") == ""
        fleet.send("spark001", sdk[7:])
        await until(pilot, lambda: cell(profiles, key, "overage") == "$10.00", "the overage", 15)
        assert cell(profiles, key, "sdk_credit").lstrip("~") == "$200.00 / $200.00"
        assert cell(profiles, profile_key("spark001", "p00"), "sdk_credit") == ""  # no credit
