"""A live hub against hostile enrolled nodes and strangers, over real nng sockets on loopback:
another node's usage, sequence jumps, replays, floods of undecodable events, forged command
replies, wrong keys (the hub's feed and the node's own log), and plain text on the network."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pynng
import pytest

from hub._counted_log import CountedLog
from hub.config import load_hub_config
from hub.ledger import Period
from hub.serve import Hub
from hub.service import FleetService
from node_agent.link import EventSender, LinkConfig
from shared import events as ev
from shared.codec import pack
from shared.events import MAX_TOKENS, Agent, Tokens, UsageEvent
from shared.wire import TO_NODE, batch_body, open_frame, seal
from tests.fleet_harness import child_env, make_hub, wait_for

ROOT = Path(__file__).resolve().parent.parent
VICTIM_CALL = "claude:msg_victim_1:req_v1"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    running = Hub(load_hub_config(make_hub(tmp_path).config), command_timeout=3.0)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def service_of(running: Hub) -> FleetService:
    assert running.service is not None
    return running.service


def call(event_id: str, revision: int = 0, **kw: object) -> UsageEvent:
    fields: dict[str, object] = {
        "agent": Agent.CLAUDE_CODE,
        "model": "claude-sonnet-4-5",
        "tokens": Tokens(input=1000, output=500),
        "session_id": "s-victim",
        "machine": "victim",
    }
    fields.update(kw)
    return UsageEvent(event_id=event_id, ts=time.time(), revision=revision, **fields)  # type: ignore[arg-type]


class Peer:
    """One node's Req0 link, signing with whatever key it is given."""

    def __init__(
        self, running: Hub, node: str, key: bytes | None = None, wait_ms: int = 1500
    ) -> None:
        self.node = node
        real = running.keys(node)
        assert real is not None
        self.key = real if key is None else key
        self.sock = pynng.Req0(recv_timeout=wait_ms, send_timeout=2000)
        self.sock.dial(running.events_url, block=True)

    def frame(self, seq0: int, seq1: int, events: list[bytes], stream: str = "s1") -> bytes:
        return seal(self.key, self.node, "batch", batch_body(stream, seq0, seq1, events))

    def send(self, frame: bytes) -> dict[str, object] | None:
        """The ack's body, or None when the hub dropped the frame."""
        self.sock.send(frame)
        try:
            reply = self.sock.recv()
        except pynng.Timeout:
            return None
        ack = open_frame(reply, lambda n: self.key if n == self.node else None, kinds=TO_NODE)
        assert isinstance(ack.body, dict)
        return ack.body

    def close(self) -> None:
        self.sock.close()


def warnings_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and text in r.getMessage()
    ]


def test_a_node_cannot_erase_another_nodes_call(hub: Hub, caplog: pytest.LogCaptureFixture) -> None:
    service = service_of(hub)
    victim, evil = Peer(hub, "victim"), Peer(hub, "evil")
    assert victim.send(victim.frame(1, 1, [pack(call(VICTIM_CALL, 40))])) == {"seq1": 1}
    before = service.fleet(Period.TODAY)
    assert before.api_equivalent and before.api_equivalent > 0
    for revision in (2**60, 2**40):  # out of any source's range, and within it
        forged = call(
            VICTIM_CALL, revision, machine="evil", tokens=Tokens(), duplicate_of="claude:x"
        )
        assert evil.send(evil.frame(revision, revision, [pack(forged)])) is not None
    after = service.fleet(Period.TODAY)
    assert after.api_equivalent == before.api_equivalent and after.calls == before.calls
    [kept] = service.sessions()
    assert kept.machine == "victim"
    # logged once (per interval), naming both nodes
    [line] = warnings_with(caplog, "another node stored first")
    assert (
        line.startswith("evil: dropped 1 events")
        and f"{VICTIM_CALL!r}, which belongs to 'victim'" in line
    )
    [line] = warnings_with(caplog, "out of range")  # the revision beyond any source's
    assert line.startswith("evil: dropped 1 events the store refused")
    victim.close()
    evil.close()


def test_a_jump_of_the_sequence_and_a_replay_lose_nothing(hub: Hub) -> None:
    service = service_of(hub)
    node = Peer(hub, "spark01")
    first = pack(call("a", machine="spark01"))
    assert node.send(node.frame(1, 1, [first])) == {"seq1": 1}
    jump = 2**63 - 2
    assert node.send(node.frame(jump, jump, [pack(call("j", machine="spark01"))])) is not None
    later = node.frame(2, 3, [pack(call("b", machine="spark01")), pack(call("c", 2))])
    assert node.send(later) == {"seq1": 3}
    wait_for(lambda: service.fleet(Period.TODAY).calls == 4, 5, "all four calls counted")
    # the same rows sealed again (a lost ack) add nothing
    assert node.send(node.frame(2, 3, [pack(call("b")), pack(call("c", 2))])) == {"seq1": 3}
    assert service.fleet(Period.TODAY).calls == 4
    node.close()


def test_a_replayed_batch_is_dropped_and_no_sign_of_life(hub: Hub) -> None:
    service = service_of(hub)
    node = Peer(hub, "spark01")
    frame = node.frame(1, 1, [pack(call("a", machine="spark01"))])
    assert node.send(frame) == {"seq1": 1}
    [record] = service_of(hub).nodes()
    seen = record.record.last_seen
    wait_for(lambda: time.time() > (seen or 0) + 0.05, 5, "the clock to move on")
    assert node.send(frame) is None  # the exact bytes again: dropped
    assert service.nodes()[0].record.last_seen == seen
    assert hub.receiver is not None and hub.receiver.rejects.counts["replay"] == 1
    assert node.send(node.frame(2, 1, [])) == {"seq1": 1}  # a new heartbeat still counts
    assert (service.nodes()[0].record.last_seen or 0) > (seen or 0)
    node.close()


def test_undecodable_events_are_counted_and_logged_once(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    service = service_of(hub)
    node = Peer(hub, "spark01", wait_ms=20_000)  # 60,000 events: room on a loaded machine
    junk = [b"\xc1"] * 60_000  # 0xc1 is never valid msgpack
    assert node.send(node.frame(1, 60_000, junk)) == {"seq1": 60_000}
    assert node.send(node.frame(60_001, 120_000, junk)) == {"seq1": 120_000}
    assert service.bad_events == 120_000
    [line] = warnings_with(caplog, "undecodable")
    assert "spark01: dropped 60000 undecodable events" in line
    node.close()


def test_a_wrong_key_shows_once_in_the_feed(hub: Hub) -> None:
    service = service_of(hub)
    wrong = Peer(hub, "spark02", key=os.urandom(32), wait_ms=500)
    for seq in range(3):
        assert wrong.send(wrong.frame(seq + 1, seq, [])) is None
    text = "frames from spark02 fail authentication: wrong key?"
    wait_for(lambda: any(i.text == text for i in service.recent_feed()), 5, "the feed line")
    lines = [i for i in service.recent_feed() if i.kind == "auth"]
    assert [(i.machine, i.text) for i in lines] == [("spark02", text)]
    wrong.close()


def test_the_node_says_its_key_may_be_wrong(
    hub: Hub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("node_agent.link.REPLY_TIMEOUT_MS", 300)  # three silent tries, fast
    stop = threading.Event()
    sender = EventSender(
        LinkConfig("spark03", os.urandom(32)),
        hub.events_url,
        tmp_path / "outbox.db",
        dict,
        wake=threading.Event(),
        stop=stop,
    )
    thread = threading.Thread(target=sender.run)
    thread.start()
    try:
        wait_for(lambda: "node key" in (sender.last_error or ""), 20, "the wrong-key hint")
    finally:
        stop.set()
        thread.join()
    hint = "hub does not answer: is the node key right? (fleet-hub enroll spark03)"
    assert hint in (sender.last_error or "")
    assert len(warnings_with(caplog, hint)) == 1


def test_forged_command_replies_are_logged_under_the_peer_that_sent_them(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    assert hub.commander is not None
    got: list[bytes] = []
    with pynng.Respondent0(recv_timeout=30_000, send_timeout=1000) as spy:
        spy.dial(hub.commands_url, block=True)
        wait_for(lambda: len(spy.pipes) == 1, 5, "the spy connected")
        spy_host = str(spy.pipes[0].local_address).rpartition(":")[0]  # its host, not port

        def answer() -> None:
            data = spy.recv()
            got.append(data)
            forged = seal(os.urandom(32), "spark07", "reply", {"id": "x", "ok": True})
            spy.send(forged)

        responder = threading.Thread(target=answer)
        responder.start()
        # A survey reaches the spy once the hub's end of the pipe is up too, which on a loaded
        # machine may come after the spy's: ask until it has one. Each wait leaves time enough
        # for the forged reply, which is dropped, so None.
        deadline = time.monotonic() + 25
        while not got and time.monotonic() < deadline:
            command = {"cmd": "pause", "pid": 1, "ctime": 0.0}
            assert hub.commander.send("spark07", command, 6.0) is None
        responder.join()
    [line] = warnings_with(caplog, "replies: dropped frame")
    assert f"from {spy_host!r}" in line and "bad_mac" in line


def test_plain_tcp_on_the_network_is_refused_unless_allowed(tmp_path: Path) -> None:
    setup = make_hub(tmp_path, events="tcp://0.0.0.0:0", commands="tcp://127.0.0.1:0")
    serve = [sys.executable, "-m", "hub.cli", "serve", "--config", str(setup.config)]
    env = child_env(tmp_path)
    done = subprocess.run(serve, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "events = 'tcp://0.0.0.0:0'" in line and "without TLS" in line
    assert "allow_plaintext = true" in line and "reads every command" in line
    config = load_hub_config(setup.config)
    allowed = Hub(replace(config, allow_plaintext=True))
    allowed.start()
    allowed.stop()


def test_init_says_a_plain_hub_will_be_refused_and_allow_plaintext_sets_it(tmp_path: Path) -> None:
    def init(where: str, *flags: str) -> subprocess.CompletedProcess[str]:
        config = tmp_path / where / "hub.toml"
        command = [sys.executable, "-m", "hub.cli", "init", "--config", str(config), *flags]
        env = child_env(tmp_path)
        return subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
        )

    plain = init("plain")
    assert plain.returncode == 0, plain.stderr
    assert "will refuse to start" in plain.stdout and "--allow-plaintext" in plain.stdout
    assert not load_hub_config(tmp_path / "plain" / "hub.toml").allow_plaintext
    allowed = init("allowed", "--allow-plaintext")
    assert allowed.returncode == 0, allowed.stderr
    assert "refuse" not in allowed.stdout
    assert load_hub_config(tmp_path / "allowed" / "hub.toml").allow_plaintext


def test_a_counted_log_writes_one_line_per_origin_and_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    counted = CountedLog(logging.getLogger("test.counted"), "bad things", clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, "test.counted"):
        counted.note("spark01", 60_000, "one")
        counted.note("spark01", 5, "two")  # within the interval: counted, not logged
        counted.note("spark02", 1, "three")  # another origin has its own line
        counted.note("spark01", 1, "other owner", about="victim")  # so has another subject
        now[0] = 61.0
        counted.note("spark01", 2, "four")
    assert [r.getMessage() for r in caplog.records] == [
        "spark01: dropped 60000 bad things (e.g. one); "
        "further ones are logged at most once every 60s",
        "spark02: dropped 1 bad things (e.g. three); "
        "further ones are logged at most once every 60s",
        "spark01: dropped 1 bad things (e.g. other owner); "
        "further ones are logged at most once every 60s",
        "spark01: dropped 7 bad things in the last 61s (e.g. four)",
    ]
    assert counted.counts == {"spark01": 60_008, "spark02": 1}


def test_a_peer_that_redials_for_every_bad_frame_gets_one_log_line(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    """Each new connection has a new port: were origins keyed by it, one host could write a
    line per connection and use up the origins logged, hiding a real node's wrong key."""
    assert hub.receiver is not None
    for _ in range(40):
        with pynng.Req0(recv_timeout=200, send_timeout=1000) as peer:
            peer.dial(hub.events_url, block=True)
            peer.send(b"not a frame")
            with pytest.raises(pynng.Timeout):
                peer.recv()
    wait_for(lambda: hub.receiver is not None and hub.receiver.rejects.total == 40, 10, "counts")
    [line] = warnings_with(caplog, "events: dropped frame")
    assert "from '127.0.0.1'" in line and "from there are only counted" in line


def test_a_token_count_beyond_any_call_is_dropped_and_reports_still_work(hub: Hub) -> None:
    """2^64-1 tokens from an enrolled node made the fleet's totals absurd and `fleet-hub report
    --json` fail for good (orjson stops at 64 bits)."""
    service = service_of(hub)
    node = Peer(hub, "spark01")
    huge = [
        pack(call(f"big{n}", machine="spark01", tokens=Tokens(input=n)))
        for n in (2**64 - 1, 2**63, MAX_TOKENS + 1)
    ]
    good = pack(call("fine", machine="spark01"))
    assert node.send(node.frame(1, 4, [*huge, good])) == {"seq1": 4}
    assert service.bad_events == 3
    assert service.fleet(Period.TODAY).calls == 1
    assert service.fleet(Period.TODAY).input == 1000
    node.close()


def hello_with(**fields: object) -> dict[str, object]:
    hello: dict[str, object] = {
        "node": "spark01",
        "version": "1",
        "boot_time": time.time(),
        "os": "linux",
        "cpu_count": 2,
    }
    hello.update(fields)
    return hello


def test_a_hello_with_numbers_no_node_has_is_dropped_and_the_hub_serves_on(hub: Hub) -> None:
    """cpu_count 2^63 raised OverflowError in the store, which ended the receiver thread: the
    hub still ran but took no batch from any node again."""
    service = service_of(hub)
    node, other = Peer(hub, "spark01"), Peer(hub, "spark02")
    for n, hello in enumerate(
        [hello_with(cpu_count=2**63), hello_with(boot_time=float("nan"))], start=1
    ):
        body = batch_body("s1", n, n, [pack(call(f"e{n}", machine="spark01"))], hello=hello)
        assert node.send(seal(node.key, "spark01", "batch", body)) == {"seq1": n}
    assert other.send(other.frame(1, 1, [pack(call("o", machine="spark02"))])) == {"seq1": 1}
    assert service.fleet(Period.TODAY).calls == 3
    node.close()
    other.close()


def test_a_batch_that_fails_unexpectedly_is_refused_with_why_and_the_hub_serves_on(
    hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    assert hub.receiver is not None
    handle = hub.receiver.handle

    def failing_for_spark01(frame: Any) -> dict[str, Any]:
        if frame.node == "spark01":
            raise RuntimeError("a bug")
        return handle(frame)

    hub.receiver.handle = failing_for_spark01
    node, other = Peer(hub, "spark01", wait_ms=500), Peer(hub, "spark02")
    reply = node.send(node.frame(1, 1, [pack(call("e", machine="spark01"))]))
    assert reply == {
        "err": "the hub could not store this batch (RuntimeError: a bug); send it again"
    }
    assert other.send(other.frame(1, 1, [pack(call("o", machine="spark02"))])) == {"seq1": 1}
    [line] = warnings_with(caplog, "RuntimeError: a bug")
    assert "spark01" in line
    node.close()
    other.close()


def test_a_time_past_any_date_is_refused_and_the_batch_counted(hub: Hub) -> None:
    """A rate-limit reset at 1e300 s made the feed's date raise OverflowError after the store's
    commit, so the batch went unanswered and its calls stayed out of the live totals."""
    service = service_of(hub)
    node = Peer(hub, "spark01")
    now = time.time()
    limits = [
        ev.LimitEvent(f"l{n}", now, Agent.CLAUDE_CODE, ev.LimitKind.RATE_LIMIT_HIT, resets_at=at)
        for n, at in enumerate((1e300, float("nan"), -1.0))
    ]
    # a status file's "until" in the year 9999 at UTC-14: "year 10000 is out of range" refused
    # the whole batch, and the node sent it again for ever, its later calls stuck behind it
    switched = ev.ProfileEvent(
        "p", now, "spark01", "max-a", Agent.CLAUDE_CODE, ev.ProfileState.RATE_LIMITED, until=2.53e11
    )
    events = [*map(pack, [*limits, switched]), pack(call("fine", machine="spark01"))]
    assert node.send(node.frame(1, 5, events)) == {"seq1": 5}
    assert service.fleet(Period.TODAY).calls == 1
    node.close()


def test_a_sequence_past_64_signed_bits_is_malformed_and_the_hub_serves_on(hub: Hub) -> None:
    node = Peer(hub, "spark01")
    for seq in (2**63, 2**64 - 1):  # batch_body() refuses them: sealed by hand
        body = {"stream": "s1", "seq0": seq, "seq1": seq, "events": [pack(call("e"))]}
        reply = node.send(seal(node.key, "spark01", "batch", body))
        assert reply is not None and "is not valid" in str(reply.get("err"))
    assert node.send(node.frame(1, 1, [pack(call("e", machine="spark01"))])) == {"seq1": 1}
    node.close()
