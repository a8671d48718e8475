"""The hub MCP's `my_usage` for a session tells its cache-read ratio and run-rate, in words and
in its structured content, as the node's MCP defines them (`shared.session_rates`): through the
SDK's client against a real `fleet-hub serve`, before and after the hub restarts."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

from msgspec.structs import replace

from pricing import PriceBook
from shared.events import Tokens, UsageEvent
from tests.api_harness import call, serve_hub
from tests.budget_harness import restart
from tests.fleet_harness import stop
from tests.test_hub_mcp import session_for, text


def _calls(now: float) -> list[UsageEvent]:
    """sess-spark01: two calls two hours ago (outside the run-rate's hour), three recent."""
    out = []
    for n, age in enumerate((7200.0, 7000.0, 1500.0, 600.0, 30.0)):
        tokens = Tokens(input=1000 + n, output=500, cache_read=2000 * n, cache_write_5m=300)
        out.append(replace(call("spark01", n), ts=now - age, tokens=tokens))
    return out


def _expected(calls: list[UsageEvent], now: float) -> tuple[float, Decimal]:
    prompt = sum(c.tokens.input + c.tokens.cache_read + c.tokens.cache_write_5m for c in calls)
    ratio = round(sum(c.tokens.cache_read for c in calls) / prompt, 4)
    book = PriceBook.default()
    recent = sum((book.price(c).api_equivalent or Decimal(0)) for c in calls if c.ts > now - 3500)
    return ratio, recent  # the session is 2 h old: its rate is over the whole hour


async def test_my_usage_tells_the_cache_read_ratio_and_run_rate(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)
    try:
        made = served.cli(
            "token", "create", "t-agent-session", "--role", "agent",
            "--machine", "spark01", "--session", "sess-spark01",
        )  # fmt: skip
        assert made.returncode == 0, made.stderr
        served.tokens["agent-session"] = made.stdout.split()[-1]
        now = time.time()
        calls = _calls(now)
        served.send("spark01", calls)
        ratio, rate = _expected(calls, now)
        assert 0 < ratio < 1 and rate > 0
        for restarted in (False, True):
            if restarted:  # the figures come back from the store
                restart(served, tmp_path)
            _, (usage,) = await session_for(served, "agent-session", [("my_usage", {})])
            assert not usage.isError, text(usage)
            (row,) = (usage.structuredContent or {})["sessions"]
            assert row["cache_read_ratio"] == ratio
            assert Decimal(row["run_rate_per_hour"]) == rate.quantize(Decimal("0.0001"))
            assert f"Cache-read ratio {ratio:.0%}" in text(usage)
            assert f"Run-rate ${Decimal(row['run_rate_per_hour'])}/h" in text(usage)
    finally:
        stop(served.proc)
