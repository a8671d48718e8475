"""The HTTP API against a real `fleet-hub serve` subprocess on loopback: tokens and roles on
every endpoint, the report's rows equal the CLI's, nodes and audit, commands, the live stream,
/metrics parsed by prometheus_client and the Grafana file checked against it, and what the
CLI does beside a running hub."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hub.api.metrics import NAMES
from tests.api_harness import ServedHub, call, report_rows, serve_hub
from tests.fleet_harness import stop, wait_for

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana" / "fleetmeter.json"

# (method, path, body): every endpoint, and who may call it.
READ = {"viewer", "operator"}
EVERYONE = {"viewer", "operator", "agent"}
ENDPOINTS = [
    ("GET", "/api/v1/summary", None, READ),
    ("GET", "/api/v1/machines", None, EVERYONE),
    ("GET", "/api/v1/profiles", None, EVERYONE),
    ("GET", "/api/v1/sessions", None, EVERYONE),
    ("GET", "/api/v1/sessions/sess-spark01/series?bins=12", None, EVERYONE),
    ("GET", "/api/v1/runrate", None, READ),
    ("GET", "/api/v1/runrate?machine=spark01&bins=12", None, EVERYONE),
    ("GET", "/api/v1/profiles/spark01/max-a/history", None, EVERYONE),
    ("GET", "/api/v1/spend?by=model&period=week", None, READ),
    ("GET", "/api/v1/report?by=machine", None, READ),
    ("GET", "/api/v1/nodes", None, EVERYONE),
    ("GET", "/api/v1/audit", None, READ),
    ("GET", "/api/v1/feed", None, READ),
    ("POST", "/api/v1/commands/resume", {"machine": "nowhere", "pid": 1}, {"operator"}),
    ("GET", "/metrics", None, READ),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedHub]:
    served = serve_hub(tmp_path_factory.mktemp("api"))
    try:
        served.send("spark01", [call("spark01", n) for n in range(3)])
        served.send("spark02", [call("spark02", n, model="gpt-5") for n in range(2)])
        yield served
    finally:
        stop(served.proc)


def get(hub: ServedHub, path: str, role: str = "viewer") -> httpx.Response:
    return httpx.get(hub.url + path, headers=hub.headers(role), timeout=30)


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ENDPOINTS)
@pytest.mark.parametrize("role", ["none", "bad", "viewer", "operator", "agent"])
def test_every_endpoint_answers_each_role(
    hub: ServedHub, method: str, path: str, body: object, allowed: set[str], role: str
) -> None:
    headers = {"none": {}, "bad": {"Authorization": "Bearer fmt_not-a-token"}}.get(role)
    answer = httpx.request(
        method,
        hub.url + path,
        json=body,
        headers=hub.headers(role) if headers is None else headers,
        timeout=30,
    )
    expected = {"none": 401, "bad": 401}.get(role, 403 if role not in allowed else None)
    if expected is None:
        assert answer.status_code in (200, 404), answer.text  # 404: the made-up machine
    else:
        assert answer.status_code == expected, answer.text
        assert answer.json()["error"]  # a clear message, in JSON
        if expected == 401:
            assert answer.headers["www-authenticate"] == "Bearer"


def test_report_endpoint_answers_the_rows_of_the_cli(hub: ServedHub) -> None:
    api = get(hub, "/api/v1/report?by=machine")
    assert api.status_code == 200
    cli = hub.cli("report", "--json", "--by", "machine")
    assert cli.returncode == 0, cli.stderr
    assert report_rows(api.content) == report_rows(cli.stdout)
    machines = {row["machine"] for row in report_rows(api.content)}
    assert machines == {"spark01", "spark02"}


def test_report_with_bad_parameters_is_422_with_a_message(hub: ServedHub) -> None:
    for query, words in [
        ("by=colour", "colour"),
        ("tz=Mars/Base", "time zone"),
        ("since=2026-02-01&until=2026-01-01", "swap"),
        ("since=yesterday", "since"),
    ]:
        answer = get(hub, f"/api/v1/report?{query}")
        assert answer.status_code == 422, query
        assert words in answer.json()["error"], answer.text


def test_summary_is_the_headers_figures_in_exact_money(hub: ServedHub) -> None:
    summary = get(hub, "/api/v1/summary").json()
    assert summary["nodes"] == 2 and summary["nodes_online"] <= 2
    machines = get(hub, "/api/v1/machines").json()
    paid = sum(float(m["spend"]["cost"]["metered"] or 0) for m in machines)
    assert float(summary["metered"]) == pytest.approx(paid)
    assert re.fullmatch(r"\d+(\.\d+)?", summary["api_equivalent"])


def test_an_agent_token_sees_only_its_machine(hub: ServedHub) -> None:
    for path in ("/api/v1/machines", "/api/v1/nodes", "/api/v1/sessions"):
        rows = get(hub, path, "agent").json()
        assert rows and {r["machine"] for r in rows} == {"spark01"}, path
    assert {r["machine"] for r in get(hub, "/api/v1/machines").json()} == {"spark01", "spark02"}


def test_nodes_say_state_version_and_backlog(hub: ServedHub) -> None:
    rows = {r["machine"]: r for r in get(hub, "/api/v1/nodes").json()}
    assert rows["spark01"]["state"] in ("online", "stale")  # the harness's stale_after: 3 s
    assert rows["spark01"]["version"] == "0.1.0"
    assert rows["spark01"]["backlog"] == 0
    cli = hub.cli("nodes", "--json")
    assert cli.returncode == 0, cli.stderr
    assert {r["machine"] for r in orjson.loads(cli.stdout)} == {"spark01", "spark02"}
    text = hub.cli("nodes")
    assert re.search(r"^spark01  (online|stale) .* 0\.1\.0 +0$", text.stdout, re.M), text.stdout
    assert "/2 online" in text.stdout


def test_a_command_is_answered_and_audited_with_the_tokens_name(hub: ServedHub) -> None:
    # spark01 reported pid 4242 but no node listens for commands: "no answer" within 1 s.
    started = time.monotonic()
    answer = httpx.post(
        hub.url + "/api/v1/commands/pause",
        json={"machine": "spark01", "pid": 4242},
        headers=hub.headers("operator"),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"] == "no answer"
    assert time.monotonic() - started < 5
    unknown_pid = httpx.post(
        hub.url + "/api/v1/commands/kill",
        json={"machine": "spark01", "pid": 999},
        headers=hub.headers("operator"),
        timeout=30,
    )
    assert unknown_pid.status_code == 404 and "999" in unknown_pid.json()["error"]
    page = get(hub, "/api/v1/audit?limit=5").json()
    assert page["rows"][0]["who"] == "t-operator"
    assert page["rows"][0]["action"] == "pause"
    assert page["rows"][0]["result"].startswith("no answer")
    cli = hub.cli("audit", "--json", "--since", "2020-01-01")
    assert orjson.loads(cli.stdout)[0]["who"] == "t-operator"
    halt = hub.cli("resume", "spark01", "4242", "--token", hub.tokens["viewer"])
    assert halt.returncode == 2 and "role viewer" in halt.stderr


def test_the_stream_tells_a_batch_within_seconds(hub: ServedHub) -> None:
    with httpx.stream(
        "GET", hub.url + "/api/v1/stream", headers=hub.headers("viewer"), timeout=30
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == "event: hello"
        hub.send("spark02", [call("spark02", 100)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = next(lines)
            if line.startswith("data: ") and '"usage":1' in line:
                assert "spark02" in orjson.loads(line[6:])["machines"]
                return
    raise AssertionError("no update for the batch")


def test_metrics_parse_and_carry_the_fleet(hub: ServedHub) -> None:
    answer = get(hub, "/metrics")
    assert answer.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(answer.text)}
    exported = {name.removesuffix("_total") for name in NAMES}
    assert set(families) == exported
    spend = {
        (s.labels["dimension"], s.labels["key"], s.labels["class"]): s.value
        for s in families["fleetmeter_spend_today_usd"].samples
    }
    assert spend[("machine", "spark01", "api_equivalent")] > 0
    assert ("model", "gpt-5", "metered") in spend
    states = {
        s.labels["machine"]: s.labels["state"]
        for s in families["fleetmeter_node_state"].samples
        if s.value == 1
    }
    assert set(states) == {"spark01", "spark02"}  # one state each
    ingested = families["fleetmeter_events_ingested"].samples[0].value
    assert ingested >= 5


def test_the_grafana_dashboard_queries_only_exported_metrics() -> None:
    dashboard = orjson.loads(GRAFANA.read_bytes())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    assert exprs
    used = {m for expr in exprs for m in re.findall(r"fleetmeter_[a-z0-9_]+", expr)}
    assert used <= set(NAMES), used - set(NAMES)
    assert len(used) >= 8  # spend, tokens, nodes, ingest, backlog, rejects, commands...


def test_a_token_created_or_revoked_while_serving_counts_at_once(hub: ServedHub) -> None:
    made = hub.cli("token", "create", "ci-bot", "--role", "viewer")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx.get(hub.url + "/api/v1/nodes", headers=headers).status_code == 200
    listed = hub.cli("token", "list")
    assert "ci-bot  viewer" in listed.stdout and token not in listed.stdout
    assert hub.cli("token", "revoke", "ci-bot").returncode == 0
    assert httpx.get(hub.url + "/api/v1/nodes", headers=headers).status_code == 401
    tokens_file = hub.setup.config.parent / "api-tokens.json"
    assert token not in tokens_file.read_text()  # only the hash is stored
    assert tokens_file.stat().st_mode & 0o077 == 0


def test_the_openapi_document_lists_the_endpoints(hub: ServedHub) -> None:
    doc = httpx.get(hub.url + "/api/v1/openapi.json").json()
    for path in ("/api/v1/report", "/api/v1/stream", "/api/v1/commands/{action}", "/metrics"):
        assert path in doc["paths"]
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_errors_are_json_never_a_traceback(hub: ServedHub) -> None:
    missing = httpx.get(hub.url + "/api/v2/summary")
    assert missing.status_code == 404 and "/api/v1/" in missing.json()["error"]
    bad_body = httpx.post(
        hub.url + "/api/v1/commands/pause",
        content=b"{not json",
        headers={**hub.headers("operator"), "Content-Type": "application/json"},
    )
    assert bad_body.status_code == 422 and "Traceback" not in bad_body.text


def test_the_dashboard_attaches_to_a_hub_serving_its_config(hub: ServedHub) -> None:
    """It attaches (tests/test_tui_attached_tmux.py shows it on a terminal): with a token the
    hub does not know, that is one line and exit 2, not an embedded second hub."""
    done = hub.cli("--token", "fmt_not-a-token")
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "token" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_serve_fails_with_one_clear_line(hub: ServedHub) -> None:
    done = hub.cli("serve", timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "is another fleet-hub" in done.stderr


def test_sigterm_stops_the_service_with_everything_committed(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)
    try:
        served.send("spark03", [call("spark03", n) for n in range(4)])
        with httpx.stream(
            "GET", served.url + "/api/v1/stream", headers=served.headers("viewer"), timeout=30
        ) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "event: hello"
            served.proc.send_signal(signal.SIGTERM)
            ended = time.monotonic()
            assert list(lines)[-1:] in ([], [""])  # the stream ends whole, not cut
            assert time.monotonic() - ended < 2.5  # not cut after the grace period either
    finally:
        assert stop(served.proc, signal.SIGTERM) == 0
    report = served.cli("report", "--json", "--by", "machine")  # no hub: from the store
    assert report.returncode == 0, report.stderr
    assert [r["calls"] for r in report_rows(report.stdout)] == [4]
    wait_for(
        lambda: "Traceback" not in (served.setup.config.parent / "hub.log").read_text(),
        1,
        "a clean log",
    )


def test_a_damaged_tokens_file_is_503_with_what_to_do(tmp_path: Path) -> None:
    served = serve_hub(tmp_path)
    try:
        tokens = served.setup.config.parent / "api-tokens.json"
        tokens.write_text("{not json")
        answer = httpx.get(served.url + "/api/v1/nodes", headers=served.headers("viewer"))
        assert answer.status_code == 503
        assert "move it aside" in answer.json()["error"]
    finally:
        stop(served.proc)


def test_the_sparklines_and_a_sessions_series_in_exact_money(hub: ServedHub) -> None:
    bins = get(hub, "/api/v1/runrate?machine=spark01&bins=12").json()
    assert len(bins) == 12 and sum(Decimal(b) for b in bins) > 0
    series = get(hub, "/api/v1/sessions/sess-spark01/series?bins=4", "agent").json()
    assert len(series["bins"]) == 4 and sum(Decimal(b) for b in series["bins"]) > 0
    other = get(hub, "/api/v1/sessions/sess-spark02/series", "agent")
    assert other.status_code == 404  # the agent token is bound to spark01
    assert get(hub, "/api/v1/runrate?profile=x").status_code == 422
