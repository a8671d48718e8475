"""The detectors across a kill -9 of a real `fleet-hub serve`, mid-happening: the restarted hub
re-seeds them from the store's recent calls, so a retry loop two calls in is found on its third
call (not three calls later), and a subagent fan-out already raised is not raised again under
a new id when it goes on. Signed batches over nng on loopback; findings read from the hub's
store."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.events import Agent, Role, Tokens, UsageEvent
from tests.api_harness import ServedHub, serve_hub
from tests.fleet_harness import start_hub, stop, wait_for

SIGNATURE = "Bash:0123456789ab"


def call(event_id: str, session: str, tokens: Tokens, **kw: object) -> UsageEvent:
    return UsageEvent(
        event_id=event_id,
        ts=time.time(),
        agent=Agent.CLAUDE_CODE,
        model="claude-sonnet-4-5",
        tokens=tokens,
        session_id=session,
        machine="spark01",
        **kw,  # type: ignore[arg-type]
    )


def loop_call(n: int) -> UsageEvent:
    """Call n of session loop-1: the same tool call with the same input every time."""
    tokens = Tokens(input=2000 + 50 * n, output=120, cache_read=30_000)
    return call(f"claude:loop:msg_{n}", "loop-1", tokens, tool_calls=SIGNATURE)


def child_call(n: int) -> UsageEvent:
    """The first call of subagent c<n> of session fan-1."""
    return call(
        f"claude:fan:msg_{n}",
        "fan-1",
        Tokens(input=3000, output=400),
        role=Role.SUBAGENT,
        parent_session_id="fan-1",
        subagent_id=f"c{n}",
    )


def findings(served: ServedHub, kind: str) -> list[str]:
    with sqlite3.connect(served.setup.data_dir / "hub.db", timeout=10) as db:
        rows = db.execute("SELECT id FROM detector_findings WHERE kind = ?", (kind,)).fetchall()
    return [i for (i,) in rows]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedHub]:
    hub = serve_hub(tmp_path)
    try:
        yield hub
    finally:
        stop(hub.proc)


def test_a_hub_killed_mid_happening_finds_it_on_time_and_once(served: ServedHub) -> None:
    log = served.setup.config.parent / "hub.log"
    served.send("spark01", [loop_call(1), loop_call(2)])
    served.send("spark01", [child_call(n) for n in range(11)])
    wait_for(lambda: len(findings(served, "subagent_fanout")) == 1, 30, "the fan-out found")
    [fanout] = findings(served, "subagent_fanout")
    assert findings(served, "retry_loop") == []  # two calls: not yet a loop

    stop(served.proc, signal.SIGKILL)
    served.proc = start_hub(served.setup, served.tmp)
    wait_for(lambda: log.read_text().count("detectors seeded with") == 2, 60, "the seed")

    served.send("spark01", [loop_call(3)])  # the third identical call: a loop now
    served.send("spark01", [child_call(n) for n in range(11, 22)])  # the fan-out goes on
    wait_for(lambda: len(findings(served, "retry_loop")) == 1, 30, "the loop found")
    assert findings(served, "retry_loop") == [f"retry_loop:loop-1:{SIGNATURE}"]
    assert findings(served, "subagent_fanout") == [fanout]
    assert log.read_text().count(f"finding {fanout}:") == 1
    assert "detectors seeded with 13 calls" in log.read_text()
