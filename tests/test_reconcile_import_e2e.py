"""`fleet-hub reconcile import` end to end: through a real `fleet-hub serve` (operator token;
a viewer is refused) and on the store when none serves; the imported rows held against the
fleet's calls by the next reconcile, with faults planted and found under the right cause (and
none where there is none): DeepSeek across its mid-month price change, a day billed in CNY,
usage no node saw, a day exported in part, and Cursor's on-demand dollars on a plan."""

from __future__ import annotations

import base64
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pynng

from hub.config import load_hub_config
from hub.store import Store
from pricing import Billing
from shared.codec import pack
from shared.events import Agent, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo, hello_to_map
from shared.wire import batch_body, seal
from tests.api_harness import ServedHub, fleet_hub
from tests.fleet_harness import make_hub, start_hub, stop, wait_for

CALL = Tokens(input=1_000_000, output=1_000_000)
# deepseek-chat in the shipped tables: V3.2 ($0.28 in / $0.42 out) to 2026-04-25, V4 Flash
# ($0.14 / $0.28) from 2026-04-26: ten calls a day are $7.00, then $4.20
BEFORE, AFTER = Decimal("7.00"), Decimal("4.20")
DAYS = [date(2026, 4, d) for d in (24, 25, 26, 27, 28)]
UNBILLED = date(2026, 4, 29)  # the fleet's calls on a day no export covers: not compared
RECONCILE = """
[reconcile]
interval = 0
[[reconcile.keys]]
provider = "deepseek"
key = "sk-ds1"
profiles = ["spark01/ds"]
"""


def noon(day: date, n: int) -> float:
    return datetime(day.year, day.month, day.day, 12, tzinfo=UTC).timestamp() + n


def deepseek_calls() -> list[UsageEvent]:
    return [
        UsageEvent(
            event_id=f"opencode:ds:{day}:{n}",
            ts=noon(day, n),
            agent=Agent.OPENCODE,
            model="deepseek-chat",
            tokens=CALL,
            session_id=f"ses-{day}",
            provider="deepseek",
            machine="spark01",
            profile="ds",
        )
        for day in [*DAYS, UNBILLED]
        for n in range(10)
    ]


# Cursor's dollars are read from the stored calls themselves: a recent day (raw calls older
# than the store's retention are pruned, their sums kept)
CURSOR_DAY = datetime.now(UTC).date() - timedelta(days=2)


def cursor_calls() -> list[UsageEvent]:
    # claude-4.5-sonnet at list: 100k in $0.30 + 100k out $1.50 = $1.80 a call
    day = CURSOR_DAY
    return [
        UsageEvent(
            event_id=f"cursor:{kind}:{n}",
            ts=noon(day, 100 + n),
            agent=Agent.CURSOR,
            model="claude-4.5-sonnet",
            tokens=Tokens(input=100_000, output=100_000),
            session_id=f"cursor:{day}",
            service_tier=kind,
            reported_cost_usd=cost,
            machine="spark01",
            profile="cur",
        )
        for n, (kind, cost) in enumerate(
            [("On-Demand", "1.80")] * 3 + [("Included", "1.80")] * 3 + [("Included", None)]
        )
    ]


def send(served: ServedHub, events: list[UsageEvent]) -> None:
    """One signed batch from spark01, whose hello puts `cur` on a Cursor plan."""
    hello = NodeHello(
        node="spark01",
        version="0.1.0",
        boot_time=noon(DAYS[0], 0),
        os="linux",
        cpu_count=2,
        profiles=(
            ProfileInfo("ds", Agent.OPENCODE, Billing.API),
            ProfileInfo("cur", Agent.CURSOR, Billing.SUBSCRIPTION, plan="pro"),
        ),
    )
    seq0 = served.seqs.get("spark01", 0) + 1
    served.seqs["spark01"] = seq0 + len(events) - 1
    body = batch_body(
        "s1", seq0, seq0 + len(events) - 1, [pack(e) for e in events], hello_to_map(hello)
    )
    with pynng.Req0(recv_timeout=10_000, send_timeout=5000) as sock:
        sock.dial(served.setup.events, block=True)
        sock.send(seal(served.setup.key("spark01"), "spark01", "batch", body))
        sock.recv()


HEADER = "day,provider,model,key,input_tokens,output_tokens,amount,currency,fx_rate,fx_date\n"


def bill_row(day: date, calls: int, amount: Decimal, currency: str = "USD", rate: str = "") -> str:
    tokens = CALL.input * calls
    fx = f"{rate},{day}" if rate else ","
    return f'{day},deepseek,deepseek-chat,sk-ds1,"{tokens:,}",{tokens},{amount},{currency},{fx}\n'


def first_export(tmp: Path) -> Path:
    """Taken on the 28th: that day is still open (partial), and half of it is in."""
    path = tmp / "deepseek-2026-04.csv"
    path.write_text(
        "\ufeff"
        + HEADER
        + bill_row(DAYS[0], 10, BEFORE)  # right
        + bill_row(DAYS[1], 20, 2 * BEFORE)  # twice the fleet's calls: unseen usage
        + bill_row(DAYS[2], 10, AFTER * Decimal("7.25"), "CNY", "7.25")  # right, in CNY
        + bill_row(DAYS[3], 10, BEFORE)  # billed at the old price after the change
        + bill_row(DAYS[4], 5, AFTER / 2)  # half the day so far
        + "2026-04-28,deepseek,deepseek-chat,sk-ds1,1000,1000,0.01,CNY,,\n"  # no rate
    )
    return path


def second_export(tmp: Path) -> Path:
    """Taken later: the 28th whole (the fleet's ten calls, at the old price: a price fault)."""
    path = tmp / "deepseek-2026-04-b.csv"
    path.write_text(HEADER + bill_row(DAYS[4], 10, BEFORE))
    return path


def rows_by_day(result: dict[str, Any], provider: str) -> dict[str, dict[str, Any]]:
    return {r["day"]: r for r in result["rows"] if r["provider"] == provider}


def test_import_through_a_served_hub_and_reconcile(tmp_path: Path) -> None:
    setup = make_hub(tmp_path)
    # April's calls kept raw (the hub does not store calls from before its retention)
    text = setup.config.read_text()
    assert "retain_days = 90" in text
    setup.config.write_text(text.replace("retain_days = 90", "retain_days = 3650") + RECONCILE)
    made = fleet_hub(
        tmp_path, "token", "create", "v", "--role", "viewer", "--config", str(setup.config)
    )
    assert made.returncode == 0, made.stderr
    proc = start_hub(setup, tmp_path)
    url = f"http://{load_hub_config(setup.config).api_listen}"
    hub = ServedHub(setup, proc, url, {"viewer": made.stdout.split()[-1]}, tmp_path)
    try:
        send(hub, deepseek_calls() + cursor_calls())
        export = first_export(tmp_path)
        # a viewer may read the reconciliation, not file bills
        body = {
            "name": "x.csv",
            "exported": "2026-04-28",
            "content_base64": base64.b64encode(export.read_bytes()).decode(),
        }
        refused = httpx.post(
            f"{url}/api/v1/reconcile/import", json=body, headers=hub.headers("viewer"), timeout=30
        )
        assert refused.status_code == 403 and "error" in refused.json()
        assert (
            httpx.post(f"{url}/api/v1/reconcile/import", json=body, timeout=30).status_code == 401
        )
        # bad requests: one-line JSON errors, nothing stored
        admin = {
            "Authorization": f"Bearer {(setup.config.parent / 'admin.token').read_text().strip()}"
        }
        for bad, said in (
            ({"content_base64": "not base64!"}, "content_base64 is not base64"),
            ({"rates": ["CNY=7"]}, "rates: 'CNY=7' is not CUR=RATE@YYYY-MM-DD"),
            ({"tz": "Mars/Olympus"}, "tz 'Mars/Olympus' is not an IANA zone"),
            ({"format": "xlsx"}, "format"),
            ({"content_base64": ""}, "x.csv: empty: no header"),
            ({"provider": "acme"}, "provider"),
            ({"name": "bill\n.csv"}, "name"),
        ):
            answer = httpx.post(
                f"{url}/api/v1/reconcile/import", json={**body, **bad}, headers=admin, timeout=30
            )
            assert answer.status_code == 422 and said in answer.json()["error"], answer.text

        done = hub.cli("reconcile", "import", str(export), "--exported", "2026-04-28")
        assert done.returncode == 1, done.stderr  # one row refused, the rest kept
        assert done.stderr.splitlines() == [
            f"fleet-hub reconcile import: {export}:7: currency: CNY with no rate: give fx_rate "
            "and fx_date in the row or --rate CNY=UNITS_PER_USD@YYYY-MM-DD (never counted as "
            "dollars without one)"
        ]
        assert "5 rows read, 1 refused, 5 written" in done.stdout
        assert "partial (shown, not alerted): deepseek 2026-04-28" in done.stdout
        again = hub.cli("reconcile", "import", str(export), "--exported", "2026-04-28", "--json")
        assert orjson.loads(again.stdout)["rows_written"] == 0  # the same export adds nothing
        assert len(orjson.loads(again.stdout)["unchanged_days"]) == 5

        asked = hub.cli("reconcile", "--since", "2026-04-24", "--until", "2026-04-29", "--json")
        assert asked.returncode == 0, asked.stderr
        result = orjson.loads(asked.stdout)
        days = rows_by_day(result, "deepseek")
        assert set(days) == {d.isoformat() for d in DAYS}  # not the 29th: no bill covers it
        right = days["2026-04-24"]
        assert right["cause"] is None and Decimal(right["billed"]["usd"]) == BEFORE
        assert Decimal(right["fleet"]["usd"]) == BEFORE  # the V3.2 price before the change
        assert days["2026-04-25"]["cause"] == "unseen_usage"
        cny = days["2026-04-26"]
        assert cny["cause"] is None and Decimal(cny["billed"]["usd"]) == AFTER
        assert cny["billed"]["original"] == {"CNY": "30.45"}
        assert cny["billed"]["rates"] == ["CNY 7.25/USD on 2026-04-26"]
        assert Decimal(cny["fleet"]["usd"]) == AFTER  # the V4 Flash price from the change on
        assert days["2026-04-27"]["cause"] == "price"
        assert "the tables' period from 2026-04-26" in days["2026-04-27"]["explanation"]
        assert days["2026-04-28"]["partial"]
        found = sorted(f["id"] for f in result["findings"])
        assert found == [
            "reconcile:deepseek:2026-04-25:deepseek-chat:sk-ds1:unseen_usage",
            "reconcile:deepseek:2026-04-27:deepseek-chat:sk-ds1:price",
        ]

        # the 28th alone, asked twice: the second answer is the first (readers share a run)
        last_day = ("reconcile", "--since", "2026-04-28", "--until", "2026-04-28", "--json")
        before = orjson.loads(hub.cli(*last_day).stdout)
        (held,) = rows_by_day(before, "deepseek").values()
        assert held["partial"] and not before["findings"]

        # the later export makes the 28th whole: it is compared, and its old price found
        later = hub.cli(
            "reconcile", "import", str(second_export(tmp_path)), "--exported", "2026-05-02"
        )
        assert later.returncode == 0, later.stderr
        assert "replaced: deepseek 2026-04-28" in later.stdout
        shown = hub.cli("reconcile", "--since", "2026-04-26", "--until", "2026-04-26").stdout
        assert "billed CNY 30.45 at CNY 7.25/USD on 2026-04-26" in shown
        result = orjson.loads(hub.cli(*last_day).stdout)  # not the answer from before it
        (last,) = rows_by_day(result, "deepseek").values()
        assert not last["partial"] and last["cause"] == "price"
        alerts = orjson.loads(hub.cli("alerts", "--json").stdout)["alerts"]
        assert sum(a["id"].startswith("reconcile:deepseek:2026-04-28") for a in alerts) == 1
        assert sum(a["kind"].startswith("reconcile") for a in alerts) == 3

        # Cursor: its on-demand dollars on a plan are overage; the included ones agree
        day = CURSOR_DAY.isoformat()
        asked = hub.cli("reconcile", "--provider", "cursor", "--since", day, "--until", day)
        assert asked.returncode == 0, asked.stderr
        assert "spark01/cur included" in asked.stdout and "overage" in asked.stdout
        result = orjson.loads(
            hub.cli("reconcile", "--provider", "cursor", "--since", day, "--json").stdout
        )
        by_key = {r["key"]: r for r in result["rows"]}
        assert set(by_key) == {"spark01/cur", "spark01/cur included"}
        assert by_key["spark01/cur"]["cause"] == "overage"
        assert Decimal(by_key["spark01/cur"]["billed"]["usd"]) == Decimal("5.40")
        assert Decimal(by_key["spark01/cur"]["fleet"]["subscription_included_usd"]) == Decimal(
            "5.40"
        )
        included = by_key["spark01/cur included"]
        assert included["cause"] is None and Decimal(included["billed"]["usd"]) == Decimal("5.40")
        assert [f["id"] for f in result["findings"]] == [
            f"reconcile:cursor:{day}:claude-4.5-sonnet:spark01/cur:overage"
        ]
    finally:
        stop(hub.proc)


def test_import_on_the_store_when_no_hub_serves(tmp_path: Path) -> None:
    setup = make_hub(tmp_path)
    setup.config.write_text(setup.config.read_text() + RECONCILE)
    Store.in_dir(setup.data_dir).close()  # a hub that served once and stopped
    export = tmp_path / "zhipu.csv"
    export.write_text(
        "day,model,key,input_tokens,output_tokens,amount,currency\n"
        "2026-04-24,glm-4.6,zk,1000000,1000000,19.14,CNY\n"
        "2026-04-24,glm-4.6,zk,1000000,1000000,not money,CNY\n"
    )
    config = str(setup.config)
    done = fleet_hub(
        tmp_path, "reconcile", "import", str(export), "--provider", "zhipu",
        "--rate", "CNY=7.25@2026-04-24", "--exported", "2026-04-30", "--config", config,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        f"fleet-hub reconcile import: {export}:3: amount: 'not money' is not an amount\n"
    )
    asked = fleet_hub(tmp_path, "reconcile", "--since", "2026-04-24", "--until", "2026-04-24",
                      "--provider", "zhipu", "--json", "--config", config)  # fmt: skip
    assert asked.returncode == 0, asked.stderr
    (row,) = orjson.loads(asked.stdout)["rows"]
    # no fleet profile maps to zhipu's key: billed usage no node saw
    assert row["key"] == "zk" and Decimal(row["billed"]["usd"]) == Decimal("2.64")
    assert row["cause"] == "unseen_usage"
    bad = fleet_hub(tmp_path, "reconcile", "import", str(tmp_path / "nope.csv"), "--config", config)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot read" in bad.stderr
    wrong = fleet_hub(
        tmp_path, "reconcile", "import", str(export), "--rate", "CNY=7", "--config", config
    )
    assert wrong.returncode == 2 and "CUR=RATE@YYYY-MM-DD" in wrong.stderr


def test_the_schedule_holds_imported_bills_with_no_provider_to_ask(tmp_path: Path) -> None:
    """A hub whose config names only an imported provider still reconciles on its schedule."""
    setup = make_hub(tmp_path)
    setup.config.write_text(setup.config.read_text() + RECONCILE.replace("= 0", "= 1"))
    proc = start_hub(setup, tmp_path)
    hub = ServedHub(setup, proc, "", {}, tmp_path)
    try:
        day = datetime.now(UTC).date() - timedelta(days=2)
        export = tmp_path / "bill.csv"
        export.write_text(HEADER + bill_row(day, 10, Decimal("4.20")))  # no node saw these
        done = hub.cli("reconcile", "import", str(export))  # exported today: the day is whole
        assert done.returncode == 0, done.stderr
        want = f"reconcile:deepseek:{day}:deepseek-chat:sk-ds1:unseen_usage"

        def raised() -> bool:
            alerts = orjson.loads(hub.cli("alerts", "--json").stdout)["alerts"]
            return want in {a["id"] for a in alerts}

        wait_for(raised, 30, "the scheduled run's finding", every=0.5)
    finally:
        stop(proc)
