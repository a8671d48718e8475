"""The dashboard's mirror of a hub: the SSE reader, the mirror's JSON shapes both ways (and
their checks), and `RemoteFleet` against a real `fleet-hub serve`: exact figures equal to the
hub's own answers, one request per kind for a burst of changes, and the mirror endpoints'
errors."""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import msgspec
import pytest

from hub import mirror_codec as codec
from hub._sse import sse_events
from hub._totals import Basis, Totals
from hub.ledger import Dimension, Period, SessionFigures
from hub.model import NodeRecord, NodeState, ProfileRecord
from hub.profile_board import ProfileStanding, WindowReading
from hub.remote import HubUnavailable, RemoteFleet
from shared.config import Billing
from shared.events import Agent, LimitWindow, ProfileState
from tests.api_harness import (
    ServedHub,
    call,
    little_fleet,
    node_hello,
    serve_over_https,
)
from tests.fleet_harness import stop, wait_for


def test_the_sse_reader_follows_the_standard() -> None:
    lines = [
        "event: hello",
        'data: {"keepalive_s": 15}',
        "",
        ": keepalive",
        "",
        "data: one",
        "data:two",
        "",
        "event: update",
        "",  # no data: nothing to dispatch
        "event: resync",
        "data: {}",
    ]  # the last event has no blank line yet: not dispatched
    assert list(sse_events(lines)) == [
        ("hello", '{"keepalive_s": 15}'),
        ("message", "one\ntwo"),
    ]


def sums(n: int) -> Totals:
    """Every field set: counts from `n`, amounts with more digits than any float holds."""
    money = (Decimal("0.000000123456789012345678901"), Decimal("1.10"), Decimal(n), Decimal(0))
    return Totals(n, 10 * n, 3, 7, 1, 2, 4, 1, *money, 1, 99)


def test_the_mirror_shapes_round_trip_exactly() -> None:
    t = sums(3)
    assert codec.totals_from_map(codec.totals_to_map(t)) == t
    row = SessionFigures(
        "s-1", "spark01", Agent.CODEX, "max-a", "a@x", "/src", "main", "gpt-5",
        (True, 5.0), 1.0, 5.0, sums(1), sums(2), "s-1", {100: 5, 101: 7},
    )  # fmt: skip
    assert codec.session_from_map(codec.session_to_map(row)) == row
    windows = {LimitWindow.FIVE_HOUR: WindowReading(90.0, 9.0, 3.0)}
    standing = ProfileStanding(ProfileState.RATE_LIMITED, 3.0, 9.0, None, "5h", windows, 2.0)
    record = ProfileRecord(
        "spark01", "max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, "a", "max_20x", 1.0, 2.0
    )
    assert codec.profile_from_map(codec.profile_to_map(record, standing)) == (record, standing)
    node = NodeRecord("spark01", 1.0, 2.0, "0.1.0", 0.5, "linux", 2)
    hello = node_hello("spark01")
    process = hello.processes[0]
    got = codec.node_from_map(
        codec.node_to_map(node, NodeState.STALE, hello, [(process, (4.0, "ops"))])
    )
    assert got == (
        node,
        NodeState.STALE,
        hello,
        {(process.pid, process.create_time): (4.0, "ops")},
    )


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"calls": "3"}, "totals.calls: expected a whole number"),
        ({"metered": "NaN"}, "totals.metered: not a finite amount"),
        ({"metered": "1,5"}, "totals.metered: not a decimal amount"),
        ({"metered": 1.5}, "totals.metered: expected a string"),
        ([], "totals: expected an object"),
    ],
)
def test_a_bad_answer_names_the_field(data: object, names: str) -> None:
    with pytest.raises(codec.MirrorDataError, match=names):
        codec.totals_from_map(data)


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"runrate": {"fleet:": [[60.0, "x", "0", "0", 1]]}}, "figures.runrate.fleet:"),
        ({"runrate": {"fleet:": [[60.0, "1"]]}}, "not \\[start, api"),
        ({"totals": {"galaxy:today": []}}, "figures.totals.galaxy:today: unknown value"),
        ({"totals": {"machine:today": [["a"]]}}, "expected \\[key, sums\\] pairs"),
        ({"now": "soon"}, "figures.now: expected a number"),
    ],
)
def test_bad_figures_name_the_field(change: dict[str, object], names: str) -> None:
    good = {"now": 120.0, "tz": "Europe/Berlin", "first_call": 60.0, "fleet": {}}
    read = codec.figures_from_map(
        {**good, "runrate": {"fleet:": [[60.0, "0.5", "0.5", "0", 7]]}}, 2, 6.0
    )
    assert str(read.tz) == "Europe/Berlin"
    assert read.rates[("fleet", "")].total(("fleet", ""), 2, 5, Basis.API_EQUIVALENT) == Decimal(
        "0.5"
    )
    with pytest.raises(codec.MirrorDataError, match=names):
        codec.figures_from_map({**good, **change}, 2, 6.0)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[ServedHub]:
    with little_fleet(tmp_path) as served:
        yield served


def test_the_mirror_equals_the_hub_and_fetches_once_per_kind(hub: ServedHub) -> None:
    asked: Counter[str] = Counter()

    def count(request: httpx.Request) -> None:
        asked[request.url.path] += 1

    with RemoteFleet(hub.url, hub.tokens["viewer"], event_hooks={"request": [count]}) as remote:
        assert asked["/api/v1/mirror/sessions"] == 1  # the snapshot
        before = asked.copy()
        # one batch of 40 calls in 40 sessions from a new machine: one update, one burst
        calls = [
            msgspec.structs.replace(call("spark02", n), session_id=f"sess-{n}") for n in range(40)
        ]
        hub.send("spark02", calls)
        wait_for(lambda: len(remote.sessions()) == 41, 20, "the 40 new sessions mirrored")
        wait_for(lambda: remote.fleet(Period.TODAY).calls == 43, 20, "the new calls")
        fetched = asked - before
        for path in ("sessions", "nodes", "figures"):
            assert fetched[f"/api/v1/mirror/{path}"] == 1, fetched

        spend = httpx.get(
            hub.url + "/api/v1/spend?by=machine", headers=hub.headers("viewer")
        ).json()
        mirrored = remote.totals(Dimension.MACHINE, Period.TODAY)
        for row in spend:
            t = mirrored[row["key"]]
            assert t.calls == row["calls"]
            assert t.metered == Decimal(row["cost"]["metered"])
            assert t.api_equivalent == Decimal(row["cost"]["api_equivalent"])
        summary = httpx.get(hub.url + "/api/v1/summary", headers=hub.headers("viewer")).json()
        assert remote.fleet(Period.TODAY).metered == Decimal(summary["metered"])
        assert remote.burn_rate_per_hour(minutes=5) == Decimal(summary["burn_api_5m"])
        assert remote.connection().may_halt is False  # a viewer's token
        assert remote.connection().who == "t-viewer"


def test_the_mirror_endpoints_refuse_what_they_cannot_read(hub: ServedHub) -> None:
    for query in (
        "/api/v1/mirror/figures?want=galaxy:today",
        "/api/v1/mirror/figures?want=machine:decade",
        "/api/v1/mirror/figures?scope=fleet:x",
        "/api/v1/mirror/figures?scope=cluster:a",
    ):
        answer = httpx.get(hub.url + query, headers=hub.headers("viewer"), timeout=30)
        assert answer.status_code == 422, query
        assert set(answer.json()) == {"error"}
    agent = httpx.get(hub.url + "/api/v1/mirror/nodes", headers=hub.headers("agent"))
    assert agent.status_code == 403  # the fleet's whole figures: not for an agent's token


def test_a_revoked_token_is_said_and_the_last_figures_stay(hub: ServedHub) -> None:
    with RemoteFleet(hub.url, hub.tokens["viewer"]) as remote:
        calls = remote.fleet(Period.TODAY).calls
        revoked = hub.cli("token", "revoke", "t-viewer")
        assert revoked.returncode == 0, revoked.stderr
        hub.send("spark01", [call("spark01", n) for n in range(3, 5)])  # an update to read
        wait_for(lambda: remote.connection().refused is not None, 30, "the refusal said")
        link = remote.connection()
        assert link.unreachable_since is not None and "token" in (link.refused or "")
        assert remote.fleet(Period.TODAY).calls == calls


def test_attached_over_https_with_the_hubs_certificate(tmp_path: Path) -> None:
    served, crt = serve_over_https(tmp_path)
    try:
        served.send("spark01", [call("spark01", n) for n in range(2)])
        with pytest.raises(HubUnavailable, match="certificate"):  # not trusted by default
            RemoteFleet(served.url, served.tokens["viewer"]).start()
        trusted = ssl.create_default_context(cafile=crt)
        with RemoteFleet(served.url, served.tokens["viewer"], verify=trusted) as remote:
            assert remote.fleet(Period.TODAY).calls == 2
            served.send("spark01", [call("spark01", n) for n in range(2, 5)])
            wait_for(lambda: remote.fleet(Period.TODAY).calls == 5, 20, "the update over TLS")
    finally:
        stop(served.proc)


def test_long_session_keys_are_asked_in_requests_a_proxy_takes(hub: ServedHub) -> None:
    """300 sessions with 200-character ids in one batch: every row mirrored, in requests whose
    line stays under 10 KiB (a proxy's usual limit is 8 KiB of headers and line: nginx's)."""
    lines: list[int] = []

    def note(request: httpx.Request) -> None:
        if request.url.path == "/api/v1/mirror/sessions":
            lines.append(len(str(request.url)))

    with RemoteFleet(hub.url, hub.tokens["viewer"], event_hooks={"request": [note]}) as remote:
        calls = [
            msgspec.structs.replace(call("spark03", n), session_id=f"{n:03d}-" + "x" * 196)
            for n in range(300)
        ]
        hub.send("spark03", calls)
        wait_for(lambda: len(remote.sessions()) == 301, 30, "every long-named session")
    assert max(lines) < 10_000, lines
    assert len(lines) <= 1 + 300 * 210 // 8000 + 1, lines  # the snapshot's, then as few as fit
