"""What a session produced, as the node reads it from git and the forge: the contract between
`node_agent.outcomes` (which reads it), `pricing.outcomes` (which puts the session's spend on
it) and the hub (which stores what nodes send).

A `SessionOutcome` is a whole snapshot: the node sends it again when it learns more, and the
newest (by `checked_at`) replaces the older one, so sending it twice changes nothing.
`outcome_from_map` checks every field: on the hub it is a node's word, never trusted.
"""

from __future__ import annotations

import math
from typing import Any, Final

import msgspec

from shared.events import Role, UsageEvent

# How a commit was found to be the agent's (see node_agent.outcomes.match).
RULES: Final = frozenset({"trailer", "identity", "marker"})
# Why a session has no repository facts (`RepoStatus.OK` when it has them).
STATUSES: Final = frozenset(
    {"ok", "no_cwd", "no_dir", "not_a_repo", "bare", "no_git", "timeout", "error"}
)
PR_STATES: Final = frozenset({"open", "closed"})
MAX_COMMITS: Final = 500  # per session: a hostile node cannot make the hub hold more
MAX_TEXT: Final = 1024


class Commit(msgspec.Struct, frozen=True):
    sha: str
    author_ts: float
    lines_added: int
    lines_deleted: int
    rule: str  # which rule matched: trailer, identity or marker
    subject: str = ""


class PullRequest(msgspec.Struct, frozen=True):
    number: int
    state: str  # open / closed, as GitHub says
    merged: bool
    url: str = ""


class SessionOutcome(msgspec.Struct, frozen=True):
    session_id: str
    checked_at: float
    status: str  # "ok", or why there are no repository facts
    detail: str = ""  # the status in words (the error's text), for the operator
    repo: str | None = None  # a stable id: the normalised remote URL, else the top-level path
    branch: str | None = None
    commits: tuple[Commit, ...] = ()
    pr: PullRequest | None = None
    pr_status: str = ""  # why no PR is known: "no token", "rate limited until ...", "none"


def root_session(event: UsageEvent) -> str:
    """The session an outcome belongs to: a subagent's parent (Codex and OpenCode give a
    subagent a session id of its own), else the call's own session."""
    if event.role is not Role.MAIN and event.parent_session_id:
        return event.parent_session_id
    return event.session_id


class OutcomeDecodeError(ValueError):
    """A map that is not a valid outcome; the message names the field."""


def outcome_to_map(outcome: SessionOutcome) -> dict[str, Any]:
    out: dict[str, Any] = {
        "session_id": outcome.session_id,
        "checked_at": outcome.checked_at,
        "status": outcome.status,
        "detail": outcome.detail,
        "repo": outcome.repo,
        "branch": outcome.branch,
        "commits": [
            [c.sha, c.author_ts, c.lines_added, c.lines_deleted, c.rule, c.subject]
            for c in outcome.commits
        ],
        "pr_status": outcome.pr_status,
    }
    if outcome.pr is not None:
        pr = outcome.pr
        out["pr"] = [pr.number, pr.state, pr.merged, pr.url]
    return out


def _text(data: dict[str, Any], key: str, *, optional: bool = False, limit: int = MAX_TEXT) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise OutcomeDecodeError(f"outcome {key} must be text of at most {limit} characters")
    return value


def _count(value: Any, what: str) -> int:
    if type(value) is not int or not 0 <= value < 2**40:
        raise OutcomeDecodeError(f"outcome {what} must be a whole number 0 or more")
    return value


def _time(value: Any, what: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 <= value < 2**40:
        raise OutcomeDecodeError(f"outcome {what} must be a time in epoch seconds")
    return float(value)


def _one_of(value: Any, choices: frozenset[str]) -> bool:
    # `in` on a frozenset hashes: a list or map from a hostile node would raise TypeError
    return isinstance(value, str) and value in choices


def _commit(item: Any, index: int) -> Commit:
    where = f"commits[{index}]"
    if not isinstance(item, list) or len(item) != 6:
        raise OutcomeDecodeError(f"outcome {where} must be a list of 6 fields")
    sha, ts, added, deleted, rule, subject = item
    if not isinstance(sha, str) or not 4 <= len(sha) <= 64 or not sha.isalnum():
        raise OutcomeDecodeError(f"outcome {where} sha is not a commit id")
    if not _one_of(rule, RULES):
        raise OutcomeDecodeError(f"outcome {where} rule must be one of {', '.join(sorted(RULES))}")
    if not isinstance(subject, str) or len(subject) > MAX_TEXT:
        raise OutcomeDecodeError(f"outcome {where} subject must be short text")
    return Commit(
        sha,
        _time(ts, f"{where} time"),
        _count(added, f"{where} lines added"),
        _count(deleted, f"{where} lines deleted"),
        rule,
        subject,
    )


def _pr(item: Any) -> PullRequest | None:
    if item is None:
        return None
    if not isinstance(item, list) or len(item) != 4:
        raise OutcomeDecodeError("outcome pr must be a list of 4 fields")
    number, state, merged, url = item
    if not _one_of(state, PR_STATES) or type(merged) is not bool:
        raise OutcomeDecodeError("outcome pr state must be open or closed, merged true or false")
    if not isinstance(url, str) or len(url) > MAX_TEXT:
        raise OutcomeDecodeError("outcome pr url must be short text")
    return PullRequest(_count(number, "pr number"), state, merged, url)


def outcome_from_map(data: Any) -> SessionOutcome:
    """The outcome `data` describes; raises `OutcomeDecodeError` naming the first bad field."""
    if not isinstance(data, dict):
        raise OutcomeDecodeError("outcome is not a map")
    status: Any = data.get("status")
    if not _one_of(status, STATUSES):
        raise OutcomeDecodeError(f"outcome status must be one of {', '.join(sorted(STATUSES))}")
    commits = data.get("commits", [])
    if not isinstance(commits, list) or len(commits) > MAX_COMMITS:
        raise OutcomeDecodeError(f"outcome commits must be a list of at most {MAX_COMMITS}")
    session_id = _text(data, "session_id", limit=256)
    if not session_id:
        raise OutcomeDecodeError("outcome session_id is empty")
    return SessionOutcome(
        session_id=session_id,
        checked_at=_time(data.get("checked_at"), "checked_at"),
        status=status,
        detail=_text(data, "detail", optional=True) or "",
        repo=_text(data, "repo", optional=True),
        branch=_text(data, "branch", optional=True),
        commits=tuple(_commit(item, i) for i, item in enumerate(commits)),
        pr=_pr(data.get("pr")),
        pr_status=_text(data, "pr_status", optional=True) or "",
    )
