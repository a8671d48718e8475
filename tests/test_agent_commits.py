"""The demo's fake agents commit the way coding agents do (`--commit-every`): real git commits
with the agent's trailer in the session's project, which `node-agent scan --by commit` then
prices from the session's own log, so the demo's `o` view has commits to show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from node_agent.simulate.agent_commits import commit, init_repository
from shared.events import Agent
from tests.test_outcomes_scan import scan_json

pytestmark = pytest.mark.skipif(
    subprocess.run(["git", "--version"], capture_output=True, check=False).returncode != 0,
    reason="git is not installed",
)


def _log(repo: Path) -> list[str]:
    done = subprocess.run(
        ["git", "log", "--format=%s|%(trailers:key=Co-authored-by,valueonly)"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return [line for line in done.stdout.splitlines() if line]


def test_a_fake_claude_commits_every_n_calls_and_the_scan_prices_its_commits(
    tmp_path: Path,
) -> None:
    project = tmp_path / "projects" / "billing-service"
    project.mkdir(parents=True)
    assert init_repository(project)
    home = tmp_path / "claude"
    done = subprocess.run(
        [sys.executable, "-m", "node_agent.simulate.fake_agent", "--agent", "claude-code",
         "--home", str(home), "--project", str(project), "--pace", "1.1", "--calls", "4",
         "--commit-every", "2", "--children", "0", "--then", "exit", "--session-seed", "3"],
        capture_output=True, text=True, timeout=60, check=False,
        env={k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    log = _log(project)
    assert len(log) == 3 and log[-1] == "start the project|"  # a person's first commit
    assert all(line.endswith("Claude <noreply@anthropic.com>") for line in log[:2]), log

    report = scan_json("--by", "commit", str(home))
    rows = [r for r in report["rows"] if r["commit"] is not None]
    assert len(rows) == 2, report["rows"]
    assert {r["outcome"]["repo"] for r in rows} == {"github.com/example-org/billing-service"}
    assert all(r["outcome"]["rule"] == "trailer" for r in rows)
    # a commit after every second call: the four calls are all put on the two commits (a
    # git author time has whole seconds, so the calls are paced more than a second apart)
    assert [r["calls"] for r in rows] == [2, 2]


def test_a_commit_outside_a_repository_or_without_git_is_not_made(tmp_path: Path) -> None:
    assert not commit(tmp_path, Agent.CODEX, "s" * 36, 1)
    assert not (tmp_path / "src").exists()
