"""The fake agent is a real process that looks like an agent and logs like one: its logs,
read by the real sources, equal the truth it journals, call for call, even when it is
stopped mid-run."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest

from node_agent.scan import scan
from node_agent.simulate.fake_agent import LaunchedAgent, launch, load_truth
from shared.config import NodeConfig
from shared.events import Agent, EventSet, LimitKind, Tokens, UsageEvent

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux processes")

AGENTS = [Agent.CLAUDE_CODE, Agent.CODEX]
NAMES = {Agent.CLAUDE_CODE: "claude", Agent.CODEX: "codex"}
Start = Callable[..., LaunchedAgent]


@pytest.fixture
def start() -> Iterator[Start]:
    """Launch fake agents; every process of their trees is killed afterwards, pass or fail."""
    launched: list[LaunchedAgent] = []

    def go(agent: Agent, home: Path, *args: str) -> LaunchedAgent:
        one = launch(agent, home, *args)
        launched.append(one)
        return one

    yield go
    for one in launched:
        one.destroy()


def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def read_events(home: Path) -> EventSet:
    result = scan([home], NodeConfig(node="test"))
    assert not result.problems
    events = EventSet()
    for target in result.results:
        assert not target.collector.problems
        for usage in target.collector.events.usage.values():
            events.add(usage)
        for limit in target.collector.events.limits.values():
            events.add(limit)
    return events


def total(events: list[UsageEvent]) -> Tokens:
    out = Tokens()
    for event in events:
        out = out + event.tokens
    return out


def finished(one: LaunchedAgent) -> int:
    return one.popen.wait(timeout=20)


@pytest.mark.parametrize("agent", AGENTS)
def test_logs_equal_truth_and_are_stamped_now(agent: Agent, tmp_path: Path, start: Start) -> None:
    home = tmp_path / "home"
    before = datetime.now(UTC).timestamp()
    one = start(agent, home, "--calls", "5", "--pace", "0.01", "--then", "exit")
    assert finished(one) == 0
    after = datetime.now(UTC).timestamp()
    events = read_events(home).counted_usage()
    assert len(events) == 5
    assert {e.session_id for e in events} == {one.session_id}
    # Wall-clock stamps, not simulated time.
    assert all(before - 1 <= e.ts <= after + 1 for e in events)
    assert one.path.is_file() and one.path.is_relative_to(home)


@pytest.mark.parametrize("agent", AGENTS)
def test_truth_journal_matches_what_was_logged(agent: Agent, tmp_path: Path, start: Start) -> None:
    home, journal = tmp_path / "home", tmp_path / "truth.jsonl"
    one = start(
        agent,
        home,
        *("--calls", "7", "--pace", "0.01", "--then", "exit", "--children", "0"),
        *("--truth", str(journal), "--session-seed", "4", "--machine", "m1"),
    )
    assert finished(one) == 0
    truth = load_truth(journal)
    events = read_events(home).counted_usage()
    want = truth.total()
    assert want.calls == len(events) == 7
    assert want.tokens == total(events)
    assert want.unknown_calls == 0 and want.cost > 0
    groups = truth.total_by("machine", "profile", "agent", "session_id")
    assert list(groups) == [("m1", "home", agent.value, one.session_id)]


@pytest.mark.parametrize("agent", AGENTS)
def test_ratelimit_mode_writes_the_agents_limit_record(
    agent: Agent, tmp_path: Path, start: Start
) -> None:
    home, journal = tmp_path / "home", tmp_path / "truth.jsonl"
    one = start(
        agent,
        home,
        *("--mode", "ratelimit", "--calls", "2", "--pace", "0.01", "--then", "exit"),
        *("--truth", str(journal), "--children", "0"),
    )
    assert finished(one) == 0
    events = read_events(home)
    hits = [e for e in events.limits.values() if e.kind is LimitKind.RATE_LIMIT_HIT]
    assert len(hits) == 1 and hits[0].session_id == one.session_id
    assert len(events.counted_usage()) == 2
    truth = load_truth(journal, root=tmp_path)
    assert truth.counts["rate_limit_hits"] == 1 and truth.total().calls == 2
    assert truth.rate_limit_hits[0]["message"] == hits[0].message


@pytest.mark.parametrize("agent", AGENTS)
def test_runaway_mode_thrashes_the_cache(agent: Agent, tmp_path: Path, start: Start) -> None:
    home = tmp_path / "home"
    args = ("--mode", "runaway", "--calls", "4", "--pace", "0.01", "--then", "exit")
    one = start(agent, home, *args, "--children", "0")
    assert finished(one) == 0
    events = read_events(home).counted_usage()
    assert len(events) == 4
    assert all(e.tokens.cache_read == 0 for e in events)
    if agent is Agent.CLAUDE_CODE:
        assert all(e.tokens.cache_write_1h >= 60_000 for e in events)
    else:
        assert all(e.tokens.input >= 100_000 for e in events)


@pytest.mark.parametrize("agent", AGENTS)
def test_looks_like_a_running_agent(agent: Agent, tmp_path: Path, start: Start) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    project.mkdir()
    one = start(agent, home, "--children", "2", "--pace", "0.2", "--project", str(project))
    proc = psutil.Process(one.pid)
    assert proc.name() == NAMES[agent]
    variable = "CLAUDE_CONFIG_DIR" if agent is Agent.CLAUDE_CODE else "CODEX_HOME"
    assert proc.environ()[variable] == str(home)
    assert proc.cwd() == str(project)
    # Two tool shells, each with a child of its own.
    assert sorted(c.pid for c in proc.children()) == sorted(one.children)
    until(lambda: len(proc.children(recursive=True)) == 4, what="the tools' grandchildren")
    held = {f.path: f.mode for f in proc.open_files()}
    assert held.get(str(one.path)) == "a"


@pytest.mark.parametrize("agent", AGENTS)
def test_sigterm_ends_it_cleanly_and_orphans_its_tools(
    agent: Agent, tmp_path: Path, start: Start
) -> None:
    home, journal = tmp_path / "home", tmp_path / "truth.jsonl"
    one = start(agent, home, "--pace", "0.02", "--children", "1", "--truth", str(journal))
    until(lambda: journal.exists() and journal.read_bytes().count(b"\n") >= 3, what="3 calls")
    tool = psutil.Process(one.children[0])
    os.kill(one.pid, signal.SIGTERM)
    assert finished(one) == 0
    # Real agents leave their tool subprocesses behind; killing the tree is the killer's job.
    assert tool.is_running() and tool.ppid() != one.pid
    # Every call it logged is in its truth, and no line was left half-written.
    events = read_events(home).counted_usage()
    assert load_truth(journal).total().calls == len(events) >= 3
    assert one.path.read_bytes().endswith(b"\n")


def test_needs_a_home(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    proc = psutil.Popen(
        [sys.executable, "-m", "node_agent.simulate.fake_agent", "--agent", "claude-code"],
        env=env,
        stderr=-1,
        cwd=tmp_path,
    )
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 2 and b"CLAUDE_CONFIG_DIR" in err
    assert not any(tmp_path.iterdir())
