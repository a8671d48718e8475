"""Cost per outcome on one machine: `node-agent scan --by commit|branch|pr|repo` over real
Claude Code logs and real git repositories (commits with set author times and trailers), the
forge served locally in GitHub's documented shapes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node_agent.outcomes.git import GitError, run_git
from node_agent.outcomes.match import rule_for
from node_agent.outcomes.parse import LoggedCommit, normalise_remote
from node_agent.outcomes.watch import OutcomeWatch
from shared.events import Agent, Tokens, UsageEvent
from shared.wire import MAX_OUTCOMES, batch_body
from tests.outcome_fixtures import (
    T0,
    claude_call,
    commit,
    forge,
    git,
    make_repo,
    pull,
    write_session,
)

CALL = Decimal("0.045")  # 10,000 input + 1,000 output tokens of Sonnet 4.5 at list price
BASH = ("Bash", {"command": "pytest -x"})


def scan(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if "GITHUB" not in k}
    return subprocess.run(
        [sys.executable, "-m", "node_agent.cli", "scan", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**base, **(env or {})},
    )


def scan_json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = scan("--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


@pytest.fixture
def work(tmp_path: Path) -> dict[str, Any]:
    """A repo on feature/x where session s1 made two commits (one by trailer, one by the
    agent's identity) between others' commits; s2 ran outside any repository; s3 ran in the
    repo hours later and committed nothing."""
    repo = make_repo(tmp_path / "widget")
    home = tmp_path / "claude"
    commit(repo, T0 - 3600, "before the session")  # has the trailer, but outside the window
    commit(repo, T0 + 100, "a person's commit", trailer=None)
    c1 = commit(repo, T0 + 150, "first", lines=5)
    c2 = commit(
        repo, T0 + 250, "second", lines=2, trailer=None, author="Claude <noreply@anthropic.com>"
    )
    s1 = [
        claude_call("s1", repo, "feature/x", T0 + 0, 1),
        claude_call("s1", repo, "feature/x", T0 + 60, 2, tool=BASH),
        claude_call("s1", repo, "feature/x", T0 + 120, 3, tool=BASH),  # the same call again
        claude_call("s1", repo, "feature/x", T0 + 130, 4, sidechain=True),
        claude_call("s1", repo, "feature/x", T0 + 200, 5),
        claude_call("s1", repo, "feature/x", T0 + 300, 6),
    ]
    write_session(home, "s1", s1)
    loose = tmp_path / "notes"
    loose.mkdir()
    write_session(home, "s2", [claude_call("s2", loose, "", T0 + 10, 1)])
    write_session(home, "s3", [claude_call("s3", repo, "feature/x", T0 + 9000, 1)])
    return {"repo": repo, "home": home, "c1": c1, "c2": c2}


def test_a_commit_costs_its_sessions_spend_since_the_previous_commit(work: dict[str, Any]) -> None:
    data = scan_json("--by", "commit", str(work["home"]))
    rows = {r["commit"]: r for r in data["rows"]}
    first, second = rows[work["c1"]], rows[work["c2"]]
    assert Decimal(first["cost"]["api_equivalent"]) == 4 * CALL  # calls at 0, 60, 120, 130
    assert first["calls"] == 4
    out = first["outcome"]
    assert out["rule"] == "trailer" and out["subject"] == "first"
    assert out["repo"] == "github.com/acme/widget" and out["branch"] == "feature/x"
    assert (out["lines_added"], out["lines_deleted"]) == (5, 0)
    assert Decimal(out["subagent_cost"]) == CALL and out["subagent_share"] == "0.2500"
    assert Decimal(out["retry_cost"]) == CALL and out["retry_calls"] == 1
    assert Decimal(second["cost"]["api_equivalent"]) == CALL
    assert second["outcome"]["rule"] == "identity"
    # The person's commit and the one before the session are nobody's outcome here.
    assert set(rows) == {work["c1"], work["c2"], None}
    # After s1's last commit (1 call), s2 (no repo) and s3 (no commit): no outcome.
    nothing = rows[None]
    assert Decimal(nothing["cost"]["api_equivalent"]) == 3 * CALL
    assert nothing["outcome"]["no_outcome_sessions"] == 2
    assert Decimal(data["total"]["cost"]["api_equivalent"]) == 8 * CALL
    assert data["sessions_by_status"] == {"ok": 2, "not_a_repo": 1}
    assert data["pull_request_lookups"] == {"no forge token configured": 2}


def test_branch_and_repo_views_hold_all_their_sessions(work: dict[str, Any]) -> None:
    branches = scan_json("--by", "branch", str(work["home"]))
    rows = {(r["repo"], r["branch"]): r for r in branches["rows"]}
    feature = rows[("github.com/acme/widget", "feature/x")]
    assert Decimal(feature["cost"]["api_equivalent"]) == 7 * CALL
    assert feature["outcome"]["commits"] == 2 and feature["outcome"]["sessions"] == 2
    assert feature["outcome"]["no_outcome_sessions"] == 1  # s3
    assert Decimal(feature["outcome"]["no_outcome_cost"]) == 2 * CALL
    assert (feature["outcome"]["lines_added"], feature["outcome"]["lines_deleted"]) == (7, 0)
    assert Decimal(rows[(None, None)]["cost"]["api_equivalent"]) == CALL
    repos = scan_json("--by", "repo", str(work["home"]))
    assert [r["repo"] for r in repos["rows"]] == [None, "github.com/acme/widget"]
    text = scan("--by", "repo", str(work["home"]))
    assert text.returncode == 0 and "github.com/acme/widget" in text.stdout
    assert "(no repository)" in text.stdout and "rule: a commit costs" in text.stdout


def test_pull_request_and_whether_it_merged_from_the_forge(work: dict[str, Any]) -> None:
    asked: list[dict[str, str]] = []

    def route(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Any:
        asked.append(headers)
        assert path == "/repos/acme/widget/pulls"
        assert query["head"] == ["acme:feature/x"] and query["state"] == ["all"]
        if query.get("page") != ["2"]:
            link = f"<{base}/repos/acme/widget/pulls?head=acme%3Afeature%2Fx&state=all&page=2>"
            return 200, {"Link": link + '; rel="next"'}, [pull(3, "feature/x", merged=False)]
        return 200, {}, [pull(7, "feature/x", merged=True)]

    with forge(route) as (base, seen):
        env = {"FLEETMETER_GITHUB_TOKEN": "tok-123", "FLEETMETER_GITHUB_API": base}
        data = scan_json("--by", "pr", str(work["home"]), env=env)
    rows = {r["pr"]: r for r in data["rows"]}
    merged = rows["github.com/acme/widget#7"]
    assert merged["outcome"]["merged"] is True and merged["outcome"]["state"] == "closed"
    assert merged["outcome"]["url"] == "https://github.com/acme/widget/pull/7"
    assert Decimal(merged["cost"]["api_equivalent"]) == 7 * CALL
    assert merged["outcome"]["commits"] == 2
    assert len(seen) == 2  # two pages, asked once for the two sessions on the branch
    assert all(h["Authorization"] == "Bearer tok-123" for h in asked)
    assert data["pull_request_lookups"] == {"found": 2}


def test_a_rate_limited_forge_is_said_and_not_asked_again(work: dict[str, Any]) -> None:
    def route(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Any:
        limit = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(T0 + 10**6))}
        return 403, limit, {"message": "API rate limit exceeded for user ID 1."}

    other = make_repo(work["repo"].parent / "gadget", "https://x:secret@github.com/acme/gadget")
    write_session(work["home"], "s4", [claude_call("s4", other, "feature/x", T0 + 20, 1)])
    with forge(route) as (base, seen):
        env = {"FLEETMETER_GITHUB_TOKEN": "tok", "FLEETMETER_GITHUB_API": base}
        done = scan("--by", "pr", str(work["home"]), env=env)
    assert done.returncode == 0, done.stderr
    assert "pull requests: 3 rate limited by the forge until" in done.stdout, done.stdout
    assert len(seen) == 1  # the second repository was not asked while limited
    assert "(no pull request)" in done.stdout
    assert "secret" not in done.stdout


def test_no_git_bare_repos_and_vanished_folders_are_a_status(
    work: dict[str, Any], tmp_path: Path
) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    gone = tmp_path / "gone"
    write_session(work["home"], "s5", [claude_call("s5", bare, "", T0, 1)])
    write_session(work["home"], "s6", [claude_call("s6", gone, "", T0, 1)])
    data = scan_json("--by", "repo", str(work["home"]))
    assert data["sessions_by_status"] == {"bare": 1, "no_dir": 1, "not_a_repo": 1, "ok": 2}
    # No git on PATH: every session says so, and the report is still whole.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(sys.executable, bin_dir / "python3")
    done = scan("--json", "--by", "repo", str(work["home"]), env={"PATH": str(bin_dir)})
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["sessions_by_status"] == {"no_dir": 1, "no_git": 5 - 1}
    assert Decimal(data["total"]["cost"]["api_equivalent"]) == 10 * CALL


def _tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(path.rglob("*")):
        stat = item.lstat()
        digest.update(f"{item}:{stat.st_mtime_ns}:{stat.st_size}".encode())
        if item.is_file():
            digest.update(item.read_bytes())
    return digest.hexdigest()


def test_the_scan_changes_nothing_in_the_repository(work: dict[str, Any]) -> None:
    (work["repo"] / "work.txt").write_text("edited, not staged\n")  # a refresh would touch index
    before = _tree_digest(work["repo"] / ".git")
    scan_json("--by", "commit", str(work["home"]))
    assert _tree_digest(work["repo"] / ".git") == before


def test_an_outcome_key_goes_alone() -> None:
    done = scan("--by", "commit,model", "/nonexistent")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("node-agent scan: --by commit goes alone")


@pytest.mark.parametrize(
    ("url", "want"),
    [
        ("git@github.com:acme/widget.git", "github.com/acme/widget"),
        ("https://user:tok@GitHub.com/acme/widget.git/", "github.com/acme/widget"),
        ("ssh://git@github.com:22/acme/widget", "github.com/acme/widget"),
        ("/srv/git/widget.git", None),
        ("file:///srv/git/widget.git", None),
    ],
)
def test_remote_urls_normalise_to_one_id(url: str, want: str | None) -> None:
    assert normalise_remote(url) == want


def _logged(**kwargs: Any) -> LoggedCommit:
    base: dict[str, Any] = dict(
        sha="a" * 40,
        author_ts=T0,
        author_name="Dev",
        author_email="dev@example.com",
        subject="s",
        co_authors=(),
        body="",
        lines_added=1,
        lines_deleted=0,
    )
    return LoggedCommit(**{**base, **kwargs})


def test_which_rule_matched() -> None:
    assert rule_for(_logged(co_authors=("Claude <noreply@anthropic.com>",))) == "trailer"
    assert rule_for(_logged(author_name="Claude Dupont", author_email="cd@example.com")) is None
    assert rule_for(_logged(author_email="codex@openai.com")) == "identity"
    assert rule_for(_logged(), identities={"dev@example.com"}) == "identity"
    assert rule_for(_logged(body="🤖 Generated with [Claude Code](https://claude.com)")) == "marker"
    assert rule_for(_logged()) is None


def test_a_hung_git_is_a_timeout_not_a_hang(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bin" / "git"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\n{shutil.which('sleep')} 30\n")  # a child holding the pipes
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    began = time.monotonic()
    with pytest.raises(GitError) as caught:
        run_git(tmp_path, ["rev-parse", "--show-toplevel"], timeout=0.5)
    assert time.monotonic() - began < 5
    assert caught.value.status == "timeout"
    assert str(caught.value) == f"git rev-parse took over 0.5 s in {tmp_path}"


def test_agents_that_commit_as_the_user_are_named_in_the_config(
    work: dict[str, Any], tmp_path: Path
) -> None:
    config = tmp_path / "node.toml"
    config.write_text('node = "spark01"\ncommit_identities = ["DEV@example.com"]\n')
    data = scan_json("--config", str(config), "--by", "commit", str(work["home"]))
    rules = sorted(r["outcome"]["rule"] for r in data["rows"] if r["commit"] is not None)
    assert rules == ["identity", "identity", "trailer"]  # the person's commit is now the agent's
    config.write_text('node = "spark01"\ncommit_identities = "me"\n')
    done = scan("--config", str(config), "--by", "commit", str(work["home"]))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"node-agent scan: {config}: 'commit_identities' must be an array of author names or "
        'emails, e.g. ["me@example.com"]'
    )


def test_a_forge_that_knows_no_such_repository_says_so(work: dict[str, Any]) -> None:
    def route(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Any:
        return 404, {}, {"message": "Not Found", "documentation_url": "https://docs.github.com"}

    with forge(route) as (base, _):
        env = {"FLEETMETER_GITHUB_TOKEN": "tok", "FLEETMETER_GITHUB_API": base}
        data = scan_json("--by", "pr", str(work["home"]), env=env)
    lookups = data["pull_request_lookups"]
    assert lookups == {"forge knows no such repository, or the token cannot see it (404)": 2}


def test_a_commit_with_an_unpriced_call_costs_unknown_not_less(work: dict[str, Any]) -> None:
    repo = work["repo"]
    late = [
        claude_call("s7", repo, "feature/x", T0 + 20_000, 1),
        claude_call("s7", repo, "feature/x", T0 + 20_060, 2)
        | {
            "message": {
                **claude_call("s7", repo, "feature/x", T0 + 20_060, 2)["message"],
                "model": "made-up-model-9000",
            }
        },
    ]
    write_session(work["home"], "s7", late)
    c3 = commit(repo, T0 + 20_100, "third")
    data = scan_json("--by", "commit", str(work["home"]))
    row = next(r for r in data["rows"] if r["commit"] == c3)
    assert row["unknown_calls"] == 1 and row["cost"]["unknown"] is None
    assert Decimal(row["cost"]["api_equivalent"]) == CALL  # the priced part, said to be partial
    assert row["outcome"]["subagent_share"] is None
    text = scan("--by", "commit", str(work["home"]))
    line = next(x for x in text.stdout.splitlines() if x.startswith(c3[:12]))
    assert "unknown" in line and "$0.04" not in line


def test_an_enterprise_forge_knows_the_remotes_of_its_host(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "tool", "git@GHE.corp.example:team/tool.git", branch="fix")
    commit(repo, T0 + 50, "fix it")
    home = tmp_path / "claude"
    write_session(home, "s1", [claude_call("s1", repo, "fix", T0, 1)])

    def route(path: str, query: dict[str, list[str]], headers: dict[str, str]) -> Any:
        assert path == "/api/v3/repos/team/tool/pulls" and query["head"] == ["team:fix"]
        return 200, {}, [pull(12, "fix", state="open", merged=False, owner="team")]

    with forge(route) as (base, _):
        env = {
            "FLEETMETER_GITHUB_TOKEN": "tok",
            "FLEETMETER_GITHUB_API": base + "/api/v3",
            "FLEETMETER_GITHUB_HOST": "ghe.corp.example",
        }
        data = scan_json("--by", "pr", str(home), env=env)
    [row] = data["rows"]
    assert row["pr"] == "ghe.corp.example/team/tool#12"
    assert (row["outcome"]["state"], row["outcome"]["merged"]) == ("open", False)


def test_a_branch_merged_and_deleted_keeps_its_commits(work: dict[str, Any]) -> None:
    repo = work["repo"]
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--ff-only", "feature/x")
    git(repo, "branch", "-q", "-D", "feature/x")
    data = scan_json("--by", "commit", str(work["home"]))
    assert {work["c1"], work["c2"]} <= {r["commit"] for r in data["rows"]}
    assert {r["outcome"]["branch"] for r in data["rows"] if r["commit"]} == {"feature/x"}


def test_a_batch_carries_no_more_outcomes_than_a_hub_takes(tmp_path: Path) -> None:
    """300 sessions read at once (a node that was away) go out over two batches."""
    watch = OutcomeWatch(tmp_path / "spans.json")
    watch.saw(
        UsageEvent(
            f"e{n}", T0 + n, Agent.CLAUDE_CODE, "m", Tokens(), f"s{n}", project=str(tmp_path)
        )
        for n in range(300)
    )
    assert watch.refresh() == 300
    first = watch.take()
    assert len(first) == MAX_OUTCOMES
    batch_body("s", 1, 0, [], None, first)  # the wire takes it
    watch.acked(first)
    assert len(watch.take()) == 100


def test_a_scan_index_kept_by_another_view_does_not_lose_the_calls(
    work: dict[str, Any], tmp_path: Path
) -> None:
    """The scan index keeps priced reports; one kept for `--by session` (no calls) must not
    answer `--by commit`, which attributes the calls one by one."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    plain = scan_json("--by", "session", str(work["home"]), env=env)
    assert plain["total"]["calls"] == 8
    indexed = scan_json("--by", "commit", str(work["home"]), env=env)
    fresh = scan_json("--by", "commit", "--no-cache", str(work["home"]), env=env)
    assert indexed["rows"] == fresh["rows"] and indexed["total"] == fresh["total"]
    assert {r["commit"] for r in indexed["rows"]} == {work["c1"], work["c2"], None}
