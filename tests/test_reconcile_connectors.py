"""The Anthropic and OpenAI connectors against a local server answering in the documented
shapes: pagination, a 429 and a 500 on the way, a day still being finalised, cents against
dollars, counts as strings and as numbers, and a key without the admin scope."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from hub.api.reconcile_http import HttpxTransport
from hub.reconcile import anthropic, openai
from hub.reconcile.billed import NO_KEY, billed_figures
from hub.reconcile.model import ConnectorError
from hub.reconcile.settings import ProviderSettings, parse_reconcile
from hub.reconcile.transport import Timing
from shared.config import ConfigError
from shared.events import Tokens
from tests.provider_api import ANTHROPIC_KEY, OPENAI_KEY, ProviderApi, ProviderData

D1, D2, D3 = date(2026, 8, 1), date(2026, 8, 2), date(2026, 8, 3)
QUICK = Timing(first_wait=0.01)  # retries wait 10 ms, 20 ms, ...


def key_file(tmp: Path, name: str, key: str) -> Path:
    path = tmp / f"{name}.key"
    path.write_text(key + "\n")
    path.chmod(0o600)
    return path


def settings(
    tmp: Path, name: str, api: ProviderApi, key: str, retries: int = 3
) -> ProviderSettings:
    return ProviderSettings(name, key_file(tmp, name, key), api.url, timeout=10, retries=retries)


def anthropic_data(today: date) -> ProviderData:
    data = ProviderData()
    usage = {
        "api_key_id": "apikey_01AbC",
        "workspace_id": "wrkspc_01XyZ",
        "model": "claude-sonnet-4-5-20250929",
        "uncached_input_tokens": 18342,
        "cache_creation": {
            "ephemeral_5m_input_tokens": "1000",
            "ephemeral_1h_input_tokens": 412880,
        },
        "cache_read_input_tokens": "9183220",  # a string, as some proxies send
        "output_tokens": 151204.0,  # an integral float
        "server_tool_use": {"web_search_requests": 4},
    }
    for day in (D1, D2, D3, today):
        data.anthropic_usage[day] = [usage]
        data.anthropic_cost[day] = [
            {
                "amount": "275.4966",  # cents: $2.754966
                "currency": "USD",
                "workspace_id": "wrkspc_01XyZ",
                "description": "Claude Sonnet 4.5 Usage - Cache Read",
                "cost_type": "tokens",
                "token_type": "cache_read_input_tokens",
                "model": "claude-sonnet-4-5-20250929",
            },
            {
                "amount": 400,  # a number, still cents
                "currency": "USD",
                "workspace_id": "wrkspc_01XyZ",
                "description": "Web Search Usage",
                "cost_type": "web_search",
                "token_type": None,
                "model": None,
            },
        ]
    return data


def test_anthropic_reports_paged_retried_and_in_dollars(tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    api = ProviderApi(anthropic_data(today), page_size=2)
    api.faults["/v1/organizations/usage_report/messages"].append((429, {"retry-after": "0"}))
    api.faults["/v1/organizations/cost_report"].append((500, {}))
    with api.running(), HttpxTransport() as transport:
        report = anthropic.fetch(
            settings(tmp_path, "anthropic", api, ANTHROPIC_KEY), transport, D1, D3, QUICK
        )
        report_today = anthropic.fetch(
            settings(tmp_path, "anthropic", api, ANTHROPIC_KEY), transport, today, today
        )
    # 3 days at 2 per page: 2 pages each, plus the retried 429 and 500
    assert api.count("/v1/organizations/usage_report/messages") == 3 + 1
    assert api.count("/v1/organizations/cost_report") == 3 + 1
    assert [u.day for u in report.usage] == [D1, D2, D3]
    line = report.usage[0]
    assert (line.key, line.scope, line.model) == (
        "apikey_01AbC",
        "wrkspc_01XyZ",
        "claude-sonnet-4-5-20250929",
    )
    assert line.tokens == Tokens(
        input=18342,
        output=151204,
        cache_read=9183220,
        cache_write_5m=1000,
        cache_write_1h=412880,
        web_search_requests=4,
    )
    read, search = report.costs[:2]
    assert read.amount == Decimal("2.754966")  # cents, not dollars
    assert (read.token_class, read.model) == ("cache_read", "claude-sonnet-4-5-20250929")
    assert (search.token_class, search.amount) == ("web_search", Decimal(4))
    assert report.partial_days == set()
    assert report_today.partial_days == {today}  # its bucket has not ended
    path, query, headers = api.requests[-1]
    assert headers["x-api-key"] == ANTHROPIC_KEY and headers["anthropic-version"] == "2023-06-01"
    assert query["bucket_width"] == ["1d"]
    assert query["group_by[]"] == ["workspace_id", "description"]


def openai_data(today: date) -> ProviderData:
    data = ProviderData()
    for day in (D1, D2, D3, today):
        data.openai_usage[day] = [
            {
                "object": "organization.usage.completions.result",
                "input_tokens": 5200000,  # includes the cached ones
                "input_cached_tokens": "4100000",
                "output_tokens": 210000,
                "num_model_requests": 812,
                "project_id": "proj_fleet01",
                "api_key_id": "key_abc123",
                "model": "gpt-5-codex",
            }
        ]
        data.openai_costs[day] = [
            {
                "object": "organization.costs.result",
                "amount": {"value": 5.125, "currency": "usd"},  # dollars, a number
                "line_item": "gpt-5-codex, input",
                "project_id": "proj_fleet01",
            },
            {
                "object": "organization.costs.result",
                "amount": {"value": "0.5125", "currency": "usd"},  # a string
                "line_item": "gpt-5-codex, cached input",
                "project_id": "proj_fleet01",
            },
            {
                "object": "organization.costs.result",
                "amount": {"value": 1, "currency": "usd"},
                "line_item": "File search tool calls",
                "project_id": "proj_fleet01",
            },
        ]
    return data


def test_openai_reports_paged_retried_and_disjoint(tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    api = ProviderApi(openai_data(today), page_size=2)
    api.faults["/v1/organization/usage/completions"].append((500, {}))
    api.faults["/v1/organization/costs"].append((429, {"retry-after": "0.01"}))
    with api.running(), HttpxTransport() as transport:
        report = openai.fetch(
            settings(tmp_path, "openai", api, OPENAI_KEY), transport, D1, today, QUICK
        )
    days = (today - D1).days + 1
    pages = -(-days // 2)
    assert api.count("/v1/organization/usage/completions") == pages + 1
    assert api.count("/v1/organization/costs") == pages + 1
    assert [u.day for u in report.usage] == [D1, D2, D3, today]
    assert report.usage[0].tokens == Tokens(input=1100000, cache_read=4100000, output=210000)
    first = [c for c in report.costs if c.day == D1]
    assert [(c.token_class, c.model, c.amount) for c in first] == [
        ("input", "gpt-5-codex", Decimal("5.125")),  # dollars as they come
        ("cache_read", "gpt-5-codex", Decimal("0.5125")),
        (None, None, Decimal(1)),
    ]
    assert report.partial_days == {today}
    _, query, headers = api.requests[-1]
    assert headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert query["group_by"] == ["project_id", "line_item"]


def test_a_key_without_the_admin_scope_is_said_in_words(tmp_path: Path) -> None:
    api = ProviderApi(anthropic_data(D3))
    ordinary = "sk-ant-api03-ordinary"
    with api.running(), HttpxTransport() as transport:
        with pytest.raises(ConnectorError) as caught:
            anthropic.fetch(settings(tmp_path, "anthropic", api, ordinary), transport, D1, D1)
        with pytest.raises(ConnectorError) as refused:
            openai.fetch(settings(tmp_path, "openai", api, "sk-wrong"), transport, D1, D1)
    message = str(caught.value)
    assert "lacks the admin scope" in message and "anthropic.key" in message
    assert ordinary not in message
    assert "was refused" in str(refused.value) and "sk-wrong" not in str(refused.value)


def test_a_provider_that_keeps_failing_is_given_up_on(tmp_path: Path) -> None:
    api = ProviderApi(openai_data(D3))
    api.faults["/v1/organization/usage/completions"].extend([(503, {})] * 3)
    with api.running(), HttpxTransport() as transport, pytest.raises(ConnectorError) as caught:
        openai.fetch(
            settings(tmp_path, "openai", api, OPENAI_KEY, retries=2),
            transport,
            D1,
            D1,
            QUICK,
        )
    assert "HTTP 503 after 3 tries" in str(caught.value)
    assert api.count("/v1/organization/usage/completions") == 3


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    api = ProviderApi(ProviderData())
    config = settings(tmp_path, "anthropic", api, ANTHROPIC_KEY)
    config.key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600") as caught:
        config.read_key()
    assert ANTHROPIC_KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"days": 0}, "reconcile.days must be a whole number from 1 to 31"),
        ({"interval": "hourly"}, "reconcile.interval must be a number of seconds"),
        ({"fleet_tz": "Mars/Base"}, "is not an IANA zone"),
        ({"anthropic": {}}, "[reconcile.anthropic] needs key_file"),
        ({"openai": {"key_file": "k", "base_url": "ftp://x"}}, "base_url must be an http(s) URL"),
        ({"keys": [{"provider": "acme", "key": "k", "profiles": ["a/b"]}]}, "provider must be"),
        ({"keys": [{"provider": "openai", "key": "k", "profiles": ["nomachine"]}]}, "MACHINE/"),
        ({"colour": 1}, "unknown key(s) in [reconcile]: colour"),
    ],
)
def test_bad_reconcile_settings_are_one_clear_line(table: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_reconcile("hub.toml", table, Path("/etc/fleetmeter"))
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_settings_map_profiles_to_keys() -> None:
    parsed = parse_reconcile(
        "hub.toml",
        {
            "anthropic": {"key_file": "a.key"},
            "keys": [{"provider": "anthropic", "key": "apikey_1", "profiles": ["spark0*/claude"]}],
        },
        Path("/etc/fleetmeter"),
    )
    assert parsed.providers["anthropic"].key_file == Path("/etc/fleetmeter/a.key")
    assert parsed.providers["anthropic"].base_url == "https://api.anthropic.com"
    mapping = parsed.mapping_of("spark02", "claude")
    assert mapping is not None and mapping.key == "apikey_1"
    assert parsed.mapping_of("spark02", "codex") is None
    assert timedelta(seconds=parsed.interval) == timedelta(hours=1)


def test_dollars_are_shared_out_to_keys_that_paid_the_same_rate(tmp_path: Path) -> None:
    """Two keys of one workspace: A's calls over 200k tokens (premium rates), B's under. The
    cost report has dollars per workspace and tier only; each key gets its own tier's."""
    model = "claude-sonnet-4-5-20250929"

    def usage(key: str, window: str, searches: int) -> dict[str, object]:
        return {
            "api_key_id": key,
            "workspace_id": "wrkspc_1",
            "model": model,
            "context_window": window,
            "service_tier": "standard",
            "uncached_input_tokens": 100_000,
            "output_tokens": 10_000,
            "server_tool_use": {"web_search_requests": searches},
        }

    def cost(
        cents: str, token_type: str | None, window: str | None, **kw: object
    ) -> dict[str, object]:
        return {
            "amount": cents,
            "currency": "USD",
            "workspace_id": "wrkspc_1",
            "description": kw.get("description", f"{model} {token_type} {window}"),
            "cost_type": kw.get("cost_type", "tokens"),
            "token_type": token_type,
            "model": None if token_type is None else model,
            "context_window": window,
            "service_tier": None if window is None else "standard",
        }

    data = ProviderData()
    haiku = "claude-haiku-4-5-20251001"  # B's usage here names no tier, its cost does
    untiered = {"api_key_id": "apikey_B", "workspace_id": "wrkspc_1", "model": haiku}
    data.anthropic_usage[D1] = [
        usage("apikey_A", "200k-1M", 2),
        usage("apikey_B", "0-200k", 0),
        {**untiered, "output_tokens": 1000},
    ]
    data.anthropic_cost[D1] = [
        cost("60", "uncached_input_tokens", "200k-1M"),  # 100k at $6/MTok
        cost("30", "uncached_input_tokens", "0-200k"),  # 100k at $3/MTok
        cost("22.5", "output_tokens", "200k-1M"),  # 10k at $22.50/MTok
        cost("15", "output_tokens", "0-200k"),
        cost("2", None, None, cost_type="web_search", description="Web Search Usage"),
        cost("5", None, None, cost_type="code_execution", description="Code Execution Usage"),
        {**cost("0.5", "output_tokens", "0-200k"), "model": haiku},
    ]
    api = ProviderApi(data)
    with api.running(), HttpxTransport() as transport:
        report = anthropic.fetch(
            settings(tmp_path, "anthropic", api, ANTHROPIC_KEY), transport, D1, D1
        )
    figures = billed_figures(report)
    a = figures[("anthropic", D1, model, "apikey_A")]
    b = figures[("anthropic", D1, model, "apikey_B")]
    assert a.by_class == {
        "input": Decimal("0.6"),
        "output": Decimal("0.225"),
        "web_search": Decimal("0.02"),
    }
    assert b.by_class == {"input": Decimal("0.3"), "output": Decimal("0.15")}
    assert figures[("anthropic", D1, haiku, "apikey_B")].usd == Decimal("0.005")
    code = figures[("anthropic", D1, "Code Execution Usage", NO_KEY)]
    assert code.usd == Decimal("0.05") and code.other == ["Code Execution Usage"]
    _, query, _ = next(r for r in api.requests if r[0].endswith("usage_report/messages"))
    assert {"context_window", "service_tier"} <= set(query["group_by[]"])
