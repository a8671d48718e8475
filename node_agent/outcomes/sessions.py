"""A session's outcome: its span (from its calls), then its repository, branch, commits and
pull request. One `OutcomeReader` per pass caches what sessions share (a repository's probe,
a branch's log, a branch's PR), so a hundred sessions in one repository ask git a few times."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from node_agent.outcomes.forge import GitHub, PrLookup
from node_agent.outcomes.git import GitError
from node_agent.outcomes.match import MARGIN_BEFORE, rule_for, within
from node_agent.outcomes.parse import LoggedCommit, github_slug
from node_agent.outcomes.repo import MAX_LOG_COMMITS, RepoFacts, commits_since, probe
from shared.events import UsageEvent
from shared.outcomes import Commit, SessionOutcome, root_session

NO_TOKEN = "no forge token configured"


@dataclass(frozen=True, slots=True)
class SessionSpan:
    session_id: str
    cwd: str | None  # the working directory the agent logged
    first: float  # its first and last call
    last: float
    branch: str | None  # the branch the agent logged, if it did


def spans(events: Iterable[UsageEvent]) -> list[SessionSpan]:
    """Each session's span, from its calls (the latest call's cwd and branch win)."""
    found: dict[str, SessionSpan] = {}
    for event in sorted(events, key=lambda e: e.ts):
        key = root_session(event)
        old = found.get(key)
        found[key] = SessionSpan(
            key,
            event.project or (old.cwd if old else None),
            old.first if old else event.ts,
            event.ts,
            event.git_branch or (old.branch if old else None),
        )
    return list(found.values())


class OutcomeReader:
    def __init__(
        self,
        *,
        identities: Collection[str] = (),
        forge: GitHub | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identities = frozenset(i.lower() for i in identities)
        self.forge = forge
        self.clock = clock
        self._repos: dict[str, RepoFacts | GitError] = {}
        self._logs: dict[tuple[Path, str], tuple[float, list[LoggedCommit] | GitError]] = {}
        self._prs: dict[tuple[str, str], PrLookup] = {}

    def read(self, span: SessionSpan) -> SessionOutcome:
        now = self.clock()
        if not span.cwd:
            return SessionOutcome(span.session_id, now, "no_cwd", "the agent logged no folder")
        facts = self._probe(span.cwd)
        if isinstance(facts, GitError):
            return SessionOutcome(span.session_id, now, facts.status, str(facts))
        branch = span.branch if span.branch and span.branch != "HEAD" else facts.branch
        logged = self._log(facts.top, branch or "HEAD", span.first - MARGIN_BEFORE)
        if isinstance(logged, GitError):
            return SessionOutcome(
                span.session_id, now, logged.status, str(logged), facts.repo, branch
            )
        commits = tuple(
            Commit(c.sha, c.author_ts, c.lines_added, c.lines_deleted, rule, c.subject[:200])
            for c in sorted(logged, key=lambda c: c.author_ts)
            if within(c, span.first, span.last) and (rule := rule_for(c, self.identities))
        )
        lookup = self._pr(facts.repo, branch)
        cut = len(logged) >= MAX_LOG_COMMITS  # a huge history: only its newest commits read
        return SessionOutcome(
            span.session_id,
            now,
            "ok",
            f"only the newest {MAX_LOG_COMMITS:,} commits since the session began" if cut else "",
            facts.repo,
            branch,
            commits,
            lookup.pr,
            lookup.status,
        )

    def _probe(self, cwd: str) -> RepoFacts | GitError:
        if cwd not in self._repos:
            try:
                self._repos[cwd] = probe(Path(cwd))
            except GitError as exc:
                self._repos[cwd] = exc
        return self._repos[cwd]

    def _log(self, top: Path, ref: str, since: float) -> list[LoggedCommit] | GitError:
        # One read per branch from the earliest start asked so far: later sessions filter it.
        key = (top, ref)
        cached = self._logs.get(key)
        if cached is None or since < cached[0]:
            try:
                found = commits_since(top, ref, since)
                if found is None:  # the branch is gone (merged and deleted): what HEAD holds
                    found = commits_since(top, "HEAD", since) or []
                cached = self._logs[key] = (since, found)
            except GitError as exc:
                cached = self._logs[key] = (-float("inf"), exc)
        return cached[1]

    def _pr(self, repo: str, branch: str | None) -> PrLookup:
        if branch is None:
            return PrLookup(None, "detached HEAD: no branch")
        if self.forge is None:
            return PrLookup(None, NO_TOKEN)
        slug = github_slug(repo, self.forge.host)
        if slug is None:
            return PrLookup(None, f"not a repository on {self.forge.host}")
        key = (repo, branch)
        if key not in self._prs:
            self._prs[key] = self.forge.pull_request(slug[0], slug[1], branch)
        return self._prs[key]
