"""The daemon's continuous reader: what it commits to the outbox equals a one-shot scan of the
same files, while the files grow (torn lines included), across restarts and a full outbox."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from node_agent.daemon import Daemon
from node_agent.live import LiveReader
from node_agent.outbox import Outbox
from node_agent.scan import scan
from node_agent.simulate.fleet import generate_fleet
from shared.codec import unpack
from shared.config import NodeConfig, Profile
from shared.events import Agent, EventSet, UsageEvent
from tests import test_source_codex as codex
from tests.fleet_harness import (
    ProfileSpec,
    child_env,
    grow,
    hub_report,
    make_hub,
    processes,
    profiles_of,
    start_hub,
    start_node,
    stop,
    wait_for,
    write_node,
)
from tests.small_disk import fill, small_tmpfs
from tests.test_source_claude import assistant, main_file, write


@pytest.fixture(scope="module")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live") / "fleet"
    generate_fleet(root, seed=5, machines=1, start=datetime(2026, 10, 5, tzinfo=UTC), days=2)
    return next(p for p in root.iterdir() if p.is_dir())


def config_for(machine: Path, homes: Path | None = None) -> NodeConfig:
    """A profile per agent home of `machine`, pointing at the same names under `homes`."""
    specs = profiles_of(machine, homes or machine)
    profiles = tuple(Profile(p.name, p.agent, p.home, p.billing) for p in specs)
    return NodeConfig(node=machine.name, profiles=profiles)


def outbox_events(outbox: Outbox) -> EventSet:
    events = EventSet()
    batch = outbox.next_batch(max_events=10**9, max_bytes=1 << 40)
    for packed in batch.events if batch else []:
        events.add(unpack(packed))
    return events


def usage_view(events: EventSet) -> dict[str, tuple[object, ...]]:
    return {
        e.event_id: (e.tokens, e.model, e.session_id, e.role, e.profile, e.machine)
        for e in events.counted_usage()
    }


def scanned(machine: Path, config: NodeConfig) -> EventSet:
    out = EventSet()
    for result in scan([], config).results:
        profile = result.target.profile
        if profile is None:
            continue  # an agent home of this machine itself, not part of the test
        for event in result.collector.events.usage.values():
            out.add(_stamp(event, config.node, profile.name))
        for limit in result.collector.events.limits.values():
            out.add(limit)
    return out


def _stamp(event: UsageEvent, node: str, profile: str) -> UsageEvent:
    return msgspec.structs.replace(event, machine=node, profile=profile)


def test_start_commits_what_a_scan_finds(machine: Path, tmp_path: Path) -> None:
    config = config_for(machine)
    with Outbox(tmp_path / "outbox.db") as outbox:
        reader = LiveReader(config, outbox)
        committed = reader.start()
        got = outbox_events(outbox)
    want = scanned(machine, config)
    assert committed > 0
    assert usage_view(got) == usage_view(want)
    assert set(got.limits) == set(want.limits)


def test_a_restart_reads_nothing_twice(machine: Path, tmp_path: Path) -> None:
    config = config_for(machine)
    with Outbox(tmp_path / "outbox.db") as outbox:
        LiveReader(config, outbox).start()
        pending = outbox.pending()
    with Outbox(tmp_path / "outbox.db") as outbox:
        again = LiveReader(config, outbox)
        assert again.start() == 0
        assert again.poll() == 0
        assert outbox.pending() == pending


def test_growing_files_and_a_restart_mid_way_equal_a_scan(machine: Path, tmp_path: Path) -> None:
    live = tmp_path / machine.name
    live.mkdir()
    live_config = config_for(machine, live)
    for home in machine.iterdir():
        (live / home.name).mkdir()
    db = tmp_path / "outbox.db"
    with Outbox(db) as outbox:
        reader = LiveReader(live_config, outbox)
        reader.start()
        for fraction in (0.2, 0.45):
            grow(machine, live, fraction)
            reader.rescan()
    # The node dies here (no flush, nothing else saved) and comes back.
    with Outbox(db) as outbox:
        reader = LiveReader(live_config, outbox)
        reader.start()
        for fraction in (0.7, 1.0):
            grow(machine, live, fraction)
            reader.rescan()
            reader.poll()
        got = outbox_events(outbox)
    want = scanned(live, live_config)
    assert usage_view(got) == usage_view(want)
    assert set(got.limits) == set(want.limits)


def test_a_full_outbox_pauses_reading_and_loses_nothing(machine: Path, tmp_path: Path) -> None:
    config = config_for(machine)
    want = scanned(machine, config)
    total = len(want.usage) + len(want.limits)
    got = EventSet()
    with Outbox(tmp_path / "outbox.db", max_events=max(1, total // 20)) as outbox:
        reader = LiveReader(config, outbox)
        reader.start()
        was_blocked = reader.stats.blocked
        for _ in range(50):
            batch = outbox.next_batch(max_events=10**9, max_bytes=1 << 40)
            if batch is None and not reader.stats.blocked:
                break
            if batch is not None:
                for packed in batch.events:
                    got.add(unpack(packed))
                outbox.ack(batch.seq1)
            reader.rescan()
            was_blocked = was_blocked or reader.stats.blocked
        assert outbox.pending() == 0
    assert was_blocked
    assert usage_view(got) == usage_view(want)


def test_a_whole_file_is_read_again_only_when_it_changed(tmp_path: Path) -> None:
    csv = tmp_path / "cursor" / "usage.csv"
    csv.parent.mkdir()
    header = "Date,Kind,Model,Max Mode,Input (w/ Cache Write),Input (w/o Cache Write),"
    header += "Cache Read,Output Tokens,Total Tokens,Cost\n"
    row = '"2026-11-20T10:00:00.000Z","Included","claude-4.5-sonnet","No",10,5,100,20,135,"0.01"\n'
    csv.write_text(header + row)
    config = NodeConfig(node="n1", profiles=(Profile("cur", Agent.CURSOR, csv),))
    with Outbox(tmp_path / "o.db") as outbox:
        reader = LiveReader(config, outbox)
        first = reader.start()
        assert reader.rescan() == 0
        row2 = row.replace("10:00:00", "11:00:00")
        csv.write_text(header + row + row2)
        os.utime(csv, ns=(1, 2))  # a different mtime even on a coarse clock
        assert reader.rescan() == 1
        assert first >= 1


def test_a_full_disk_pauses_reading_and_loses_nothing(machine: Path, tmp_path: Path) -> None:
    """A real full disk (a small tmpfs): reading waits with a doubling backoff, the daemon's
    hello says why, and once there is room every event arrives, none twice."""
    config = config_for(machine)
    now = [0.0]
    with (
        small_tmpfs(tmp_path / "disk", "4m") as disk,
        Outbox(disk / "outbox.db") as outbox,
    ):
        filler = fill(disk)
        reader = LiveReader(config, outbox, clock=lambda: now[0])
        assert reader.start() == 0
        assert outbox.pending() == 0 and outbox.positions() == {}
        assert reader.stats.stalled is not None and "no room on the disk" in reader.stats.stalled
        daemon = Daemon(
            msgspec.structs.replace(config, state_dir=tmp_path / "state", status_file=None)
        )
        daemon.reader = reader
        assert daemon.hello()["reader"]["stalled"] == reader.stats.stalled
        assert reader.rescan() == 0  # within the wait: not even tried
        now[0] += 1.5
        assert reader.rescan() == 0 and reader.disk.failures == 2  # tried again: still full
        filler.unlink()
        now[0] += 2.5
        got = EventSet()
        for _ in range(20):
            reader.rescan()
            batch = outbox.next_batch(max_events=10**9, max_bytes=1 << 40)
            if batch is None:
                break
            for packed in batch.events:
                got.add(unpack(packed))
            outbox.ack(batch.seq1)
        assert reader.disk.failures == 0 and daemon.hello()["reader"]["stalled"] is None
    assert usage_view(got) == usage_view(scanned(machine, config))


def test_a_log_truncated_and_regrown_between_polls_equals_a_scan(tmp_path: Path) -> None:
    """Truncated in place, then written past the old read position before the next poll: the
    daemon's outbox holds every call a scan of the same file counts."""
    home = tmp_path / "claude"
    log = main_file(home)
    write(log, [assistant(f"msg_old_{i}", f"req_old_{i}") for i in range(2)])
    config = NodeConfig(node="n1", profiles=(Profile("a", Agent.CLAUDE_CODE, home),))
    with Outbox(tmp_path / "outbox.db") as outbox:
        reader = LiveReader(config, outbox)
        reader.start()
        log.write_bytes(b"")  # the same inode, cut to nothing ...
        write(log, [assistant(f"msg_new_{i}", f"req_new_{i}") for i in range(4)])  # ... and past
        reader.poll()
        got = {e.event_id for e in outbox_events(outbox).counted_usage()}
    scanned_ids = {e.event_id for e in scanned(home, config).counted_usage()}
    assert len(scanned_ids) == 4 and scanned_ids <= got


def test_a_last_line_without_its_newline_reaches_the_hub_as_a_scan_counts_it(
    tmp_path: Path,
) -> None:
    """A log at rest may end without its newline (the Codex writer adds it only before its next
    append); a scan counts that last line, so the hub must have it too: real hub and node
    processes, the node killed with SIGKILL before the newline comes, nothing doubled after."""
    now = datetime.now(UTC) - timedelta(hours=1)
    claude_home, codex_home = tmp_path / "claude", tmp_path / "codex"
    transcript = main_file(claude_home)
    stamp = [f"{(now + timedelta(seconds=n)).isoformat()[:23]}Z" for n in range(3)]
    calls = [assistant(f"msg_{n}", f"req_{n}", ts=stamp[n], output=100 + n) for n in range(3)]
    write(transcript, calls[:1])
    with transcript.open("ab") as fh:
        fh.write(orjson.dumps(calls[1]))  # no newline yet
    thread = codex.uuid7(now)
    rollout = codex.rollout(codex_home, thread, now)
    counter = codex.Counter()
    first, second, third = (
        counter.call(now + timedelta(seconds=n), codex.usage(1000 * n, 0, 50 * n, 0))
        for n in (1, 2, 3)
    )
    codex.write(rollout, [codex.meta(now, thread), codex.turn(now), first])
    with rollout.open("ab") as fh:
        fh.write(orjson.dumps(second))
    hub = make_hub(tmp_path)
    specs = [
        ProfileSpec("claude", Agent.CLAUDE_CODE, claude_home),
        ProfileSpec("codex", Agent.CODEX, codex_home),
    ]
    config = write_node(tmp_path, "n1", hub, specs)

    def scanned_total() -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "node_agent.cli", "scan", "--json", "--no-cache"]
            + ["--config", str(config)],
            capture_output=True,
            env=child_env(tmp_path),
            timeout=60,
            check=True,
        )
        total: dict[str, Any] = orjson.loads(out.stdout)["total"]
        return total

    def at_hub(want: dict[str, Any]) -> None:
        wait_for(
            lambda: hub_report(hub, tmp_path)["total"]["calls"] >= want["calls"],
            30,
            f"{want['calls']} calls at the hub",
        )
        got = hub_report(hub, tmp_path)["total"]
        assert (got["calls"], got["tokens"], got["cost"]) == (
            want["calls"],
            want["tokens"],
            want["cost"],
        )

    with processes() as started:
        hub_proc = start_hub(hub, tmp_path)
        started.append(hub_proc)
        node = start_node(config, tmp_path)
        started.append(node)
        want = scanned_total()
        assert want["calls"] == 4  # the lines without their newline included
        at_hub(want)
        node.send_signal(signal.SIGKILL)
        node.wait()
        # The writers add the newline, then go on.
        with transcript.open("ab") as fh:
            fh.write(b"\n" + orjson.dumps(calls[2]) + b"\n")
        with rollout.open("ab") as fh:
            fh.write(b"\n" + orjson.dumps(third) + b"\n")
        node = start_node(config, tmp_path)
        started.append(node)
        want = scanned_total()
        assert want["calls"] == 6
        at_hub(want)
        assert stop(node) == 0
        assert stop(hub_proc) == 0
