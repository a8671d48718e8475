"""The detectors in a real fleet: a `fleet-hub serve` process, a `node-agent run` process and
a fake Claude Code agent thrashing its cache (real log lines), on loopback. The finding reaches
the sink (the hub store's `detector_findings` table) once, and stays once across a kill -9 of
the hub and a restart that sees the same session go on (the restarted hub re-seeds its
detectors and knows what its journal holds: it does not raise the thrash again)."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

from node_agent.simulate.fake_agent import launch
from shared.events import Agent
from tests.fleet_harness import (
    ProfileSpec,
    make_hub,
    processes,
    start_hub,
    start_node,
    stop,
    wait_for,
    write_node,
)


def _findings(db: Path) -> list[tuple[str, str, str, str]]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=10) as conn:
        try:
            rows = conn.execute(
                "SELECT id, kind, scope, evidence FROM detector_findings ORDER BY raised_at"
            ).fetchall()
        except sqlite3.OperationalError:  # the hub has not made the table yet
            return []
    return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]


def _calls(db: Path, session: str) -> int:
    with sqlite3.connect(db, timeout=10) as conn:
        (n,) = conn.execute(
            "SELECT count(*) FROM usage WHERE session_id = ?", (session,)
        ).fetchone()
    return int(n)


def test_a_thrashing_agent_is_found_through_serve_and_node_and_found_once(
    tmp_path: Path,
) -> None:
    hub = make_hub(tmp_path)
    home = tmp_path / "homes" / "max-a"
    home.mkdir(parents=True)
    node = write_node(tmp_path, "spark02", hub, [ProfileSpec("max-a", Agent.CLAUDE_CODE, home)])
    db = hub.data_dir / "hub.db"
    with processes() as started:
        started.append(start_hub(hub, tmp_path))
        started.append(start_node(node, tmp_path))
        agent = launch(
            Agent.CLAUDE_CODE, home, "--mode", "runaway", "--pace", "0.3", "--children", "0"
        )
        # beside it a working agent (a growing cached context, Bash twice then a reply, a
        # subagent every 3rd call): nothing to find
        normal = launch(
            Agent.CLAUDE_CODE, home, "--pace", "0.3", "--children", "0", "--subagents", "3"
        )
        try:
            wait_for(
                lambda: any(k == "cache_thrash" for _, k, _, _ in _findings(db)),
                60,
                "a cache-thrash finding in the hub's store",
            )
            found = [f for f in _findings(db) if f[1] == "cache_thrash"]
            assert len(found) == 1
            finding_id, _kind, scope, evidence = found[0]
            assert finding_id == f"cache_thrash:{agent.session_id}"
            assert "machine=spark02" in scope and "profile=max-a" in scope
            assert f"session={agent.session_id}" in scope
            figures = json.loads(evidence)
            assert figures["tier"] == "1h"  # the fake runaway writes the 1-hour tier
            if figures["rule"] == "1h_unpaid":  # 1-hour writes lost before 2 reads
                assert int(figures["unpaid_1h_writes"]) >= 3
                assert int(figures["unpaid_1h_tokens"]) >= 3 * 60_000
            else:  # writes never read back
                assert figures["rule"] == "writes_unread"
                assert int(figures["cache_read_tokens"]) == 0
                assert int(figures["cache_write_1h_tokens"]) >= 5 * 60_000

            # kill -9 the hub while the agent keeps thrashing; the restarted hub re-seeds its
            # detectors from the store and knows the journal's findings: it judges the
            # agent's further calls without raising the thrash again.
            stop(started[0], signal.SIGKILL)
            log = hub.config.parent / "hub.log"  # both hub runs write it
            said = f"finding {finding_id}:"
            assert log.read_text().count(said) == 1
            calls = _calls(db, agent.session_id)
            started.append(start_hub(hub, tmp_path))
            wait_for(lambda: log.read_text().count("detectors seeded") == 2, 60, "the seed")
            wait_for(lambda: _calls(db, agent.session_id) >= calls + 5, 60, "5 more calls")
            assert log.read_text().count(said) == 1
        finally:
            agent.destroy()
            normal.destroy()
        assert [f[0] for f in _findings(db) if f[1] == "cache_thrash"] == [finding_id]
        assert {f[1] for f in _findings(db)} <= {"cache_thrash", "run_rate_spike", "context_growth"}
        # the runaway's prompt (a random 60-180k write each call) climbs 4 calls in a row now
        # and then: a context climb of its session, never of the normal one
        assert all(agent.session_id in f[2] for f in _findings(db) if f[1] == "context_growth")
        assert not [f for f in _findings(db) if normal.session_id in f[2]]
