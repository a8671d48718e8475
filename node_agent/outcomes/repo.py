"""A session's repository as git tells it: its stable id, its branch, and the commits made in a
time window. Read-only (`git.run_git`); every failure becomes a `GitError` with a status."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from node_agent.outcomes.git import GitError, run_git
from node_agent.outcomes.parse import LOG_FORMAT, LoggedCommit, normalise_remote, parse_log

MAX_LOG_COMMITS: Final = 2_000  # a window's commits beyond this are a history we do not walk


@dataclass(frozen=True, slots=True)
class RepoFacts:
    top: Path  # the work tree's top-level folder
    repo: str  # the normalised remote URL (origin first), else the top-level path
    branch: str | None  # None: HEAD is detached


def probe(cwd: Path) -> RepoFacts:
    """The repository `cwd` is in; raises GitError (not_a_repo, bare, no_git, ...)."""
    bare, inside = (
        run_git(cwd, ["rev-parse", "--is-bare-repository", "--is-inside-work-tree"]).split()
        + ["", ""]
    )[:2]
    if bare == "true":
        raise GitError("bare", f"{cwd} is a bare repository: it has no work tree")
    if inside != "true":
        raise GitError("not_a_repo", f"{cwd} is inside a .git folder, not a work tree")
    top = Path(run_git(cwd, ["rev-parse", "--show-toplevel"]).strip())
    try:
        branch: str | None = run_git(cwd, ["symbolic-ref", "--short", "-q", "HEAD"]).strip()
    except GitError:
        branch = None  # detached HEAD: symbolic-ref -q exits 1
    return RepoFacts(top, _repo_id(cwd) or str(top), branch or None)


def _repo_id(cwd: Path) -> str | None:
    try:
        text = run_git(cwd, ["config", "--get-regexp", r"^remote\..*\.url$"])
    except GitError:
        return None  # no remote: git config exits 1
    urls: dict[str, str] = {}
    for line in text.splitlines():
        key, _, url = line.partition(" ")
        urls[key.removeprefix("remote.").removesuffix(".url")] = url
    for name in ["origin", *sorted(urls)]:
        if name in urls and (normal := normalise_remote(urls[name])):
            return normal
    return None


def commits_since(cwd: Path, ref: str, since: float) -> list[LoggedCommit] | None:
    """Commits reachable from `ref` committed at or after `since`, newest first (an author
    time at or after `since` implies that: a commit is committed after it is authored); None
    when there is no such ref (a branch deleted since, say after its merge)."""
    try:
        text = run_git(
            cwd,
            [
                "log",
                ref,
                "--no-merges",
                "--numstat",
                f"--max-count={MAX_LOG_COMMITS}",
                f"--since=@{int(since)}",
                f"--format={LOG_FORMAT}",
                "--",
            ],
        )
    except GitError as exc:
        if "does not have any commits" in str(exc):
            return []  # a repository with no commit yet
        if "bad revision" in str(exc) or "unknown revision" in str(exc):
            return None
        raise
    return parse_log(text)
