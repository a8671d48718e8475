"""Cost per outcome across the fleet: a real `node-agent run` reads its sessions' git and sends
what they produced; a real `fleet-hub serve` keeps it and reports `--by commit|branch|pr|repo`
(CLI and `GET /api/v1/report`) with the same figures as the node's own scan; a node cannot
speak for another's sessions; a hub killed with -9 keeps what it acknowledged."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pynng

from hub.ledger import Period
from hub.remote import RemoteFleet
from shared.events import Agent
from shared.outcomes import Commit, SessionOutcome, outcome_to_map
from shared.wire import batch_body, seal
from tests.api_harness import ServedHub, serve_hub
from tests.fleet_harness import (
    ProfileSpec,
    child_env,
    processes,
    start_hub,
    start_node,
    stop,
    wait_for,
    write_node,
)
from tests.outcome_fixtures import T0, claude_call, commit, make_repo, write_session
from tests.test_outcomes_scan import BASH, CALL


def _report(served: ServedHub, by: str) -> dict[str, Any]:
    done = served.cli("report", "--json", "--by", by)
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def _send_outcomes(served: ServedHub, node: str, outcomes: list[dict[str, Any]]) -> None:
    """A heartbeat batch from `node`, signed with its own key, carrying `outcomes`."""
    seq = served.seqs.get(node, 0)
    body = batch_body("s-outcomes", seq + 1, seq, [], None, outcomes)
    with pynng.Req0(recv_timeout=10_000, send_timeout=5000) as sock:
        sock.dial(served.setup.events, block=True)
        sock.send(seal(served.setup.key(node), node, "batch", body))
        sock.recv()


@contextmanager
def fleet_of_one(
    tmp_path: Path, home: Path
) -> Iterator[tuple[ServedHub, Path, list[subprocess.Popen[bytes]]]]:
    """A served hub and a `node-agent run` reading the Claude home `home` (the last of the
    processes, which are all killed on the way out)."""
    served = serve_hub(tmp_path)
    with processes() as started:
        started.append(served.proc)
        config = write_node(
            tmp_path, "spark01", served.setup, [ProfileSpec("api-a", Agent.CLAUDE_CODE, home)]
        )
        started.append(start_node(config, tmp_path))
        yield served, config, started


def test_a_nodes_outcomes_reach_the_hubs_reports(tmp_path: Path) -> None:
    base = time.time() - 3600  # this month's and today's, for the dashboard's periods
    repo = make_repo(tmp_path / "widget")
    home = tmp_path / "claude"
    c1 = commit(repo, base + 150, "first", lines=5)
    write_session(
        home,
        "s1",
        [
            claude_call("s1", repo, "feature/x", base + 0, 1),
            claude_call("s1", repo, "feature/x", base + 60, 2, tool=BASH),
            claude_call("s1", repo, "feature/x", base + 120, 3, tool=BASH),
            claude_call("s1", repo, "feature/x", base + 300, 4),
        ],
    )
    write_session(home, "s2", [claude_call("s2", tmp_path, "", base + 10, 1)])
    with fleet_of_one(tmp_path, home) as (served, config, started):
        node = started[-1]

        def commits_reported() -> bool:
            rows = _report(served, "commit")["rows"]
            return any(r["commit"] == c1 for r in rows)

        wait_for(commits_reported, 60, "the hub to report the node's commit")
        hub = _report(served, "commit")
        rows = {r["commit"]: r for r in hub["rows"]}
        assert Decimal(rows[c1]["cost"]["api_equivalent"]) == 3 * CALL
        assert Decimal(rows[c1]["outcome"]["retry_cost"]) == CALL
        assert rows[c1]["outcome"]["rule"] == "trailer"
        assert Decimal(rows[None]["cost"]["api_equivalent"]) == 2 * CALL
        assert hub["sessions_by_status"] == {"not_a_repo": 1, "ok": 1}
        # The same rows as the node's own scan of its logs.
        scan = subprocess.run(
            [sys.executable, "-m", "node_agent.cli", "scan", "--json", "--by", "commit", str(home)],
            capture_output=True,
            text=True,
            env=child_env(tmp_path),
            check=True,
        )
        mine = json.loads(scan.stdout)
        assert [r["cost"] for r in mine["rows"]] == [r["cost"] for r in hub["rows"]]
        assert [r["outcome"] for r in mine["rows"]] == [r["outcome"] for r in hub["rows"]]
        # The API answers the same rows, to a viewer.
        answer = httpx.get(
            f"{served.url}/api/v1/report",
            params={"by": "commit"},
            headers=served.headers("viewer"),
            timeout=30,
        )
        assert answer.status_code == 200
        assert answer.json()["rows"] == hub["rows"]
        bad = httpx.get(
            f"{served.url}/api/v1/report",
            params={"by": "commit,model"},
            headers=served.headers("viewer"),
            timeout=30,
        )
        assert bad.status_code == 422 and "goes alone" in bad.json()["error"]
        unknown = httpx.get(
            f"{served.url}/api/v1/sessions/nope/outcome",
            headers=served.headers("agent"),
            timeout=30,
        )
        assert unknown.status_code == 404 and "no session 'nope'" in unknown.json()["error"]
        own = httpx.get(
            f"{served.url}/api/v1/sessions/s1/outcome", headers=served.headers("agent"), timeout=30
        )
        assert own.status_code == 200 and own.json()["outcome"]["commits"][0][0] == c1
        branch = _report(served, "branch")["rows"]
        assert [(r["repo"], r["branch"]) for r in branch] == [
            (None, None),
            ("github.com/acme/widget", "feature/x"),
        ]
        text = served.cli("report", "--by", "repo")
        assert text.returncode == 0 and "github.com/acme/widget" in text.stdout
        # An attached dashboard reads the same rows, and the session's outcome line.
        with RemoteFleet(served.url, served.tokens["viewer"]) as remote:
            wait_for(
                lambda: remote.outcome_report("commit", Period.TODAY) is not None,
                30,
                "the attached dashboard's outcome view",
            )
            shown = remote.outcome_report("commit", Period.TODAY)
            assert shown is not None and shown["rows"] == hub["rows"]
            found = remote.session_outcome("s1")
            assert found is not None and found.repo == "github.com/acme/widget"
            assert [c.sha for c in found.commits] == [c1]

        # Another node names spark01's session: it attributes nothing of it.
        forged = SessionOutcome(
            "s1",
            T0 + 10**6,
            "ok",
            repo="github.com/evil/repo",
            branch="main",
            commits=(Commit("e" * 40, base + 1, 1, 0, "trailer", "mine"),),
        )
        hostile = [{"status": "bogus"}, {**outcome_to_map(forged), "status": ["ok"]}]
        _send_outcomes(served, "spark09", [outcome_to_map(forged), *hostile])
        again = _report(served, "commit")
        assert again["rows"] == hub["rows"]

        # Killed with -9 and started again, the hub still knows the outcome it acked.
        stop(node)
        served.proc.send_signal(signal.SIGKILL)
        served.proc.wait(10)
        restarted = start_hub(served.setup, tmp_path)
        started.append(restarted)
        assert _report(served, "commit")["rows"] == hub["rows"]
        hub_log = (served.setup.config.parent / "hub.log").read_text()
        assert "malformed session outcomes" in hub_log
        assert "Traceback" not in hub_log
        stop(restarted)
        # With no hub serving, the report reads the store itself: the same rows.
        assert _report(served, "commit")["rows"] == hub["rows"]


def test_a_node_killed_with_9_still_knows_its_sessions(tmp_path: Path) -> None:
    """The reader resumes past the calls it read; the spans it kept say where the session
    began, so the commit before the kill stays the session's after it."""
    base = time.time() - 3600
    repo = make_repo(tmp_path / "widget")
    home = tmp_path / "claude"
    c1 = commit(repo, base + 150, "first")
    calls = [claude_call("s1", repo, "feature/x", base + t, n) for n, t in enumerate((0, 100, 300))]
    write_session(home, "s1", calls)
    with fleet_of_one(tmp_path, home) as (served, config, started):
        node = started[-1]

        def commits() -> dict[str | None, Decimal]:
            rows = _report(served, "commit")["rows"]
            return {r["commit"]: Decimal(r["cost"]["api_equivalent"]) for r in rows}

        wait_for(lambda: c1 in commits(), 60, "the first commit at the hub")
        node.send_signal(signal.SIGKILL)
        node.wait(10)
        c2 = commit(repo, base + 450, "second")
        more = [claude_call("s1", repo, "feature/x", base + t, n) for n, t in ((4, 400), (5, 500))]
        write_session(home, "s1", more)
        started.append(start_node(config, tmp_path))
        wait_for(lambda: c2 in commits(), 60, "the second commit at the hub")
        assert commits() == {c1: 2 * CALL, c2: 2 * CALL, None: CALL}
