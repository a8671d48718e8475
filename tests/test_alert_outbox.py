"""The alert outbox and its courier in process, on a real store file, delivering over real
HTTP to a local receiver that verifies every request with the `standardwebhooks` package."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from hub.alerts.courier import Courier, sink_secrets
from hub.alerts.outbox import Outbox
from hub.alerts.settings import AlertSettings, SinkSettings, SinkType, parse_alerts
from hub.alerts.signing import webhook_id
from hub.api.alert_http import HttpxPost
from hub.findings import Finding, FindingSink, Severity
from hub.store import DB_FILE, Store
from shared.config import ConfigError
from tests.alert_receiver import Receiver, chaos, write_secret
from tests.fleet_harness import running_hub, wait_for


def finding(n: int, *, severity: Severity = Severity.WARNING, **kw: str) -> Finding:
    return Finding(
        id=kw.get("id", f"budget:spark02-day:2026-12-05:{n}"),
        kind=kw.get("kind", "budget"),
        scope=kw.get("scope", "machine=spark02"),
        severity=severity,
        start=1_764_900_000.0 + n,
        text=f"budget 'spark02 day $50' at {n} %",
        evidence={"spent": "50.00", "limit": "50"},
    )


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    path = tmp_path / "hub.db"
    Store(path).close()  # the hub's own tables first, as at a hub's start
    return path


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(write_secret(tmp_path / "hook.secret")).start()
    yield r
    r.stop()


def hook(receiver: Receiver, tmp_path: Path, name: str = "hook", **kw: object) -> SinkSettings:
    return SinkSettings(
        name=name,
        type=SinkType.WEBHOOK,
        url=receiver.url,
        secret_file=tmp_path / "hook.secret",
        timeout=float(kw.pop("timeout", 1.0)),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def fast(*sinks: SinkSettings, give_up_after: float = 3600.0) -> AlertSettings:
    return AlertSettings(sinks=sinks, retry_first=0.05, retry_max=0.3, give_up_after=give_up_after)


def courier_for(outbox: Outbox) -> Courier:
    settings = outbox.settings
    return Courier(outbox, settings, "test-hub", HttpxPost(), sink_secrets(settings))


def test_a_finding_raised_twice_is_one_alert_routed_by_severity_scope_and_kind(
    store_path: Path, receiver: Receiver, tmp_path: Path
) -> None:
    sinks = (
        hook(receiver, tmp_path, "all"),
        hook(receiver, tmp_path, "critical", min_severity=Severity.CRITICAL),
        hook(receiver, tmp_path, "spark01", scopes=("machine=spark01",)),
        hook(receiver, tmp_path, "caches", kinds=("cache_*",)),
        hook(receiver, tmp_path, "spark0x", scopes=("fleet", "machine=spark0*")),
    )
    outbox = Outbox(store_path, fast(*sinks))
    outbox.raise_finding(finding(1))
    outbox.raise_finding(finding(1))  # the same happening noticed again: nothing added
    outbox.raise_finding(finding(2, kind="cache_thrash", severity=Severity.CRITICAL))
    records = {r.finding.id: r for r in outbox.alerts()}
    assert len(records) == 2
    first = records[finding(1).id]
    assert [d.sink for d in first.deliveries] == ["all", "spark0x"]
    assert first.state == "pending" and first.finding == finding(1)
    second = records[finding(2, kind="cache_thrash").id]
    assert [d.sink for d in second.deliveries] == ["all", "caches", "critical", "spark0x"]
    outbox.close()
    reopened = Outbox(store_path, fast(*sinks))  # kept in the store
    assert len(reopened.alerts()) == 2


def test_silences_hold_matching_alerts_and_acks_keep_the_first_who(
    store_path: Path, receiver: Receiver, tmp_path: Path
) -> None:
    outbox = Outbox(store_path, fast(hook(receiver, tmp_path)))
    outbox.raise_finding(finding(1, scope="machine=spark01"))  # pending, before the silence
    silence = outbox.silence("machine=spark0*", "budget", time.time() + 60, "ana", "maintenance")
    outbox.raise_finding(finding(2))
    outbox.raise_finding(finding(3, kind="retry_loop"))  # another kind: not silenced
    states = {r.finding.id[-1]: r.state for r in outbox.alerts()}
    assert states == {"1": "pending", "2": "silenced", "3": "pending"}
    assert outbox.alert(finding(2).id).silenced_by == silence.id  # type: ignore[union-attr]
    courier = courier_for(outbox)
    courier.start()
    try:
        wait_for(lambda: "pending" not in {r.state for r in outbox.alerts()}, 20, "delivery")
    finally:
        courier.stop()
    # the one raised before the silence, still pending when it began, is held too
    states = {r.finding.id[-1]: r.state for r in outbox.alerts()}
    assert states == {"1": "silenced", "2": "silenced", "3": "delivered"}
    assert receiver.arrived() == {finding(3, kind="retry_loop").id}
    assert outbox.unsilence(silence.id) and not outbox.silences()
    acked = outbox.ack(finding(3).id, "ana")
    assert acked is not None and acked.state == "acked" and acked.acked_by == "ana"
    again = outbox.ack(finding(3).id, "bo")
    assert again is not None and again.acked_by == "ana" and again.acked_at == acked.acked_at
    assert outbox.ack("no-such-alert", "ana") is None


def test_every_alert_arrives_through_a_receiver_that_fails_half_the_requests(
    store_path: Path, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.choose = chaos(seed=7)
    outbox = Outbox(store_path, fast(hook(receiver, tmp_path)))
    courier = courier_for(outbox)
    courier.start()
    try:
        for n in range(20):
            outbox.raise_finding(finding(n))
        ids = {finding(n).id for n in range(20)}
        wait_for(lambda: receiver.arrived() >= ids, 45, "every alert to arrive")
        wait_for(lambda: {r.state for r in outbox.alerts()} == {"delivered"}, 10, "settled")
    finally:
        courier.stop()
    assert not receiver.unverified
    assert receiver.modes["fail"] + receiver.modes["timeout"] + receiver.modes["reset"] > 0
    for alert, seen in receiver.ids_per_alert.items():
        assert seen == {webhook_id(alert)}  # one webhook-id per alert, whatever the retries
    tries = sum(d.attempts for r in outbox.alerts() for d in r.deliveries)
    assert tries == sum(receiver.modes.values())  # every attempt was counted


def test_a_permanent_refusal_is_dead_at_once_told_elsewhere_and_retried_by_hand(
    store_path: Path, receiver: Receiver, tmp_path: Path
) -> None:
    answers = iter(["gone"])
    receiver.choose = lambda: next(answers, "ok")
    told = tmp_path / "told.json"
    backup = SinkSettings(
        "backup",
        SinkType.PROGRAM,
        command=(
            sys.executable,
            "-c",
            f"import sys; open({str(told)!r}, 'ab').write(sys.stdin.buffer.read())",
        ),
        kinds=("delivery_dead",),
    )
    outbox = Outbox(store_path, fast(hook(receiver, tmp_path), backup))
    courier = courier_for(outbox)
    courier.start()
    alert = finding(1).id
    state = lambda: outbox.alert(alert).state  # type: ignore[union-attr]  # noqa: E731
    try:
        outbox.raise_finding(finding(1))
        wait_for(lambda: state() == "dead", 20, "a dead letter")
        dead = outbox.alerts(state="dead")[0].deliveries[0]
        assert dead.attempts == 1 and dead.last_result == "HTTP 410"
        notice = f"delivery_dead:hook:{alert}"
        wait_for(lambda: outbox.alert(notice).state == "delivered", 20, "the notice")  # type: ignore[union-attr]
        assert outbox.retry(alert) == 1
        wait_for(lambda: state() == "delivered", 20, "the retry")
    finally:
        courier.stop()
    assert [a.webhook_id for a in receiver.arrivals] == [webhook_id(alert)]
    assert len(receiver.ids_per_alert[alert]) == 1
    sent = orjson.loads(told.read_bytes())["data"]  # told once, on the other sink only
    assert sent["kind"] == "delivery_dead" and sent["scope"] == "sink=hook"
    assert sent["evidence"] == {"alert": alert, "sink": "hook", "attempts": "1"}
    assert f"fleet-hub alerts retry {alert}" in sent["text"]
    assert [d.sink for d in outbox.alert(notice).deliveries] == ["backup"]  # type: ignore[union-attr]


def test_a_delivery_that_never_succeeds_is_dead_lettered_after_give_up_after(
    store_path: Path, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.choose = lambda: "fail"
    outbox = Outbox(store_path, fast(hook(receiver, tmp_path), give_up_after=1.0))
    courier = courier_for(outbox)
    courier.start()
    try:
        outbox.raise_finding(finding(1))
        wait_for(lambda: outbox.alerts(state="dead") != [], 20, "the dead letter")
    finally:
        courier.stop()
    delivery = outbox.alerts(state="dead")[0].deliveries[0]
    assert delivery.attempts >= 3 and delivery.last_result == "HTTP 503"
    assert outbox.counts()[1]["dead"] == 1
    assert outbox.retry(None) == 1 and outbox.alert(finding(1).id).state == "pending"  # type: ignore[union-attr]


def test_backoff_doubles_to_its_ceiling_with_jitter_and_honours_retry_after(
    store_path: Path,
) -> None:
    settings = AlertSettings(retry_first=5.0, retry_max=3600.0)
    outbox = Outbox(store_path, settings)
    low = Courier(outbox, settings, "h", HttpxPost(), {}, jitter=lambda: 0.0)
    high = Courier(outbox, settings, "h", HttpxPost(), {}, jitter=lambda: 1.0)
    assert [low.delay(n) for n in (1, 2, 3)] == [4.0, 8.0, 16.0]
    assert [high.delay(n) for n in (1, 2, 3)] == [6.0, 12.0, 24.0]
    assert low.delay(40) == 3600 * 0.8 and high.delay(40) == 3600 * 1.2
    assert low.delay(1, retry_after=120.0) == 120.0
    assert low.delay(1, retry_after=10**9) == 3600.0  # a receiver cannot park it for ever


def test_slack_ntfy_and_program_sinks_get_their_own_formats(
    store_path: Path, receiver: Receiver, tmp_path: Path
) -> None:
    got = tmp_path / "program-got.json"
    program = tmp_path / "page.py"
    program.write_text(
        "import os, sys, pathlib\n"
        f"pathlib.Path({str(got)!r}).write_bytes(sys.stdin.buffer.read())\n"
        f"pathlib.Path({str(got)!r} + '.id').write_text(os.environ['WEBHOOK_ID'])\n"
    )
    slow = tmp_path / "slow.py"
    slow.write_text("import time\ntime.sleep(30)\n")
    secret = tmp_path / "hook.secret"
    only = ("budget",)  # not the notice of the stuck one's dead letter
    sinks = (
        SinkSettings("slack", SinkType.SLACK, url=receiver.url, secret_file=secret, kinds=only),
        SinkSettings("ntfy", SinkType.NTFY, url=receiver.url, secret_file=secret, kinds=only),
        SinkSettings("page", SinkType.PROGRAM, command=(sys.executable, str(program)), kinds=only),
        SinkSettings("stuck", SinkType.PROGRAM, command=(sys.executable, str(slow)), timeout=0.5),
    )
    outbox = Outbox(store_path, fast(*sinks, give_up_after=1.5))
    courier = courier_for(outbox)
    courier.start()
    try:
        outbox.raise_finding(finding(100, severity=Severity.CRITICAL))
        wait_for(lambda: outbox.alerts(state="dead") != [], 30, "settled deliveries")
    finally:
        courier.stop()
    record = outbox.alert(finding(100).id)
    assert record is not None
    states = {d.sink: (d.state, d.last_result) for d in record.deliveries}
    assert states["slack"][0] == states["ntfy"][0] == states["page"][0] == "delivered"
    assert states["stuck"] == ("dead", f"{sys.executable} did not finish within 0.5 s (killed)")
    bodies = {h.get("x-title") is not None: (h, b) for h, b in receiver.raw}
    ntfy_headers, ntfy_body = bodies[True]
    assert ntfy_body.decode() == finding(100).text and ntfy_headers["x-priority"] == "5"
    assert "budget (machine=spark02)" in ntfy_headers["x-title"]
    slack = orjson.loads(bodies[False][1])
    assert finding(100).text in slack["text"]
    assert slack["blocks"][0]["text"]["text"].startswith("*CRITICAL* budget · machine=spark02")
    sent = orjson.loads(got.read_bytes())
    assert sent["type"] == "alert.raised" and sent["data"]["id"] == finding(100).id
    assert sent["data"]["evidence"] == {"spent": "50.00", "limit": "50"}
    assert Path(str(got) + ".id").read_text() == webhook_id(finding(100).id)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"sinks": [{"name": "a", "type": "pager", "url": "http://x"}]}, "'type' must be one of"),
        ({"sinks": [{"name": "a", "type": "webhook", "url": "http://x"}]}, "needs 'secret_file'"),
        ({"sinks": [{"name": "a", "type": "slack", "url": "ftp://x"}]}, "http:// or https://"),
        ({"sinks": [{"name": "a", "type": "program", "command": "ls"}]}, "list of words"),
        (
            {"sinks": [{"name": "a", "type": "ntfy", "url": "http://x", "scopes": ["spark"]}]},
            "KIND=VALUE",
        ),
        (
            {"sinks": [{"name": "a", "type": "ntfy", "url": "http://x", "min_severity": "loud"}]},
            "'min_severity' must be one of",
        ),
        ({"sinks": [{"name": "a", "type": "ntfy", "url": "http://x", "colour": 1}]}, "colour"),
        ({"retry_first": -1}, "'alerts.retry_first' must be a number of seconds"),
        ({"concurrency": 0}, "concurrency must be a whole number"),
        ({"sinks": [{"name": "a", "type": "ntfy", "url": "http://x"}] * 2}, "used twice"),
    ],
)
def test_a_bad_alerts_table_is_one_clear_error(
    table: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_alerts("hub.toml", table, tmp_path)
    assert "\n" not in str(caught.value)


def test_a_secret_file_others_can_read_or_not_whsec_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "s.secret"
    settings = fast(SinkSettings("a", SinkType.WEBHOOK, url="http://x", secret_file=secret))
    with pytest.raises(ConfigError, match="does not exist"):
        sink_secrets(settings)
    write_secret(secret)
    assert sink_secrets(settings)["a"] is not None and len(sink_secrets(settings)["a"] or b"") == 32
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        sink_secrets(settings)
    secret.chmod(0o600)
    secret.write_text("hunter2\n")
    with pytest.raises(ConfigError, match="whsec_"):
        sink_secrets(settings)


def test_a_hub_hands_its_findings_to_the_outbox_in_its_store(tmp_path: Path) -> None:
    """The governor and the detectors raise through `Hub.alerts` (a FindingSink); the
    dashboard's embedded hub records them too, for the next `fleet-hub serve` to deliver."""
    with running_hub(tmp_path) as (hub, setup):
        assert hub.alerts is not None
        sink: FindingSink = hub.alerts
        sink.raise_finding(finding(1))
        sink.raise_finding(finding(1))
    reopened = Outbox(setup.data_dir / DB_FILE, AlertSettings())
    assert [r.finding for r in reopened.alerts()] == [finding(1)]
