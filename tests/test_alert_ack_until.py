"""Acknowledgements with an end ("who, until when"): the rule in the outbox on a real store
file, a store made before the `acked_until` column, and the CLI and API of a real
`fleet-hub serve` (the ack lapsing there by the wall clock)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from hub.alerts.outbox import Outbox
from hub.alerts.settings import AlertSettings
from hub.alerts.views import alert_row
from hub.store import Store
from tests.fleet_harness import wait_for
from tests.test_alert_outbox import finding
from tests.test_alerts_serve import AlertHub, hub  # noqa: F401 (the fixture)

T0 = 1_764_900_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def outbox(tmp_path: Path) -> Outbox:
    path = tmp_path / "hub.db"
    Store(path).close()
    return Outbox(path, AlertSettings(sinks=()), clock=Clock())


def test_an_ack_until_a_time_lapses_then_and_only_a_longer_one_replaces_it(
    outbox: Outbox,
) -> None:
    clock = outbox.clock
    assert isinstance(clock, Clock)
    alert = finding(1).id
    outbox.raise_finding(finding(1))
    assert outbox.alert(alert).state == "open"  # type: ignore[union-attr]

    acked = outbox.ack(alert, "ana", until=T0 + 3600)
    assert acked is not None and acked.state == "acked" and acked.acked_until == T0 + 3600
    row = alert_row(acked)["acked"]
    assert row == {"who": "ana", "when": T0, "until": T0 + 3600, "lapsed": False}

    # a shorter (or equal) ack changes nothing; a longer one replaces who, when and until
    clock.now = T0 + 60
    same = outbox.ack(alert, "bo", until=T0 + 1800)
    assert same is not None and (same.acked_by, same.acked_at) == ("ana", T0)
    longer = outbox.ack(alert, "bo", until=T0 + 7200)
    assert longer is not None and (longer.acked_by, longer.acked_at) == ("bo", T0 + 60)
    assert longer.acked_until == T0 + 7200

    # the same happening raised again neither lifts nor renews it
    outbox.raise_finding(finding(1))
    assert outbox.alert(alert).state == "acked"  # type: ignore[union-attr]

    # at `until` it lapses: open again (what its deliveries say), listed as such
    clock.now = T0 + 7200
    lapsed = outbox.alert(alert)
    assert lapsed is not None and lapsed.state == "open" and lapsed.ack_lapsed
    assert alert_row(lapsed)["acked"]["lapsed"] is True
    assert [r.finding.id for r in outbox.alerts(state="open")] == [alert]
    assert outbox.alerts(state="acked") == []
    outbox.raise_finding(finding(1))
    assert outbox.alert(alert).state == "open"  # type: ignore[union-attr]

    # a new ack (for good this time) replaces the lapsed one, and nothing outlasts it
    again = outbox.ack(alert, "cy")
    assert again is not None and again.state == "acked" and again.acked_by == "cy"
    assert again.acked_until is None
    clock.now = T0 + 10**8
    assert outbox.ack(alert, "dee", until=T0 + 10**9).acked_by == "cy"  # type: ignore[union-attr]
    assert outbox.alert(alert).state == "acked"  # type: ignore[union-attr]

    with pytest.raises(ValueError, match="until: a time in the future"):
        outbox.ack(alert, "ed", until=clock.now)


def test_a_store_made_before_ack_ends_keeps_its_acks_and_takes_new_ones(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    Store(path).close()
    with sqlite3.connect(path) as db:  # the alerts table as the previous release made it
        db.execute(
            "CREATE TABLE alerts (id TEXT PRIMARY KEY, kind TEXT NOT NULL, scope TEXT NOT NULL,"
            " severity TEXT NOT NULL, start REAL NOT NULL, text TEXT NOT NULL,"
            " evidence TEXT NOT NULL, raised REAL NOT NULL, silenced_by INTEGER,"
            " acked_by TEXT, acked_at REAL)"
        )
        db.execute(
            "INSERT INTO alerts VALUES ('old:1', 'budget', 'fleet', 'warning', 1.0, 'old', '{}',"
            " 1.0, NULL, 'ana', 2.0)"
        )
    outbox = Outbox(path, AlertSettings(sinks=()))
    old = outbox.alert("old:1")
    assert old is not None and old.state == "acked" and old.acked_until is None
    outbox.raise_finding(finding(1))
    until = time.time() + 600
    new = outbox.ack(finding(1).id, "bo", until)
    assert new is not None and new.state == "acked" and new.acked_until == until
    outbox.close()
    Outbox(path, AlertSettings(sinks=())).close()  # opened again: the column is not added twice


def test_ack_until_through_the_cli_and_the_api_of_a_running_hub(hub: AlertHub) -> None:  # noqa: F811
    ids = []
    for n in range(2):
        made = hub.call("POST", "/api/v1/alerts/test", json={"id": f"check:{n}"})
        assert made.status_code == 200, made.text
        ids.append(made.json()["id"])

    # the CLI: +2h from now, said back, and in `alerts --json`
    before = time.time()
    acked = hub.cli("alerts", "ack", ids[0], "--until", "+2h")
    assert acked.returncode == 0, acked.stderr
    assert "acknowledged by local-admin" in acked.stdout and " until " in acked.stdout
    row = {r["id"]: r for r in hub.alerts()}[ids[0]]
    assert row["state"] == "acked"
    ack = row["acked"]
    assert isinstance(ack, dict) and ack["who"] == "local-admin" and ack["lapsed"] is False
    assert before + 7200 <= ack["until"] <= time.time() + 7200

    # bad ends: one line, exit 2, and the API's 422 in JSON
    for bad in ("yesterday", "2020-01-01T00:00", "+0h"):
        refused = hub.cli("alerts", "ack", ids[1], "--until", bad)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "until" in refused.stderr
    past = hub.call("POST", "/api/v1/alerts/ack", json={"id": ids[1], "until": time.time() - 1})
    assert past.status_code == 422 and "until" in past.json()["error"]
    assert (
        hub.call("POST", "/api/v1/alerts/ack", json={"id": ids[1], "until": "x"}).status_code == 422
    )

    # the API: an ack that ends in 2 s; past then the alert reads as unacknowledged again
    soon = time.time() + 2
    answer = hub.call("POST", "/api/v1/alerts/ack", json={"id": ids[1], "until": soon})
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "acked" and answer.json()["acked"]["until"] == soon

    def lapsed() -> bool:
        row = {r["id"]: r for r in hub.alerts()}[ids[1]]
        return row["state"] != "acked" and row["acked"]["lapsed"] is True  # type: ignore[index]

    wait_for(lapsed, 30, "the ack to lapse")
    listed = hub.cli("alerts")
    assert "acknowledged by local-admin" in listed.stdout and " lapsed " in listed.stdout
    shown = orjson.loads(hub.cli("alerts", "--json", "--state", "acked").stdout)["alerts"]
    assert [r["id"] for r in shown] == [ids[0]]
