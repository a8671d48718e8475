"""`GET /api/v1/reconcile` and `fleet-hub reconcile` on a real served hub: tokens, bad input
as JSON errors, a day still being finalised (shown, not alerted), a provider that cannot be
reached (the rest still shown, exit 1), and config errors as one line (exit 2)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from hub.config import load_hub_config
from hub.reconcile.anthropic import USAGE as USAGE_PATH
from shared.events import Agent, Tokens, UsageEvent
from tests.api_harness import ServedHub, fleet_hub
from tests.fleet_harness import free_port, make_hub, start_hub, stop
from tests.provider_api import (
    ANTHROPIC_KEY,
    LIST_CENTS,
    ProviderApi,
    ProviderData,
    bill_anthropic_day,
)

MODEL = "claude-sonnet-4-5-20250929"
TOKENS = Tokens(input=1000, output=20_000, cache_read=100_000)  # $0.333 a call at list


def served(tmp: Path, extra: str) -> ServedHub:
    setup = make_hub(tmp)
    setup.config.write_text(setup.config.read_text() + extra)
    done = fleet_hub(tmp, "token", "create", "v", "--role", "viewer", "--config", str(setup.config))
    assert done.returncode == 0, done.stderr
    proc = start_hub(setup, tmp)
    url = f"http://{load_hub_config(setup.config).api_listen}"
    return ServedHub(setup, proc, url, {"viewer": done.stdout.split()[-1]}, tmp)


def calls(n: int) -> list[UsageEvent]:
    return [
        UsageEvent(
            event_id=f"claude:spark01:msg_{i}:req_{i}",
            ts=time.time(),
            agent=Agent.CLAUDE_CODE,
            model=MODEL,
            tokens=TOKENS,
            session_id="s1",
            machine="spark01",
            profile="key-a",
        )
        for i in range(n)
    ]


def today_billed(times: int) -> ProviderData:
    """Today's report: `times` as many calls as the fleet made (10), at list price."""
    today = datetime.now(UTC).date()
    data = ProviderData()
    n = 10 * times
    bill_anthropic_day(data, today, MODEL, TOKENS, n, LIST_CENTS)
    return data


def config(tmp: Path, api: ProviderApi) -> str:
    key = tmp / "anthropic.key"
    key.write_text(ANTHROPIC_KEY)
    key.chmod(0o600)
    (tmp / "openai.key").write_text("sk-admin-x")
    (tmp / "openai.key").chmod(0o600)
    return f"""
[reconcile]
interval = 0
[reconcile.anthropic]
key_file = "{key}"
base_url = "{api.url}"
[reconcile.openai]
key_file = "{tmp / "openai.key"}"
base_url = "http://127.0.0.1:{free_port()}"
retries = 0
[[reconcile.keys]]
provider = "anthropic"
key = "apikey_1"
profiles = ["spark01/key-a"]
"""


def test_the_reconcile_endpoint_and_command(tmp_path: Path) -> None:
    api = ProviderApi(today_billed(times=2))
    with api.running():
        hub = served(tmp_path, config(tmp_path, api))
        try:
            hub.send("spark01", calls(10))
            endpoint = f"{hub.url}/api/v1/reconcile"
            refused = httpx.get(endpoint, timeout=30)
            assert refused.status_code == 401 and "error" in refused.json()
            for query in (
                "since=2026-13-01",
                "since=2026-12-05&until=2026-12-01",
                "since=2999-01-01",
            ):
                bad = httpx.get(f"{endpoint}?{query}", headers=hub.headers("viewer"), timeout=30)
                assert bad.status_code == 422 and bad.json()["error"], query

            answer = httpx.get(endpoint, headers=hub.headers("viewer"), timeout=60)
            assert answer.status_code == 200, answer.text
            asked = api.count(USAGE_PATH)
            again = httpx.get(endpoint, headers=hub.headers("viewer"), timeout=60)
            assert again.json() == answer.json()
            assert api.count(USAGE_PATH) == asked > 0  # readers share a run: no second round
            result = answer.json()
            (row,) = [r for r in result["rows"] if r["key"] == "apikey_1"]
            # the provider billed twice the fleet's calls, but today is not final: shown, not
            # alerted
            assert row["partial"] and row["cause"] == "unseen_usage"
            assert Decimal(row["billed"]["usd"]) == 2 * Decimal(row["fleet"]["usd"]) > 0
            assert result["findings"] == []
            assert "openai" in result["errors"] and "anthropic" not in result["errors"]

            later = hub.cli("reconcile", "--since", "2999-01-01")
            assert later.returncode == 2 and "is after --until" in later.stderr
            done = hub.cli("reconcile")
            assert done.returncode == 1  # a provider could not be asked
            assert done.stderr.count("\n") == 1 and "fleet-hub reconcile: openai:" in done.stderr
            assert "apikey_1" in done.stdout and "unseen_usage" in done.stdout
            alerts = orjson.loads(hub.cli("alerts", "--json").stdout)["alerts"]
            assert not [a for a in alerts if a["kind"].startswith("reconcile")]
        finally:
            stop(hub.proc)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        ("", "names no provider to ask: add [reconcile.anthropic]"),
        ("[reconcile]\ndays = 0\n", "reconcile.days must be a whole number from 1 to 31"),
        (
            '[reconcile.openai]\nkey_file = "k"\nbase_url = "api.openai.com"\n',
            "reconcile.openai.base_url must be an http(s) URL",
        ),
    ],
)
def test_bad_reconcile_config_is_one_line_and_exit_2(tmp_path: Path, extra: str, said: str) -> None:
    setup = make_hub(tmp_path)
    setup.config.write_text(setup.config.read_text() + extra)
    done = fleet_hub(tmp_path, "reconcile", "--config", str(setup.config))
    assert done.returncode == 2, done.stderr
    assert said in done.stderr and done.stderr.count("\n") == 1, done.stderr


def test_no_provider_is_said_through_a_running_hub_too(tmp_path: Path) -> None:
    """With a hub serving the config, as without one: not an empty table and exit 0."""
    hub = served(tmp_path, "")
    try:
        done = hub.cli("reconcile")
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert "names no provider to ask: add [reconcile.anthropic]" in done.stderr
        assert done.stderr.count("\n") == 1 and done.stdout == ""
    finally:
        stop(hub.proc)
