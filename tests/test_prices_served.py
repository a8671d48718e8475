"""A wrong rate found, shown and corrected on a real `fleet-hub serve`: the provider bills Sonnet
4.5 output at $16/MTok where the tables say $15; `fleet-hub reconcile` names a price cause;
`fleet-hub prices check` shows the evidence (through the API, and from the store once no hub
serves) and writes the table to install; `fleet-hub prices install` puts it in effect, the
serving hub re-prices the stored calls of the affected day, `node-agent scan` prices the same
call alike, and the install is in the audit log."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from hub.config import load_hub_config
from shared.events import Agent, Tokens, UsageEvent
from tests.api_harness import ServedHub
from tests.fleet_harness import ROOT, child_env, make_hub, start_hub, stop, wait_for
from tests.provider_api import ANTHROPIC_KEY, ProviderApi, ProviderData, bill_anthropic_day

MODEL = "claude-sonnet-4-5-20250929"
TOKENS = Tokens(input=1000, output=20_000, cache_read=100_000)
CALLS = 10
YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
NOON = datetime.combine(YESTERDAY, datetime.min.time(), UTC) + timedelta(hours=12)
# per call: 1,000 x $3 + 20,000 x $15 (the tables) or $16 (the bill) + 100,000 x $0.30, per MTok
AT_TABLE = CALLS * Decimal("0.333")
AT_BILL = CALLS * Decimal("0.353")


def billed() -> ProviderData:
    data = ProviderData()
    bill_anthropic_day(
        data,
        YESTERDAY,
        MODEL,
        TOKENS,
        CALLS,
        (
            ("uncached_input_tokens", Decimal("0.3")),
            ("output_tokens", Decimal(32)),  # 20,000 at $16/MTok
            ("cache_read_input_tokens", Decimal(3)),
        ),
    )
    return data


def served(tmp: Path, api: ProviderApi) -> ServedHub:
    setup = make_hub(tmp)
    key = tmp / "anthropic.key"
    key.write_text(ANTHROPIC_KEY)
    key.chmod(0o600)
    setup.config.write_text(
        setup.config.read_text()
        + f"""
[reconcile]
interval = 0
threshold_usd = 0.01
[reconcile.anthropic]
key_file = "{key}"
base_url = "{api.url}"
[[reconcile.keys]]
provider = "anthropic"
key = "apikey_1"
profiles = ["spark01/key-a"]
"""
    )
    proc = start_hub(setup, tmp)
    url = f"http://{load_hub_config(setup.config).api_listen}"
    return ServedHub(setup, proc, url, {}, tmp)


def calls() -> list[UsageEvent]:
    return [
        UsageEvent(
            event_id=f"claude:spark01:msg_{i}:req_{i}",
            ts=NOON.timestamp() + i,
            agent=Agent.CLAUDE_CODE,
            model=MODEL,
            tokens=TOKENS,
            session_id="s1",
            machine="spark01",
            profile="key-a",
        )
        for i in range(CALLS)
    ]


def day_cost(hub: ServedHub) -> Decimal:
    done = hub.cli("report", "--json", "--since", str(YESTERDAY), "--until", str(YESTERDAY))
    assert done.returncode == 0, done.stderr
    rows = orjson.loads(done.stdout)["rows"]
    return sum((Decimal(r["cost"]["api_equivalent"]) for r in rows), Decimal(0))


def check(hub: ServedHub, *extra: str) -> tuple[int, list[dict[str, Any]]]:
    done = hub.cli("prices", "check", "--json", *extra)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, orjson.loads(done.stdout)


def scan_cost(tmp: Path, home: str) -> Decimal:
    """`node-agent scan` of one logged call of the same shape, yesterday (as this user)."""
    project = tmp / home / "projects" / "-work-app"
    project.mkdir(parents=True)
    line = {
        "type": "assistant",
        "sessionId": "9b1d2c9e-5a41-4f0e-9d3a-1f2e3d4c5b6a",
        "uuid": "e0a10000-0000-4000-8000-000000000001",
        "timestamp": NOON.isoformat().replace("+00:00", "Z"),
        "cwd": "/work/app",
        "requestId": "req_1",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": MODEL,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "usage": {
                "input_tokens": TOKENS.input,
                "output_tokens": TOKENS.output,
                "cache_read_input_tokens": TOKENS.cache_read,
                "cache_creation_input_tokens": 0,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            },
        },
    }
    (project / "9b1d2c9e-5a41-4f0e-9d3a-1f2e3d4c5b6a.jsonl").write_bytes(orjson.dumps(line) + b"\n")
    done = subprocess.run(
        [sys.executable, "-m", "node_agent.cli", "scan", "--json", str(tmp / home)],
        capture_output=True,
        text=True,
        env=child_env(tmp),
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = orjson.loads(done.stdout)["rows"]
    return sum((Decimal(r["cost"]["api_equivalent"]) for r in rows), Decimal(0))


def test_a_wrong_rate_is_shown_installed_and_the_day_repriced(tmp_path: Path) -> None:
    api = ProviderApi(billed())
    with api.running():
        hub = served(tmp_path, api)
        try:
            hub.send("spark01", calls())
            wait_for(lambda: day_cost(hub) == AT_TABLE, 30, "the calls priced")
            assert scan_cost(tmp_path, "before") * CALLS == AT_TABLE

            no_findings = check(hub)
            assert no_findings == (0, [])
            done = hub.cli("reconcile", "--since", str(YESTERDAY), "--until", str(YESTERDAY))
            assert done.returncode == 0, done.stderr
            assert "price" in done.stdout

            status, rows = check(hub)
            assert status == 1  # a rate in effect disagrees with the bill
            [output] = [r for r in rows if r["token_class"] == "output"]
            assert output["model"] == "claude-sonnet-4-5" and output["day"] == str(YESTERDAY)
            assert (output["table_rate"], output["rate_now"]) == ("15", "15")
            assert Decimal(output["implied_rate"]) == 16 and not output["in_effect"]
            assert all(r["in_effect"] for r in rows if r["token_class"] != "output")
            text = hub.cli("prices", "check")
            assert "claude-sonnet-4-5" in text.stdout and "from = " + str(YESTERDAY) in text.stdout

            fix = tmp_path / "sonnet-fix.toml"
            assert check(hub, "--out", str(fix))[0] == 1
            assert 'output = "16"' in fix.read_text() and 'reasoning = "16"' in fix.read_text()
            installed = hub.cli("prices", "install", str(fix))
            assert installed.returncode == 0, installed.stderr
            assert "claude-sonnet-4-5 from " + str(YESTERDAY) + ": output 15 -> 16" in (
                installed.stdout
            )

            # the serving hub takes it up and re-prices the day it covers
            wait_for(lambda: day_cost(hub) == AT_BILL, 30, "the day re-priced")
            assert scan_cost(tmp_path, "after") * CALLS == AT_BILL  # the scan prices alike
            status, rows = check(hub)
            assert status == 0 and all(r["in_effect"] for r in rows)
            assert {Path(r["file_now"]).name for r in rows} == {"sonnet-fix.toml"}
            audit = orjson.loads(hub.cli("audit", "--json").stdout)
            [entry] = [a for a in audit if a["action"] == "prices install"]
            assert entry["target"].endswith("sonnet-fix.toml")
            assert "output 15 -> 16" in entry["result"] and entry["who"]
        finally:
            stop(hub.proc)
        # no hub serves: from the store, the same evidence
        status, rows = check(hub)
        assert status == 0 and {r["token_class"] for r in rows} >= {"output"}
