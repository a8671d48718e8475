"""Claude Enterprise's analytics cost reports against a local server in their documented shapes
(`tests.analytics_api`): fractional cents, the 100-group cap (the rest from the ungrouped
total), cursor paging of users (an expired cursor: from the first page again, nothing counted
twice), a range longer than 31 days asked in pieces, a day past the data's watermark, Claude
Code alone, and a key without `read:analytics` as one line."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from hub.api.reconcile_http import HttpxTransport
from hub.reconcile import analytics
from hub.reconcile.analytics import BEYOND_CAP, Spend
from hub.reconcile.model import ConnectorError
from hub.reconcile.run import http_analytics, http_fetch, reconcile
from hub.reconcile.settings import ProviderSettings, parse_reconcile
from hub.reconcile.transport import Timing
from hub.report import build_hub_report
from hub.store import Store
from shared.config import ConfigError
from tests.analytics_api import ANALYTICS_KEY, COST, USER_COST, AnalyticsData, mount
from tests.provider_api import ANTHROPIC_KEY, ProviderApi, ProviderData, day_start

JUL1, D1, D2, D3 = date(2026, 7, 1), date(2026, 8, 1), date(2026, 8, 2), date(2026, 8, 3)
QUICK = Timing(first_wait=0.01)
CC = "claude_code"


def key_file(tmp: Path, name: str, key: str) -> Path:
    path = tmp / name
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def settings(tmp: Path, api: ProviderApi, analytics_key: str) -> ProviderSettings:
    return ProviderSettings(
        "anthropic",
        key_file(tmp, "admin.key", ANTHROPIC_KEY),
        api.url,
        timeout=10,
        retries=1,
        analytics=True,
        analytics_key_file=key_file(tmp, "analytics.key", analytics_key),
    )


def spend_data() -> tuple[AnalyticsData, Decimal, Decimal]:
    """105 models on D1 (5 beyond the cap), chat on every day (not Claude Code), 3 users on
    D1; returns the data, D1's Claude Code cents and the cents of the 5 models the cap drops."""
    data = AnalyticsData()
    rows: list[tuple[str, str, Decimal, Decimal]] = []
    for i in range(105):
        amount = Decimal(20_000 - i * 100) + Decimal("0.123456")  # fractional cents
        rows.append((CC, f"model-{i:03d}", amount, amount * Decimal("1.25")))
    rows.append(("chat", "model-000", Decimal(999_999), Decimal(999_999)))
    data.spend[D1] = rows
    data.spend[D2] = [(CC, "claude-opus-4-5", Decimal("41280.000000"), Decimal("51600.000000"))]
    data.spend[D3] = [(CC, "claude-opus-4-5", Decimal(100), Decimal(125))]
    data.spend[JUL1] = [(CC, "claude-opus-4-5", Decimal("12.345678"), Decimal("12.345678"))]
    data.users[D1] = [
        ("user_01Ann", "ann@example.com", CC, Decimal("30000.5"), Decimal("37500.625")),
        ("user_01Bob", "bob@example.com", CC, Decimal("20000"), Decimal("25000")),
        ("user_01Cy", "cy@example.com", CC, Decimal("100"), Decimal("125")),
        ("user_01Cy", "cy@example.com", "chat", Decimal("500"), Decimal("500")),
    ]
    # the watermark: noon of D3, so D3 is still being filled in
    data.refreshed_at = day_start(D3) + timedelta(hours=12)
    data.expire_cursors = 1  # the users' second page: 410, the listing starts again
    cc = [r for r in rows if r[0] == CC]
    return data, sum(r[2] for r in cc), sum(r[2] for r in cc[100:])


def test_claude_code_spend_per_day_model_and_user(tmp_path: Path) -> None:
    data, d1_cents, dropped_cents = spend_data()
    api = ProviderApi(ProviderData(), page_size=2)
    mount(api, data)
    api.faults[COST].append((529, {"retry-after": "0"}))  # overloaded once: tried again
    with api.running(), HttpxTransport() as transport:
        report = analytics.fetch(settings(tmp_path, api, ANALYTICS_KEY), transport, JUL1, D3, QUICK)

    # fractional cents to exact dollars; chat is not Claude Code
    assert report.totals[D1].amount == d1_cents / 100
    assert report.totals[D2] == Spend(Decimal("412.80"), Decimal("516.00"))
    assert report.totals[JUL1] == Spend(Decimal("0.12345678"), Decimal("0.12345678"))
    assert report.totals[date(2026, 7, 15)] == Spend()  # a day without use is $0, not absent
    # the cap: 100 models shown, the 5 it left out are the ungrouped total less those shown
    d1_models = {m: s for (day, m), s in report.models.items() if day == D1}
    assert len(d1_models) == 101 and report.capped_days == {D1}
    assert d1_models[BEYOND_CAP].amount == dropped_cents / 100
    assert sum((s.amount for s in d1_models.values()), Decimal(0)) == report.totals[D1].amount
    assert (D2, BEYOND_CAP) not in report.models
    # users, over pages of 2, Claude Code only, list price beside the billed amount
    assert [(a.user_id, a.email, a.spend) for a in report.actors] == [
        ("user_01Ann", "ann@example.com", Spend(Decimal("300.005"), Decimal("375.00625"))),
        ("user_01Bob", "bob@example.com", Spend(Decimal(200), Decimal(250))),
        ("user_01Cy", "cy@example.com", Spend(Decimal(1), Decimal("1.25"))),
    ]
    assert report.partial_days == {D3}  # past the data's watermark

    # 34 days asked as 31 (July) + 3; the documented parameters
    costs = [q for p, q, _ in api.requests if p == COST and "page" not in q]
    starts = sorted({q["starting_at"][0] for q in costs})
    assert starts == ["2026-07-01T00:00:00Z", "2026-08-01T00:00:00Z"]
    for query in costs:
        assert query["beta"] == ["true"] and query["products[]"] == [CC]
        assert query["bucket_width"] == ["1d"]
    assert sum(1 for q in costs if q.get("group_by[]") == ["model"]) == 2
    users = [q for p, q, _ in api.requests if p == USER_COST]
    # July's one page, and August's 3 users at 2 a page: twice the first (its cursor expired)
    assert [q.get("page") is None for q in users] == [True, True, False, True, False]
    assert all("ending_at" in q and q["bucket_width"] == ["1d"] for q in users)
    assert api.requests[-1][2]["x-api-key"] == ANALYTICS_KEY


def test_a_key_without_read_analytics_is_said_in_one_line(tmp_path: Path) -> None:
    api = ProviderApi(ProviderData())
    mount(api, AnalyticsData())
    with api.running(), HttpxTransport() as transport, pytest.raises(ConnectorError) as refused:
        analytics.fetch(settings(tmp_path, api, ANTHROPIC_KEY), transport, D1, D1, QUICK)
    said = str(refused.value)
    assert "\n" not in said and "lacks the read:analytics scope" in said
    assert str(tmp_path / "analytics.key") in said and ANTHROPIC_KEY not in said
    assert "does not have the read:analytics scope" in said  # the provider's own words


def test_before_2026_nothing_is_asked(tmp_path: Path) -> None:
    api = ProviderApi(ProviderData())
    mount(api, AnalyticsData())
    with api.running(), HttpxTransport() as transport:
        report = analytics.fetch(
            settings(tmp_path, api, ANALYTICS_KEY), transport, date(2025, 12, 1), date(2025, 12, 31)
        )
    assert report.totals == {} and api.requests == []


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"anthropic": {"key_file": "k", "analytics": "yes"}}, "analytics must be true or false"),
        ({"anthropic": {"key_file": "k", "analytics_key_file": ""}}, "analytics_key_file must"),
        ({"openai": {"key_file": "k", "analytics": True}}, "unknown key(s) in [reconcile.openai]"),
        ({"actors": [{"actor": "ann@example.com"}]}, "profiles must be a list"),
        ({"actors": [{"actor": "a b", "profiles": ["s/p"]}]}, "actor must be the user's email"),
        ({"actors": {"actor": "x"}}, "array of tables ([[reconcile.actors]])"),
    ],
)
def test_bad_analytics_config_names_the_key(tmp_path: Path, table: object, said: str) -> None:
    with pytest.raises(ConfigError) as bad:
        parse_reconcile("hub.toml", table, tmp_path)
    assert said in str(bad.value)


def test_analytics_settings_read(tmp_path: Path) -> None:
    parsed = parse_reconcile(
        "hub.toml",
        {
            "anthropic": {"key_file": "a.key", "analytics": True, "analytics_key_file": "b.key"},
            "actors": [{"actor": "ann@example.com", "profiles": ["spark0*/claude-ent"]}],
        },
        tmp_path,
    )
    anthropic = parsed.providers["anthropic"]
    assert anthropic.analytics and anthropic.analytics_key_file == tmp_path / "b.key"
    assert parsed.actor_of("spark02", "claude-ent") == "ann@example.com"
    assert parsed.actor_of("spark02", "claude") is None


def test_a_missing_key_file_costs_only_what_needs_it(tmp_path: Path) -> None:
    """A run with the analytics key file gone, and OpenAI's: one line each, Anthropic's admin
    reports still reconciled (a store on disk, empty, is the fleet's side)."""
    api = ProviderApi(ProviderData())
    mount(api, AnalyticsData())
    key_file(tmp_path, "admin.key", ANTHROPIC_KEY)
    table = {
        "anthropic": {
            "key_file": "admin.key",
            "base_url": api.url,
            "analytics": True,
            "analytics_key_file": "gone.key",
        },
        "openai": {"key_file": "gone-openai.key", "base_url": api.url},
    }
    parsed = parse_reconcile("hub.toml", table, tmp_path)
    (tmp_path / "data").mkdir()
    with api.running(), HttpxTransport() as transport, Store.in_dir(tmp_path / "data") as store:
        outcome = reconcile(
            parsed,
            lambda by, tz, first, last: build_hub_report(
                store, by=by, tz=tz, since=first, until=last
            ),
            http_fetch(transport),
            D1,
            D2,
            analytics_fetch=http_analytics(transport),
        )
    assert sorted(outcome.errors) == ["anthropic analytics", "openai"]
    said = outcome.errors["anthropic analytics"]
    assert "gone.key" in said and "does not exist" in said and "\n" not in said
    assert "gone-openai.key" in outcome.errors["openai"]  # a provider's key file: its alone
    assert api.count("/v1/organizations/usage_report/messages") > 0  # the rest went on
    assert outcome.claude_code is None and outcome.providers == ["anthropic", "openai"]
