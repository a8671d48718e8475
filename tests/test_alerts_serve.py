"""Alerts through a real `fleet-hub serve`: the CLI and the API (roles, ack, silence, retry,
test alerts), /metrics, the store read when no hub runs, and delivery to a local receiver
that fails half the requests while the hub is killed (-9) again and again."""

from __future__ import annotations

import random
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import tomlkit
from prometheus_client.parser import text_string_to_metric_families

from hub.alerts.signing import webhook_id
from hub.config import load_hub_config
from tests.alert_receiver import Receiver, chaos, write_secret
from tests.api_harness import ServedHub, call, fleet_hub
from tests.fleet_harness import HubSetup, child_env, make_hub, stop, wait_for

ROOT = Path(__file__).resolve().parent.parent


class AlertHub:
    def __init__(self, tmp: Path, receiver_timeout: float = 1.0) -> None:
        self.tmp = tmp
        self.setup: HubSetup = make_hub(tmp)
        secret = write_secret(self.setup.config.parent / "hook.secret")
        self.receiver = Receiver(secret, client_timeout=receiver_timeout).start()
        doc = tomlkit.parse(self.setup.config.read_text())
        doc["alerts"] = {
            "retry_first": 0.1,
            "retry_max": 0.5,
            "sinks": [
                {
                    "name": "hook",
                    "type": "webhook",
                    "url": self.receiver.url,
                    "secret_file": "hook.secret",
                    "timeout": receiver_timeout,
                }
            ],
        }
        self.setup.config.write_text(tomlkit.dumps(doc))
        self.api = f"http://{load_hub_config(self.setup.config).api_listen}"
        self.tokens = {role: self._token(role) for role in ("viewer", "operator")}
        self.proc: subprocess.Popen[bytes] | None = None

    def _token(self, role: str) -> str:
        done = self.cli("token", "create", f"t-{role}", "--role", role)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()[-1]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return fleet_hub(self.tmp, *args, "--config", str(self.setup.config))

    def start(self) -> None:
        log = open(self.setup.config.parent / "hub.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli", "serve", "--config", str(self.setup.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(self.tmp),
        )
        wait_for(self.alive, 30, "the hub's API")

    def alive(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, (self.setup.config.parent / "hub.log").read_text()
        try:
            return httpx.get(f"{self.api}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def call(self, method: str, path: str, role: str = "operator", **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"}
        return httpx.request(method, self.api + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]

    def alerts(self) -> list[dict[str, object]]:
        done = self.cli("alerts", "--json", "--limit", "1000")
        assert done.returncode == 0, done.stderr
        rows: list[dict[str, object]] = orjson.loads(done.stdout)["alerts"]
        return rows


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[AlertHub]:
    alert_hub = AlertHub(tmp_path)
    alert_hub.start()
    yield alert_hub
    if alert_hub.proc is not None:
        stop(alert_hub.proc)
    alert_hub.receiver.stop()


def test_alerts_through_the_cli_and_the_api_then_from_the_store(hub: AlertHub) -> None:
    raised = hub.cli("alerts", "test", "--severity", "warning")
    assert raised.returncode == 0, raised.stderr
    assert raised.stdout.startswith("raised test alert test:") and "hook" in raised.stdout
    first = raised.stdout.split()[3]
    wait_for(lambda: first in hub.receiver.arrived(), 20, "the test alert")
    wait_for(lambda: hub.alerts()[0]["state"] == "delivered", 20, "its delivery settled")
    row = hub.alerts()[0]
    assert {k: row[k] for k in ("id", "kind", "scope", "severity")} == {
        "id": first,
        "kind": "test",
        "scope": "fleet",
        "severity": "warning",
    }
    assert row["text"] and row["deliveries"][0]["state"] == "delivered"  # type: ignore[index]

    # roles: a viewer reads, only an operator acts; the same id twice is one alert
    assert hub.call("GET", "/api/v1/alerts", "viewer").status_code == 200
    forbidden = hub.call("POST", "/api/v1/alerts/ack", "viewer", json={"id": first})
    assert forbidden.status_code == 403 and "error" in forbidden.json()
    for _ in range(2):
        again = hub.call("POST", "/api/v1/alerts/test", json={"id": "check:1", "text": "hi"})
        assert again.status_code == 200, again.text
    wait_for(lambda: "check:1" in hub.receiver.arrived(), 20, "check:1")
    unknown = hub.call("POST", "/api/v1/alerts/ack", json={"id": "nope"})
    assert unknown.status_code == 404 and "no alert 'nope'" in unknown.json()["error"]
    bad = hub.call("POST", "/api/v1/alerts/retry", json={})
    assert bad.status_code == 422 and "error" in bad.json()

    acked = hub.cli("alerts", "ack", first)
    assert acked.returncode == 0 and "acknowledged by local-admin" in acked.stdout, acked.stderr
    silenced = hub.cli(
        "alerts", "silence", "--scope", "machine=spark02", "--for", "1h", "--why", "upgrade"
    )
    assert silenced.returncode == 0 and "silence #1" in silenced.stdout, silenced.stderr
    held = hub.call("POST", "/api/v1/alerts/test", json={"scope": "machine=spark02"}).json()
    assert held["state"] == "silenced" and held["deliveries"] == []
    assert hub.cli("alerts", "ack", "nope").returncode == 2
    assert hub.cli("alerts", "silence", "--for", "5x", "--why", "x").returncode == 2
    assert (
        hub.cli("alerts", "silence", "--scope", "spark", "--for", "1h", "--why", "x").stderr.count(
            "\n"
        )
        == 1
    )

    metrics = hub.call("GET", "/metrics", "viewer").text
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    states = {s.labels["state"]: s.value for s in families["fleetmeter_alerts"].samples}
    assert states["acked"] == 1 and states["delivered"] == 1 and states["silenced"] == 1
    deliveries = {
        s.labels["state"]: s.value for s in families["fleetmeter_alert_deliveries"].samples
    }
    assert deliveries["delivered"] == 2
    attempts = families["fleetmeter_alert_attempts"].samples
    assert {(s.labels["sink"], s.labels["outcome"]) for s in attempts} == {("hook", "delivered")}

    assert hub.proc is not None
    stop(hub.proc)
    listed = hub.alerts()  # from the store now
    assert {r["id"]: r["state"] for r in listed}[first] == "acked"
    assert "silences" in orjson.loads(hub.cli("alerts", "--json").stdout)
    text = hub.cli("alerts")
    assert "(from the store" not in text.stdout and "check:1" in text.stdout
    offline = hub.cli("alerts", "test")
    assert offline.returncode == 1 and "needs the hub" in offline.stderr
    acked_offline = hub.cli("alerts", "ack", "check:1", "--who", "bo")
    assert acked_offline.returncode == 0 and "acknowledged by bo" in acked_offline.stdout


def test_a_secret_others_can_read_stops_serve_with_one_line(tmp_path: Path) -> None:
    alert_hub = AlertHub(tmp_path)
    try:
        (alert_hub.setup.config.parent / "hook.secret").chmod(0o644)
        done = alert_hub.cli("serve")
        assert done.returncode == 2
        assert done.stderr.count("\n") == 1 and "chmod 600" in done.stderr
    finally:
        alert_hub.receiver.stop()


ALERTS = 30
KILLS = 4


def test_every_alert_arrives_through_faults_and_kill_9s(tmp_path: Path) -> None:
    hub = AlertHub(tmp_path)
    hub.receiver.choose = chaos(seed=13)
    rng = random.Random(13)
    raised_at: dict[str, float] = {}
    try:
        hub.start()
        ids = [f"chaos:{n}" for n in range(ALERTS)]
        batches = [ids[i :: KILLS + 1] for i in range(KILLS + 1)]
        for round_ in range(KILLS + 1):
            for alert in batches[round_]:
                answer = hub.call("POST", "/api/v1/alerts/test", json={"id": alert})
                assert answer.status_code == 200, answer.text
                raised_at[alert] = time.time()
            if round_ < KILLS:
                time.sleep(rng.uniform(0.2, 1.5))  # deliveries pending and in flight
                hub.kill()
                hub.start()
        wait_for(lambda: hub.receiver.arrived() >= set(ids), 60, "every alert to arrive")
        wait_for(
            lambda: all(r["state"] == "delivered" for r in hub.alerts()),
            30,
            "every delivery settled",
        )
    finally:
        if hub.proc is not None:
            stop(hub.proc)
        hub.receiver.stop()
    assert not hub.receiver.unverified  # every request verified by standardwebhooks
    for alert in ids:
        assert hub.receiver.ids_per_alert[alert] == {webhook_id(alert)}
    arrivals = Counter(a.alert_id for a in hub.receiver.arrivals)
    first = {a: min(x.at for x in hub.receiver.arrivals if x.alert_id == a) for a in ids}
    waits = sorted(first[a] - raised_at[a] for a in ids)
    print(
        f"\nalert chaos: {ALERTS} alerts, {KILLS} kill -9s; {sum(hub.receiver.modes.values())} "
        f"requests {dict(hub.receiver.modes)}; {sum(arrivals.values())} 2xx deliveries, "
        f"{sum(n - 1 for n in arrivals.values())} duplicates (same webhook-id) of "
        f"{sum(n > 1 for n in arrivals.values())} alerts; time to deliver p50 "
        f"{statistics.median(waits):.2f} s, max {waits[-1]:.2f} s"
    )


def test_a_receiver_that_hangs_holds_up_neither_ingest_nor_the_api(tmp_path: Path) -> None:
    hub = AlertHub(tmp_path, receiver_timeout=5.0)
    hub.receiver.choose = lambda: "timeout"  # every request hangs for 10 s
    try:
        hub.start()
        for n in range(8):  # twice the concurrency: every delivery slot is stuck
            assert hub.call("POST", "/api/v1/alerts/test", json={"id": f"hang:{n}"}).is_success
        wait_for(lambda: sum(hub.receiver.modes.values()) >= 4, 20, "the stuck deliveries")
        assert hub.proc is not None
        served = ServedHub(hub.setup, hub.proc, hub.api, {}, tmp_path)
        started = time.monotonic()
        served.send("spark01", [call("spark01", n) for n in range(50)])
        acked = time.monotonic() - started
        listed = hub.call("GET", "/api/v1/alerts", "viewer")
        answered = time.monotonic() - started
    finally:
        if hub.proc is not None:
            stop(hub.proc)
        hub.receiver.stop()
    assert listed.status_code == 200
    # (the 50 look-alike calls may add a detector's retry-loop finding of their own)
    assert sum(a["kind"] == "test" for a in listed.json()["alerts"]) == 8
    print(f"\nbatch acked in {acked:.3f} s, alerts listed {answered - acked:.3f} s later")
    assert acked < 2.0 and answered < 4.0


def test_dead_letters_are_listed_and_retried_by_hand_through_the_cli(hub: AlertHub) -> None:
    answers = iter(["gone", "gone"])
    hub.receiver.choose = lambda: next(answers, "ok")  # 410 twice, then fine
    for n in (1, 2):
        assert hub.call("POST", "/api/v1/alerts/test", json={"id": f"dead:{n}"}).is_success
    dead = lambda: {r["id"] for r in hub.alerts() if r["state"] == "dead"}  # noqa: E731
    wait_for(lambda: dead() == {"dead:1", "dead:2"}, 20, "two dead letters")
    listed = orjson.loads(hub.cli("alerts", "--state", "dead", "--json").stdout)["alerts"]
    assert {r["id"] for r in listed} == {"dead:1", "dead:2"}
    assert listed[0]["deliveries"][0]["last_result"] == "HTTP 410"
    retried = hub.cli("alerts", "retry", "dead:1")
    assert retried.returncode == 0 and retried.stdout.strip() == "1 delivery queued again"
    wait_for(lambda: "dead:1" in hub.receiver.arrived(), 20, "dead:1 sent again")
    assert hub.proc is not None
    stop(hub.proc)
    hub.proc = None
    assert hub.cli("alerts", "retry", "--all").stdout.strip() == "1 delivery queued again"
    assert hub.cli("alerts", "retry").returncode == 2  # neither an id nor --all
    hub.start()  # the next hub delivers what the store queued
    wait_for(lambda: "dead:2" in hub.receiver.arrived(), 20, "dead:2 sent by the next hub")
    assert {a.webhook_id for a in hub.receiver.arrivals} == {
        webhook_id("dead:1"),
        webhook_id("dead:2"),
    }
    silenced = hub.cli("alerts", "silence", "--for", "10m", "--why", "noise")
    assert silenced.returncode == 0
    assert hub.cli("alerts", "unsilence", "1").stdout.strip() == "silence #1 ended"
    assert hub.cli("alerts", "unsilence", "1").returncode == 2  # no longer in force
