"""Hub discovery: the static answer, TXT records, and one real mDNS round trip on loopback."""

from __future__ import annotations

import asyncio
import os

import pytest

from shared.discovery import (
    HubAddress,
    StaticDiscovery,
    ZeroconfAdvertiser,
    ZeroconfDiscovery,
    hub_address_from_txt,
    txt_properties,
)
from shared.wire import PROTOCOL_VERSION

# Unique per run so that a parallel run or an avahi on the host never answers for us.
TEST_TYPE = f"_fh-{os.getpid() % 10**8}._tcp.local."


async def test_static_discovery_answers_what_it_was_given() -> None:
    hub = HubAddress("tcp://10.0.0.5:7461", "tcp://10.0.0.5:7462")
    assert await StaticDiscovery(hub).find(timeout=0.0) == hub
    assert await StaticDiscovery(None).find(timeout=0.0) is None


def test_txt_record_round_trip_fills_in_wildcard_hosts() -> None:
    props = txt_properties("tls+tcp://0.0.0.0:7461", "tls+tcp://10.1.2.3:7462", "ab12")
    assert props["v"] == str(PROTOCOL_VERSION)
    assert hub_address_from_txt(dict(props), "192.168.1.20") == HubAddress(
        "tls+tcp://192.168.1.20:7461", "tls+tcp://10.1.2.3:7462", "ab12"
    )


@pytest.mark.parametrize(
    "props",
    [
        {"v": "999", "events": "tcp://0.0.0.0:1", "commands": "tcp://0.0.0.0:2"},
        {"v": str(PROTOCOL_VERSION), "events": "tcp://0.0.0.0:1"},
        {"v": str(PROTOCOL_VERSION), "events": "tcp://0.0.0.0", "commands": "tcp://h:2"},
        {"events": "tcp://0.0.0.0:1", "commands": "tcp://0.0.0.0:2"},
    ],
)
def test_foreign_or_incomplete_records_are_ignored(props: dict[str, str | None]) -> None:
    assert hub_address_from_txt(props, "10.0.0.1") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"service_type": "_fleethub-test-12345._tcp.local."}, "invalid mDNS service type"),
        ({"name": "x" * 64}, "1..63 bytes"),
        ({"events": "ipc:///tmp/hub.sock"}, "tcp addresses only"),
    ],
)
def test_advertiser_rejects_bad_settings(kwargs: dict[str, str], message: str) -> None:
    settings = {"name": "hub", "events": "tcp://0.0.0.0:7461", "commands": "tcp://0.0.0.0:7462"}
    with pytest.raises(ValueError, match=message):
        ZeroconfAdvertiser(**(settings | kwargs))  # type: ignore[arg-type]


async def test_a_node_finds_an_advertised_hub_on_loopback() -> None:
    advertiser = ZeroconfAdvertiser(
        "hub-test",
        "tcp://0.0.0.0:7461",
        "tcp://0.0.0.0:7462",
        fingerprint="ab" * 32,
        service_type=TEST_TYPE,
        interfaces=["127.0.0.1"],
        cooperating_responders=True,
    )
    try:
        await advertiser.start()
    except OSError as exc:
        pytest.skip(f"multicast on loopback is not possible here: {exc}")
    try:
        assert advertiser.registered_name == f"hub-test.{TEST_TYPE}"
        # Two nodes browse at once; the one that wants another hub hears the same answer and
        # must keep waiting. (A responder repeats a record at most once a second: ~1 s here.)
        found, other = await asyncio.gather(
            ZeroconfDiscovery(TEST_TYPE, ["127.0.0.1"]).find(timeout=2.0),
            ZeroconfDiscovery(TEST_TYPE, ["127.0.0.1"], hub_name="another-hub").find(1.5),
        )
        assert found == HubAddress("tcp://127.0.0.1:7461", "tcp://127.0.0.1:7462", "ab" * 32)
        assert other is None
    finally:
        await advertiser.stop()
    assert not advertiser.registered_name  # forgotten after the goodbye
    await advertiser.stop()  # a second stop is harmless


async def test_discovery_times_out_with_none_when_no_hub_advertises() -> None:
    discovery = ZeroconfDiscovery(f"_fhx-{os.getpid() % 10**8}._tcp.local.", ["127.0.0.1"])
    try:
        started = asyncio.get_running_loop().time()
        assert await discovery.find(timeout=0.2) is None
    except OSError as exc:
        pytest.skip(f"multicast on loopback is not possible here: {exc}")
    assert asyncio.get_running_loop().time() - started < 1.0
