"""Signed frames: round trips, every rejection reason, fuzzed input, and a real nng pair."""

from __future__ import annotations

import hashlib
import hmac
import logging
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pynng
import pytest

from shared.codec import from_map, pack, to_map, unpack
from shared.events import Agent, Tokens, UsageEvent
from shared.tls import cert_fingerprint, hub_tls_config, is_tls, node_tls_config
from shared.wire import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    TO_HUB,
    TO_NODE,
    FrameError,
    RejectLog,
    ReplayGuard,
    batch_body,
    derive_node_key,
    events_budget,
    open_frame,
    parse_batch_body,
    peek_node,
    seal,
)

SECRET = bytes(range(32))
KEYS = {name: derive_node_key(SECRET, name) for name in ("spark01", "spark02")}
NOW = 1_789_000_000.0


def key_for(node: str) -> bytes | None:
    return KEYS.get(node)


def reason_of(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(FrameError) as info:
        open_frame(data, key_for, now=NOW, **kwargs)
    return info.value.reason


def signed_raw(node: str, inner: bytes, version: int = PROTOCOL_VERSION) -> bytes:
    """A frame around an arbitrary payload, signed correctly: for payload-level checks."""
    mac = hmac.new(KEYS[node], bytes([version]) + node.encode() + b"\0" + inner, hashlib.sha256)
    packed: bytes = msgpack.packb([version, node, mac.digest(), inner])
    return packed


def usage(n: int, pad: int = 0) -> dict[str, Any]:
    event = UsageEvent(
        f"claude:msg_{n}:req_{n}",
        NOW + n,
        Agent.CLAUDE_CODE,
        "claude-sonnet-4-5",
        Tokens(input=n, output=2 * n),
        "session-1",
        project="/home/dev/" + "x" * pad,
    )
    return to_map(event)


# --- keys ---------------------------------------------------------------------------------


def test_node_keys_are_per_node_and_stable() -> None:
    assert derive_node_key(SECRET, "spark01") == KEYS["spark01"]
    assert KEYS["spark01"] != KEYS["spark02"]
    assert len(KEYS["spark01"]) == 32
    assert derive_node_key(bytes(32), "spark01") != KEYS["spark01"]


@pytest.mark.parametrize(
    ("secret", "node", "message"),
    [
        (b"short", "n", "at least 32 bytes"),
        (SECRET, "", "invalid node name"),
        (SECRET, "a\0b", "no NUL"),
        (SECRET, "a\udc80", "invalid node name"),
    ],
)
def test_bad_key_inputs(secret: bytes, node: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        derive_node_key(secret, node)


# --- round trip and rejections ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["batch", "ack", "cmd", "reply"])
def test_round_trip(kind: str) -> None:
    body = {"seq1": 7, "events": [usage(1)], "blob": b"\x00\xff"}
    data = seal(KEYS["spark01"], "spark01", kind, body, ts=NOW, msg_id="m-1")
    frame = open_frame(data, key_for, now=NOW + 1)
    assert (frame.node, frame.kind, frame.ts, frame.id, frame.body) == (
        "spark01",
        kind,
        NOW,
        "m-1",
        body,
    )
    assert peek_node(data) == "spark01"


def test_default_ids_are_unique_and_ts_is_now() -> None:
    a = open_frame(seal(KEYS["spark01"], "spark01", "batch", None), key_for)
    b = open_frame(seal(KEYS["spark01"], "spark01", "batch", None), key_for)
    assert a.id != b.id
    assert abs(a.ts - time.time()) < 5


def test_wrong_key_is_bad_mac() -> None:
    data = seal(KEYS["spark02"], "spark01", "batch", {}, ts=NOW)
    assert reason_of(data) == "bad_mac"


def test_tampered_payload_is_bad_mac() -> None:
    data = bytearray(seal(KEYS["spark01"], "spark01", "batch", {"seq1": 1}, ts=NOW))
    data[-1] ^= 0x01  # the payload is the last field: its last byte is the body's seq1
    assert reason_of(bytes(data)) == "bad_mac"


def test_frame_moved_to_another_node_name_is_bad_mac() -> None:
    outer = msgpack.unpackb(seal(KEYS["spark01"], "spark01", "batch", {}, ts=NOW))
    outer[1] = "spark02"
    assert reason_of(msgpack.packb(outer)) == "bad_mac"


def test_unknown_node() -> None:
    data = seal(derive_node_key(SECRET, "rogue"), "rogue", "batch", {}, ts=NOW)
    with pytest.raises(FrameError, match="no key for node 'rogue'") as info:
        open_frame(data, key_for, now=NOW)
    assert info.value.reason == "unknown_node"


def test_version_mismatch_names_both_versions() -> None:
    inner = msgpack.packb({"k": "batch", "ts": NOW, "id": "x", "b": None})
    with pytest.raises(FrameError, match="version 2 not supported .expected 1") as info:
        open_frame(signed_raw("spark01", inner, version=2), key_for, now=NOW)
    assert info.value.reason == "version"


@pytest.mark.parametrize("offset", [-301.0, 301.0])
def test_stale_timestamps(offset: float) -> None:
    data = seal(KEYS["spark01"], "spark01", "batch", {}, ts=NOW + offset)
    assert reason_of(data) == "stale"
    assert open_frame(data, key_for, now=NOW, max_skew=302.0).ts == NOW + offset


def test_kind_not_accepted_in_this_direction() -> None:
    cmd = seal(KEYS["spark01"], "spark01", "cmd", {}, ts=NOW)
    assert reason_of(cmd, kinds=TO_HUB) == "kind"
    assert open_frame(cmd, key_for, now=NOW, kinds=TO_NODE).kind == "cmd"


@pytest.mark.parametrize(
    ("payload", "reason", "message"),
    [
        ({"k": "gossip", "ts": NOW, "id": "x", "b": None}, "kind", "unknown frame kind 'gossip'"),
        ({"k": "batch", "ts": NOW, "id": "x"}, "malformed", "lacks b"),
        ({"k": "batch", "ts": "now", "id": "x", "b": 1}, "malformed", "timestamp"),
        ({"k": "batch", "ts": float("nan"), "id": "x", "b": 1}, "malformed", "timestamp"),
        ({"k": "batch", "ts": NOW, "id": "", "b": 1}, "malformed", "frame id"),
        ([1, 2], "malformed", "not a map"),
    ],
)
def test_signed_but_bad_payload(payload: object, reason: str, message: str) -> None:
    with pytest.raises(FrameError, match=message) as info:
        open_frame(signed_raw("spark01", msgpack.packb(payload)), key_for, now=NOW)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    ("outer", "message"),
    [
        ({"v": 1}, "not an array"),
        ([], "not an array"),
        (["1", "n", b"", b""], "not an array"),
        ([1, "spark01", b"m" * 32], "3 fields"),
        ([1, "", b"m" * 32, b""], "node name"),
        ([1, 5, b"m" * 32, b""], "node name"),
        ([1, "spark01", b"short", b""], "mac is not 32 bytes"),
        ([1, "spark01", b"m" * 32, "text"], "payload is not bytes"),
    ],
)
def test_malformed_envelopes(outer: object, message: str) -> None:
    with pytest.raises(FrameError, match=message) as info:
        open_frame(msgpack.packb(outer), key_for, now=NOW)
    assert info.value.reason == "malformed"


def test_truncated_frames_are_malformed() -> None:
    data = seal(KEYS["spark01"], "spark01", "batch", {"events": [usage(1)]}, ts=NOW)
    for cut in range(len(data)):
        assert reason_of(data[:cut]) == "malformed"


def test_random_input_only_ever_raises_frame_error() -> None:
    rng = random.Random(20240601)
    valid = seal(KEYS["spark01"], "spark01", "batch", {"events": [usage(1)]}, ts=NOW)
    reasons: set[str] = set()
    for i in range(600):
        if i % 2:
            data = rng.randbytes(rng.randrange(0, 300))
        else:  # a valid frame with a few random bytes changed: reaches deeper checks
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            data = bytes(mutated)
        if data == valid:
            continue
        with pytest.raises(FrameError) as info:
            open_frame(data, key_for, now=NOW)
        reasons.add(info.value.reason)
        peek_node(data)  # must not raise either
    assert {"malformed", "bad_mac"} <= reasons


def test_oversize_is_checked_before_unpacking() -> None:
    assert reason_of(b"\xc1" * 101, max_size=100) == "oversize"
    assert reason_of(b"\xc1" * (MAX_FRAME + 1)) == "oversize"  # the default cap
    assert peek_node(b"\xc1" * (MAX_FRAME + 1)) is None
    with pytest.raises(FrameError, match="cap is 100") as info:
        seal(KEYS["spark01"], "spark01", "batch", "x" * 200, max_size=100)
    assert info.value.reason == "oversize"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("batch", object()), "batch body cannot be packed"),
        (("ping", {}), "unknown frame kind 'ping'"),
    ],
)
def test_seal_rejects_bad_input(args: tuple[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seal(KEYS["spark01"], "spark01", *args)


def test_peek_node_on_garbage() -> None:
    assert peek_node(b"\xc1") is None
    assert peek_node(msgpack.packb({"node": "x"})) is None
    assert peek_node(msgpack.packb([1, "spark02"])) == "spark02"


# --- replay guard and reject log ----------------------------------------------------------


def test_replay_guard_refuses_repeats_and_too_old() -> None:
    guard = ReplayGuard(window=600.0)
    assert guard.check_and_remember("spark01", "a", NOW, now=NOW)
    assert not guard.check_and_remember("spark01", "a", NOW, now=NOW + 1)
    assert guard.check_and_remember("spark02", "a", NOW, now=NOW + 1)  # ids are per node
    assert not guard.check_and_remember("spark01", "b", NOW - 601, now=NOW)


def test_replay_guard_forgets_after_the_window() -> None:
    guard = ReplayGuard(window=10.0)
    for i in range(100):
        assert guard.check_and_remember("n", f"id{i}", NOW + i * 0.01, now=NOW)
    assert len(guard) == 100
    assert guard.check_and_remember("n", "late", NOW + 20, now=NOW + 20)
    assert len(guard) == 1
    # a forgotten id is still refused: its timestamp is outside the window now
    assert not guard.check_and_remember("n", "id0", NOW, now=NOW + 20)


def test_replay_guard_stays_bounded_and_safe_when_full() -> None:
    guard = ReplayGuard(window=600.0, max_entries=3)
    for i in range(5):
        assert guard.check_and_remember("n", f"id{i}", NOW + i, now=NOW)
    assert len(guard) == 3
    # id0 and id1 were evicted; a replay of either must still fail
    assert not guard.check_and_remember("n", "id1", NOW + 1, now=NOW)
    assert not guard.check_and_remember("n", "id0", NOW, now=NOW)
    assert guard.check_and_remember("n", "id5", NOW + 5, now=NOW)


def test_reject_log_counts_all_and_logs_once_per_origin_and_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rejects = RejectLog("events")
    with caplog.at_level(logging.WARNING, logger="shared.wire"):
        for _ in range(50):
            rejects.reject("bad_mac", "tcp://10.0.0.9:5000", "fails authentication")
        rejects.record(FrameError("stale", "too old"), "tcp://10.0.0.9:5000")
        rejects.reject("bad_mac", "tcp://10.0.0.7:5000")
    assert rejects.counts == {"bad_mac": 51, "stale": 1}
    assert rejects.total == 52
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert "events: dropped frame from 'tcp://10.0.0.9:5000': bad_mac" in lines[0]


def test_reject_log_stops_logging_new_origins_when_full(caplog: pytest.LogCaptureFixture) -> None:
    rejects = RejectLog(max_origins=3)
    with caplog.at_level(logging.WARNING, logger="shared.wire"):
        for i in range(100):
            rejects.reject("malformed", f"peer{i}")
    assert rejects.total == 100
    assert len(caplog.records) == 4
    assert "over 3 origins" in caplog.records[-1].getMessage()


# --- batch bodies -------------------------------------------------------------------------


def test_batch_body_round_trip_through_a_frame() -> None:
    events = [pack(from_map(usage(1))), pack(from_map(usage(2)))]
    body = batch_body("boot-1", 10, 11, events, hello={"profiles": []})
    frame = open_frame(seal(KEYS["spark01"], "spark01", "batch", body, ts=NOW), key_for, now=NOW)
    received = parse_batch_body(frame.body)
    assert [unpack(b) for b in received["events"]] == [unpack(b) for b in events]
    assert (received["seq0"], received["seq1"], received["hello"]) == (10, 11, {"profiles": []})
    assert "hello" not in batch_body("boot-1", 12, 11, [])  # an empty heartbeat


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "not a map"),
        ({"stream": "", "seq0": 1, "seq1": 1, "events": []}, "stream"),
        ({"stream": "s", "seq0": 3, "seq1": 1, "events": []}, "range 3..1"),
        ({"stream": "s", "seq0": -1, "seq1": 1, "events": []}, "range -1..1"),
        ({"stream": "s", "seq0": True, "seq1": 1, "events": []}, "range True..1"),
        ({"stream": "s", "seq0": 1, "seq1": 1, "events": [1]}, "list of packed events"),
        ({"stream": "s", "seq0": 1, "seq1": 1, "events": [], "hello": 3}, "hello"),
    ],
)
def test_bad_batch_bodies(body: object, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        parse_batch_body(body)


def test_batch_body_refuses_a_bad_range() -> None:
    with pytest.raises(ValueError, match="range 5..3"):
        batch_body("s", 5, 3, [])


def test_a_batch_filled_to_the_budget_seals_under_the_frame_cap() -> None:
    hello = {"profiles": [{"name": f"p{i}", "home": "/h" * 50} for i in range(20)]}
    cap = 32 << 10
    budget = events_budget("spark01", "boot-1", hello, max_frame=cap)
    events: list[bytes] = []
    size = 0
    for i in range(500):
        packed = pack(from_map(usage(i, pad=300)))
        if size + len(packed) + 5 > budget:
            break
        events.append(packed)
        size += len(packed) + 5  # a bin header is at most 5 bytes
    body = batch_body("boot-1", 0, len(events) - 1, events, hello)
    assert len(events) > 10
    assert len(seal(KEYS["spark01"], "spark01", "batch", body, max_size=cap)) <= cap


# --- over a real nng socket pair ----------------------------------------------------------


class Receiver:
    """A minimal hub receive loop: verify, answer valid frames, count and drop the rest."""

    def __init__(self, max_size: int) -> None:
        self.sock = pynng.Rep0(recv_timeout=100, recv_max_size=max_size)
        # the listener's url has the port chosen by the kernel (SockAddr.port is byte-swapped)
        self.address: str = self.sock.listen("tcp://127.0.0.1:0").url
        self.rejects = RejectLog("test")
        self.max_size = max_size
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.sock.recv()
            except pynng.Timeout:
                continue
            try:
                frame = open_frame(data, key_for, max_size=self.max_size, kinds=TO_HUB)
            except FrameError as exc:
                self.rejects.record(exc, "test-peer")
                continue  # no answer: the sender times out, we keep serving
            body = {"seq1": parse_batch_body(frame.body)["seq1"]}
            self.sock.send(seal(KEYS[frame.node], frame.node, "ack", body))


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rx = Receiver(max_size=64 << 10)
    rx.thread.start()
    try:
        yield rx, rx.address
    finally:
        rx.stop.set()
        rx.thread.join()
        rx.sock.close()


def exchange(sock: pynng.Req0, data: bytes) -> bytes | None:
    sock.send(data)
    try:
        reply: bytes = sock.recv()
    except pynng.Timeout:
        return None
    return reply


def test_receiver_answers_valid_frames_and_survives_forged_ones(
    receiver: tuple[Receiver, str],
) -> None:
    rx, address = receiver
    key = KEYS["spark01"]
    with pynng.Req0(recv_timeout=200, send_timeout=1000, recv_max_size=64 << 10) as sock:
        sock.dial(address, block=True)
        forged = seal(KEYS["spark02"], "spark01", "batch", batch_body("s", 0, -1, []))
        assert exchange(sock, forged) is None
        assert exchange(sock, b"\x94\x01garbage") is None
        answer = exchange(sock, seal(key, "spark01", "batch", batch_body("s", 0, 4, [])))
        assert answer is not None
        ack = open_frame(answer, lambda n: key if n == "spark01" else None, kinds=TO_NODE)
        assert (ack.kind, ack.body) == ("ack", {"seq1": 4})
    assert rx.rejects.counts == {"bad_mac": 1, "malformed": 1}


# --- TLS (tls+tcp://) ---------------------------------------------------------------------


def openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_cert(
    directory: Path, name: str, cn: str, ca: str | None = None, san: str | None = None
) -> Path:
    """A P-256 certificate + key in one PEM; self-signed unless `ca` names a CA in `directory`."""
    key, crt = directory / f"{name}.key", directory / f"{name}.crt"
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key)
    if ca is None:
        openssl("req", "-x509", *ec, "-out", crt, "-days", "2", "-subj", f"/CN={cn}")
    else:
        csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
        openssl("req", *ec, "-out", csr, "-subj", f"/CN={cn}")
        openssl(
            "x509", "-req", "-in", csr, "-CA", directory / f"{ca}.crt", "-CAkey",
            directory / f"{ca}.key", "-CAcreateserial", "-out", crt, "-days", "2",
            "-extfile", ext,
        )  # fmt: skip
    pem = directory / f"{name}.pem"
    pem.write_text(crt.read_text() + key.read_text())
    return pem


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: cannot make test certificates")
    directory = tmp_path_factory.mktemp("pki")
    make_cert(directory, "ca", "fleet-ca")
    make_cert(directory, "hub", "hub", ca="ca", san="DNS:localhost,IP:127.0.0.1")
    make_cert(directory, "node", "spark01", ca="ca")
    make_cert(directory, "rogue", "spark01")  # same name, not signed by the fleet CA
    return directory


@pytest.fixture
def tls_hub(certs: Path) -> Iterator[tuple[pynng.Rep0, str]]:
    config = hub_tls_config(certs / "hub.pem", certs / "ca.crt")
    with pynng.Rep0(tls_config=config, recv_timeout=500, recv_max_size=MAX_FRAME) as sock:
        yield sock, sock.listen("tls+tcp://127.0.0.1:0").url


def test_mtls_carries_a_frame(certs: Path, tls_hub: tuple[pynng.Rep0, str]) -> None:
    hub, address = tls_hub
    assert is_tls(address) and is_tls("tls+tcp6://[::1]:1")
    assert not is_tls("tcp://127.0.0.1:1") and not is_tls("ipc:///tls+tcp://")
    config = node_tls_config(certs / "ca.crt", "localhost", certs / "node.pem")
    with pynng.Req0(tls_config=config, recv_timeout=2000, send_timeout=2000) as node:
        node.dial(address, block=True)
        node.send(seal(KEYS["spark01"], "spark01", "batch", batch_body("s", 0, -1, [])))
        frame = open_frame(hub.recv(), key_for, kinds=TO_HUB)
        hub.send(seal(KEYS["spark01"], "spark01", "ack", {"seq1": -1}))
        assert frame.node == "spark01"
        assert open_frame(node.recv(), key_for, kinds=TO_NODE).kind == "ack"


@pytest.mark.parametrize("client_cert", ["rogue.pem", None])
def test_node_without_a_fleet_certificate_gets_nothing_through(
    certs: Path, tls_hub: tuple[pynng.Rep0, str], client_cert: str | None
) -> None:
    hub, address = tls_hub
    cert = certs / client_cert if client_cert else None
    config = node_tls_config(certs / "ca.crt", "localhost", cert)
    with pynng.Req0(tls_config=config, send_timeout=250) as node:
        with pytest.raises(pynng.NNGException):
            node.dial(address, block=True)
        node.dial(address, block=False)  # as a daemon would: retries in the background, silently
        with pytest.raises(pynng.Timeout):
            node.send(seal(KEYS["spark01"], "spark01", "batch", batch_body("s", 0, -1, [])))
    hub.recv_timeout = 100  # the node has given up: anything that got through is queued now
    with pytest.raises(pynng.Timeout):
        hub.recv()


def test_node_refuses_a_hub_under_the_wrong_name(
    certs: Path, tls_hub: tuple[pynng.Rep0, str]
) -> None:
    _, address = tls_hub
    config = node_tls_config(certs / "ca.crt", "wrong.example", certs / "node.pem")
    with pynng.Req0(tls_config=config) as node, pytest.raises(pynng.NNGException):
        node.dial(address, block=True)


def test_tls_config_errors_name_the_problem(certs: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="server_name is required"):
        node_tls_config(certs / "ca.crt", "")
    with pytest.raises(ValueError, match="missing.pem: cannot read hub CA file"):
        node_tls_config(tmp_path / "missing.pem", "localhost")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="junk.pem: TLS files not usable"):
        hub_tls_config(junk)
    with pytest.raises(ValueError, match="no PEM certificate"):
        cert_fingerprint(junk)


def test_cert_fingerprint_matches_openssl(certs: Path) -> None:
    out = subprocess.run(
        ["openssl", "x509", "-in", str(certs / "hub.crt"), "-noout", "-fingerprint", "-sha256"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    expected = out.split("=", 1)[1].strip().replace(":", "").lower()
    assert cert_fingerprint(certs / "hub.pem") == expected
