"""The hub store on real SQLite files: idempotent batches, revisions, attribution, the node
registry, restart, and a kill -9 in the middle of ingesting."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import msgpack
import msgspec
import pytest

from hub._payloads import TRAIN_AFTER
from hub._schema import SCHEMA_VERSION, StoreError
from hub.model import NodeState
from hub.store import DB_FILE, Store
from node_agent.sources import claude
from shared.codec import pack, to_map, unpack
from shared.config import Billing
from shared.events import (
    MAX_REVISION,
    Agent,
    Event,
    LimitEvent,
    LimitKind,
    ProfileEvent,
    ProfileState,
    Tokens,
    UsageEvent,
)
from shared.hello import NodeHello, ProfileInfo

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_795_000_000.0  # 2026-11-18


def usage(event_id: str, revision: int = 0, *, ts: float = T0, **kw: object) -> UsageEvent:
    fields: dict[str, object] = {
        "agent": Agent.CLAUDE_CODE,
        "model": "claude-sonnet-4-5",
        "tokens": Tokens(input=100, output=50 + revision),
        "session_id": "s1",
        "machine": "spark01",
        "profile": "max-a",
    }
    fields.update(kw)
    return UsageEvent(event_id=event_id, ts=ts, revision=revision, **fields)  # type: ignore[arg-type]


def hello(*profiles: ProfileInfo) -> NodeHello:
    return NodeHello("spark01", "0.1.0", T0 - 3600, "linux", 8, profiles)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.in_dir(tmp_path)


def stored(store: Store) -> dict[str, UsageEvent]:
    return {e.event_id: e for e in store.usage_events()}


def test_same_batch_twice_changes_nothing(store: Store) -> None:
    batch = [usage("a"), usage("b"), usage("c")]
    first = store.ingest("spark01", "events", 1, 3, batch, None, T0)
    assert [new.event_id for _, new in first.changes] == ["a", "b", "c"]
    again = store.ingest("spark01", "events", 1, 3, batch, None, T0 + 5)
    assert again.changes == [] and again.ignored == 3 and again.foreign == []
    assert store.stream_seq("spark01", "events") == 3
    assert sorted(stored(store)) == ["a", "b", "c"]
    # ... and a re-sealed re-send (a new frame: its ack was lost) is a sign of life
    assert store.nodes()[0].last_seen == T0 + 5


def test_a_jump_of_the_sequence_never_costs_later_events(store: Store) -> None:
    """One signed frame with seq 2**63 - 2 must not make the hub skip the stream's later,
    genuinely new batches (nor a renumbered stream's: a fresh outbox starts again at 1)."""
    store.ingest("spark01", "events", 1, 1, [usage("a")], None, T0)
    store.ingest("spark01", "events", 2**63 - 2, 2**63 - 2, [usage("jump")], None, T0)
    later = store.ingest("spark01", "events", 2, 3, [usage("b"), usage("c", 1)], None, T0)
    assert [new.event_id for _, new in later.changes] == ["b", "c"]
    again = store.ingest("spark01", "events", 2, 3, [usage("b"), usage("c", 1)], None, T0)
    assert again.changes == [] and again.ignored == 2  # the replay adds nothing
    assert sorted(stored(store)) == ["a", "b", "c", "jump"]


def test_another_nodes_event_cannot_be_erased_or_rewritten(store: Store) -> None:
    """The issue's attack: node `evil` sends `victim`'s event id, a huge revision, no tokens,
    `duplicate_of` set. The event stays `victim`'s and counted."""
    victim_call = usage("claude:msg_victim_1:req_v1", 40, machine="victim")
    store.ingest("victim", "events", 1, 1, [victim_call], None, T0)
    for revision in (41, 2**40):
        forged = usage(
            "claude:msg_victim_1:req_v1",
            revision,
            machine="evil",
            tokens=Tokens(),
            duplicate_of="claude:other",
        )
        result = store.ingest("evil", "events", 1, 1, [forged, usage("own")], None, T0 + 1)
        assert result.foreign == [("claude:msg_victim_1:req_v1", "victim")]
        assert [new.event_id for _, new in result.changes if new.event_id != "own"] == []
    kept = stored(store)["claude:msg_victim_1:req_v1"]
    assert (kept.machine, kept.revision, kept.counts) == ("victim", 40, True)
    assert kept.tokens == victim_call.tokens
    assert {e.event_id for e in store.usage_events(counted_only=True)} == {
        "claude:msg_victim_1:req_v1",
        "own",
    }
    # the owner's own next revision still applies
    newer = store.ingest(
        "victim", "events", 2, 2, [usage("claude:msg_victim_1:req_v1", 42)], None, T0
    )
    assert [new.revision for _, new in newer.changes] == [42]


def test_revisions_above_what_a_source_produces_are_rejected(store: Store) -> None:
    assert 2 * claude.RETRACTED <= MAX_REVISION  # a retraction of any sane call fits
    store.ingest("spark01", "events", 1, 1, [usage("a", 2)], None, T0)
    result = store.ingest("spark01", "events", 2, 2, [usage("a", 2**60)], None, T0)
    [(event_id, why)] = result.rejected
    assert event_id == "a" and "revision" in why
    assert stored(store)["a"].revision == 2  # later genuine revisions still apply
    assert store.ingest("spark01", "events", 3, 3, [usage("a", 3)], None, T0).changes


def test_same_events_in_another_batch_or_rescanned_add_nothing(store: Store) -> None:
    store.ingest("spark01", "events", 1, 2, [usage("a"), usage("b")], None, T0)
    # the node lost its outbox and re-read the log: same ids, new seqs
    result = store.ingest("spark01", "events", 3, 5, [usage("b"), usage("a"), usage("c")], None, T0)
    assert [(old, new.event_id) for old, new in result.changes] == [(None, "c")]
    assert result.ignored == 2
    assert sorted(stored(store)) == ["a", "b", "c"]


def test_streams_are_independent_per_node_and_stream(store: Store) -> None:
    store.ingest("spark01", "events", 1, 5, [usage("a")], None, T0)
    other = store.ingest("spark02", "events", 1, 5, [usage("b", machine="spark02")], None, T0)
    second = store.ingest("spark01", "limits", 1, 5, [], None, T0)
    assert other.changes and not other.gap and not second.gap
    assert store.stream_seq("spark01", "limits") == 5


def test_higher_revision_supersedes_and_reports_the_old_version(store: Store) -> None:
    store.ingest("spark01", "events", 1, 1, [usage("a", 0)], None, T0)
    result = store.ingest("spark01", "events", 2, 2, [usage("a", 2)], None, T0)
    [(old, new)] = result.changes
    assert old is not None and old.revision == 0 and new.revision == 2
    for stale in (0, 1, 2):  # lower or equal revisions change nothing
        late = store.ingest(
            "spark01", "events", 3 + stale, 3 + stale, [usage("a", stale)], None, T0
        )
        assert late.changes == [] and late.ignored == 1
    assert stored(store)["a"].revision == 2
    assert stored(store)["a"].tokens.output == 52


def test_a_batch_with_several_revisions_keeps_the_highest(store: Store) -> None:
    result = store.ingest(
        "spark01", "events", 1, 3, [usage("a", 1), usage("a", 3), usage("a", 2)], None, T0
    )
    assert [(old, new.revision) for old, new in result.changes] == [(None, 3)]
    assert result.ignored == 2
    assert stored(store)["a"].revision == 3


def test_retraction_is_kept_but_not_counted(store: Store) -> None:
    store.ingest("spark01", "events", 1, 1, [usage("a"), usage("b")], None, T0)
    result = store.ingest("spark01", "events", 2, 2, [usage("b", 1, duplicate_of="a")], None, T0)
    [(old, new)] = result.changes
    assert old is not None and old.counts and not new.counts
    assert {e.event_id for e in store.usage_events()} == {"a", "b"}
    assert [e.event_id for e in store.usage_events(counted_only=True)] == ["a"]


def test_machine_is_the_authenticated_node_and_account_comes_from_the_profile(
    store: Store,
) -> None:
    info = ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, "ops-a@example.com")
    limit = LimitEvent("l1", T0, Agent.CLAUDE_CODE, LimitKind.RATE_LIMIT_HIT, profile="max-a")
    events: list[Event] = [
        usage("a", machine="someone-else"),
        usage("b", account="own@example.com"),
        limit,
    ]
    result = store.ingest("spark01", "events", 1, 1, events, hello(info), T0)
    assert [new.machine for _, new in result.changes] == ["spark01", "spark01"]
    kept = stored(store)
    assert kept["a"].machine == "spark01" and kept["a"].account == "ops-a@example.com"
    assert kept["b"].account == "own@example.com"  # what the node said wins
    [lim] = store.limit_events()
    assert lim.machine == "spark01" and lim.account == "ops-a@example.com"


def test_limit_and_profile_events_are_insert_or_ignore(store: Store) -> None:
    limit = LimitEvent("l1", T0, Agent.CODEX, LimitKind.QUOTA_SNAPSHOT, used_percent=40.0)
    switch = ProfileEvent(
        "p1", T0, "spark01", "max-a", Agent.CLAUDE_CODE, ProfileState.RATE_LIMITED, until=T0 + 60
    )
    first = store.ingest("spark01", "events", 1, 1, [limit, switch], None, T0)
    assert [e.event_id for e in first.limits] == ["l1"]
    assert [e.event_id for e in first.profile_events] == ["p1"]
    changed = msgspec.structs.replace(limit, used_percent=90.0)
    second = store.ingest("spark01", "events", 2, 2, [changed, switch], None, T0)
    assert second.limits == [] and second.profile_events == [] and second.ignored == 2
    assert [e.used_percent for e in store.limit_events()] == [40.0]
    assert [e.until for e in store.profile_events()] == [T0 + 60]


def test_hello_registers_the_node_and_its_profiles(store: Store) -> None:
    api = ProfileInfo("key-b", Agent.CODEX, Billing.API, "team@example.com")
    result = store.ingest("spark01", "events", 1, 0, [], hello(api), T0)
    assert not result.billing_changed  # a new API profile bills as before: API
    [node] = store.nodes()
    assert (node.node, node.version, node.os, node.cpu_count) == ("spark01", "0.1.0", "linux", 8)
    assert node.first_seen == node.last_seen == T0

    sub = ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, plan="max_20x")
    assert store.ingest("spark01", "events", 1, 0, [], hello(api, sub), T0 + 1).billing_changed
    assert not store.ingest("spark01", "events", 1, 0, [], hello(api, sub), T0 + 2).billing_changed
    now_api = dataclasses.replace(sub, billing=Billing.API)
    assert store.ingest("spark01", "events", 1, 0, [], hello(api, now_api), T0 + 3).billing_changed

    records = {p.name: p for p in store.profiles()}
    assert records["max-a"].billing is Billing.API and records["max-a"].plan == "max_20x"
    assert records["max-a"].first_seen == T0 + 1 and records["max-a"].last_announced == T0 + 3
    assert store.billing() == {("spark01", "key-b"): Billing.API, ("spark01", "max-a"): Billing.API}


def test_node_state_follows_last_seen(store: Store) -> None:
    store.ingest("spark01", "events", 1, 0, [], None, T0)  # an empty range: a heartbeat
    assert store.stream_seq("spark01", "events") is None  # ... which commits no batch
    store.ingest("spark01", "events", 1, 0, [], None, T0 + 100)
    [node] = store.nodes()
    assert node.first_seen == T0 and node.last_seen == T0 + 100
    assert node.state(T0 + 130, stale_after=30) is NodeState.ONLINE
    assert node.state(T0 + 131, stale_after=30) is NodeState.STALE
    assert node.state(T0 + 400, stale_after=30) is NodeState.STALE
    assert node.state(T0 + 401, stale_after=30) is NodeState.OFFLINE
    never = dataclasses.replace(node, last_seen=None)
    assert never.state(T0, stale_after=30) is NodeState.OFFLINE
    # a late batch with an older clock never moves last_seen back
    store.ingest("spark01", "events", 1, 0, [], None, T0 + 50)
    assert store.nodes()[0].last_seen == T0 + 100


def test_bad_ranges_are_refused_and_gaps_flagged(store: Store) -> None:
    with pytest.raises(ValueError, match="bad range"):
        store.ingest("spark01", "events", 5, 3, [], None, T0)
    with pytest.raises(ValueError, match="bad range"):
        store.ingest("spark01", "events", 4, 3, [usage("a")], None, T0)  # a heartbeat with events
    assert not store.ingest("spark01", "events", 1, 2, [usage("a")], None, T0).gap
    assert store.ingest("spark01", "events", 9, 9, [usage("b")], None, T0).gap
    assert not store.ingest("spark01", "events", 10, 11, [usage("c")], None, T0).gap


def test_a_failed_batch_leaves_nothing_behind(store: Store) -> None:
    class Boom(Exception):
        pass

    class Exploding(UsageEvent):  # a Struct subclass: slotted like its base
        @property
        def counts(self) -> bool:
            raise Boom

    bad = Exploding("b", T0, Agent.CODEX, "gpt-5", Tokens(1), "s")
    with pytest.raises(Boom):
        store.ingest("spark01", "events", 1, 2, [usage("a"), bad], hello(), T0)
    assert stored(store) == {} and store.stream_seq("spark01", "events") is None
    assert store.nodes() == []


def test_an_unstorable_event_is_reported_and_never_blocks_the_stream(store: Store) -> None:
    limit = LimitEvent("l1", float("inf"), Agent.CODEX, LimitKind.QUOTA_SNAPSHOT)
    events: list[Event] = [usage("a"), usage("nan", ts=float("nan")), usage("big", 2**64), limit]
    result = store.ingest("spark01", "events", 1, 1, events, None, T0)
    assert [event_id for event_id, _ in result.rejected] == ["nan", "big", "l1"]
    assert "finite" in result.rejected[0][1] and "revision" in result.rejected[1][1]
    assert [new.event_id for _, new in result.changes] == ["a"]
    assert store.stream_seq("spark01", "events") == 1  # committed: the node moves on


def test_time_range_and_order(store: Store) -> None:
    events = [usage("c", ts=T0 + 20), usage("a", ts=T0), usage("b", ts=T0 + 10)]
    store.ingest("spark01", "events", 1, 1, events, None, T0)
    assert [e.event_id for e in store.usage_events()] == ["a", "b", "c"]
    assert [e.event_id for e in store.usage_events(since=T0 + 10)] == ["b", "c"]
    assert [e.event_id for e in store.usage_events(until=T0 + 10)] == ["a"]
    assert [e.event_id for e in store.usage_events(T0 + 5, T0 + 20)] == ["b"]


def test_audit_log_is_newest_first(store: Store) -> None:
    ids = [store.audit("ops", "pause", f"spark01:{pid}", "ok", T0 + pid) for pid in (1, 2, 3)]
    assert ids == sorted(ids)
    log = store.audit_log(limit=2)
    assert [(r.target, r.ts) for r in log] == [("spark01:3", T0 + 3), ("spark01:2", T0 + 2)]


def test_reopening_gives_the_same_state(tmp_path: Path) -> None:
    info = ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION)
    with Store.in_dir(tmp_path) as first:
        first.ingest("spark01", "events", 1, 2, [usage("a"), usage("b", 1)], hello(info), T0)
        first.ingest("spark01", "events", 3, 3, [usage("b", 2, duplicate_of="a")], None, T0 + 1)
        first.audit("ops", "kill", "spark01:7", "ok", T0)
        before = (
            list(first.usage_events()),
            first.nodes(),
            first.profiles(),
            first.audit_log(),
            first.stream_seq("spark01", "events"),
        )
    with Store.in_dir(tmp_path) as again:
        after = (
            list(again.usage_events()),
            again.nodes(),
            again.profiles(),
            again.audit_log(),
            again.stream_seq("spark01", "events"),
        )
        resent = [usage("b", 2, duplicate_of="a")]
        assert again.ingest("spark01", "events", 3, 3, resent, None, T0 + 2).changes == []
    assert after == before


def test_a_database_from_another_schema_is_refused(tmp_path: Path) -> None:
    Store.in_dir(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="schema version"):
        Store.in_dir(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="junk.db"):
        Store(junk)


# Upgrades from schema v1 and v2, with data: tests/test_hub_rollup.py.


def test_received_bytes_are_stored_as_they_came(store: Store) -> None:
    kept, moved = usage("a"), usage("b", machine="elsewhere")
    # the first as a newer node might send it (a field this hub does not know); the second is
    # re-filed under the sending node, so its received form is not what gets stored
    blobs = [msgpack.packb({**to_map(kept), "future": 1}), pack(moved)]
    store.ingest("spark01", "events", 1, 1, [kept, moved], None, T0, packed=blobs)
    payloads = dict(store._db.execute("SELECT event_id, payload FROM usage"))  # noqa: SLF001
    assert payloads["a"] == blobs[0]
    assert unpack(payloads["b"]) == msgspec.structs.replace(moved, machine="spark01")
    with pytest.raises(ValueError, match="packed"):
        store.ingest("spark01", "events", 2, 2, [kept], None, T0, packed=[])


# A child that ingests batches of N events as fast as it can; batch k holds ids k.0 .. k.N-1.
CHILD = """
import sys
from hub.store import Store
from shared.events import Agent, Tokens, UsageEvent
store = Store(sys.argv[1])
n = int(sys.argv[2])
for k in range(1, 100_000):
    batch = [UsageEvent(f"{k}.{i}", 1.0 + k, Agent.CODEX, "gpt-5", Tokens(1, 1), "s")
             for i in range(n)]
    store.ingest("spark01", "events", k, k, batch, None, float(k))
    if k == 3:
        print("ready", flush=True)
"""


@pytest.mark.parametrize("delay", [0.0, 0.013, 0.05])
def test_kill_9_mid_ingest_leaves_whole_batches(tmp_path: Path, delay: float) -> None:
    path = tmp_path / DB_FILE
    n = 200
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(n)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline() == "ready\n"
    time.sleep(delay)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    with Store(path) as store:
        high = store.stream_seq("spark01", "events")
        assert high is not None and high >= 3
        ids = {e.event_id for e in store.usage_events()}
        assert ids == {f"{k}.{i}" for k in range(1, high + 1) for i in range(n)}
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    db.close()


def test_payloads_are_compressed_once_the_store_can_train_a_dictionary(tmp_path: Path) -> None:
    """Rows before the dictionary stay plain msgpack, rows after it are zstd frames several
    times smaller, and every event reads back as it was, after a restart too, superseded or
    not."""

    def call(i: int, revision: int = 0) -> UsageEvent:
        return usage(
            f"claude:msg_{i:06d}:req_{i * 7919:08d}",
            revision,
            ts=T0 + i,
            session_id=f"session-{i // 50:04d}",
            project=f"/home/dev/repo-{i % 5}",
            origin=f"/home/dev/.claude/projects/-home-dev-repo/session-{i // 50:04d}.jsonl:{i}",
        )

    plain = [call(i) for i in range(TRAIN_AFTER)]
    later = [call(i) for i in range(TRAIN_AFTER, TRAIN_AFTER + 500)]
    with Store.in_dir(tmp_path) as store:
        store.ingest("spark01", "events", 1, 1, plain, None, T0)  # ... then it trains
        store.ingest("spark01", "events", 2, 2, later, None, T0)
        store.ingest("spark01", "events", 3, 3, [call(1, 2), call(TRAIN_AFTER + 1, 2)], None, T0)
        sizes = dict(store._db.execute("SELECT event_id, length(payload) FROM usage"))  # noqa: SLF001
    expected = {e.event_id: e for e in [*plain, *later, call(1, 2), call(TRAIN_AFTER + 1, 2)]}
    assert sizes[plain[0].event_id] == len(pack(plain[0]))
    assert sum(sizes[e.event_id] for e in later) * 3 < sum(len(pack(e)) for e in later)
    with Store.in_dir(tmp_path) as again:
        assert stored(again) == expected


def test_the_latest_calls_start_where_at_most_count_remain(store: Store) -> None:
    """The detectors' seed streams the latest calls from this point instead of keeping them."""
    batch = [usage(f"c{n}", ts=T0 + n) for n in range(5)] + [usage("tie", ts=T0 + 2)]
    store.ingest("spark01", "events", 1, 6, batch, None, T0 + 10)
    assert store.start_of_latest_calls(T0, 3) == T0 + 2  # c4, c3, then c2 and its tie
    assert len(list(store.usage_events(T0 + 2, counted_only=True))) == 4
    assert store.start_of_latest_calls(T0, 100) == T0  # fewer than asked: from `since`
    assert store.start_of_latest_calls(T0 + 4, 3) == T0 + 4
