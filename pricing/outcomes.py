"""Cost per outcome: each session's priced calls put on what the session produced, grouped by
commit, branch, pull request or repository. One rule for `node-agent scan` and the hub.

The rule (README "Cost per outcome"): within a session, a call belongs to the first of the
session's commits authored at or after it, i.e. a commit costs the session's spend since its
previous commit (or since the session began). Calls after the session's last commit, and every
call of a session that made no commit, belong to no commit ("no outcome"). A commit made by two
sessions (matched by both) costs the sum of both spans. A branch, PR or repository costs all of
its sessions' spend, commit or not; its `no_outcome_cost` is the part that bought no commit.

Subagent share: the part of the spend made by subagents. Retry cost: the spend of calls that
asked again for a tool call (same tool, same input) the previous call of the same thread had
asked for, i.e. the spend after a first attempt that did not do. Only Claude Code's logs name
tool calls, so for other agents the retry cost is null (not zero) and says why.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Final

import msgspec

from pricing import PricedCall
from pricing.outcome_keys import OUTCOME_KEYS, OutcomeKeyError, check_outcome_keys
from pricing.rollup import Row, RowKey, money_text
from pricing.sdk_credit import Moved
from shared.events import Agent, Role, Tokens, UsageEvent
from shared.outcomes import Commit, PullRequest, SessionOutcome, root_session

# The columns each view's rows are keyed by (a branch is only one within its repository).
VIEW_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "commit": ("commit",),
    "branch": ("repo", "branch"),
    "pr": ("pr",),
    "repo": ("repo",),
}
TOOL_CALL_AGENTS: Final = frozenset({Agent.CLAUDE_CODE})  # whose logs name their tool calls
RULE: Final = (
    "a commit costs its session's spend since the session's previous commit (or its start); "
    "spend after a session's last commit, and sessions with no commit, are 'no outcome'"
)
SHORT_SHA: Final = 12
GIT_TIME_STEP_S: Final = 1.0  # the resolution of a commit's author time


def commit_times(commits: Iterable[Commit]) -> list[float]:
    """When each commit counts as made, for putting calls on commits (the first commit at or
    after a call's time takes it): git keeps whole seconds, so a commit stamped S was made in
    [S, S + 1), after the call that decided it, which may have ended within that second."""
    return [c.author_ts + GIT_TIME_STEP_S for c in commits]


class _Group(msgspec.Struct):
    row: Row
    detail: dict[str, Any] = msgspec.field(default_factory=dict)
    commits: dict[str, Commit] = msgspec.field(default_factory=dict)
    sessions: set[str] = msgspec.field(default_factory=set)
    no_outcome_sessions: set[str] = msgspec.field(default_factory=set)
    # made at their first call (a view of many commits has many groups with none)
    no_outcome: Row | None = None
    subagent: Row | None = None
    retry: Row | None = None
    retry_unseen_calls: int = 0

    def to_json(self) -> dict[str, Any]:
        out = self.row.to_json()
        retry = None if self.retry_unseen_calls else _amount(self.retry)
        out["outcome"] = {
            **self.detail,
            "commits": len(self.commits),
            "lines_added": sum(c.lines_added for c in self.commits.values()),
            "lines_deleted": sum(c.lines_deleted for c in self.commits.values()),
            "sessions": len(self.sessions),
            "no_outcome_sessions": len(self.no_outcome_sessions),
            "no_outcome_cost": _amount(self.no_outcome),
            "subagent_cost": _amount(self.subagent),
            "subagent_share": _share(self.subagent, self.row),
            "retry_cost": retry,
            "retry_calls": 0 if self.retry is None else self.retry.calls,
            "retry_unseen_calls": self.retry_unseen_calls,
        }
        return out


_EMPTY: Final = Row(keys={})  # what a group's part is before its first call (never added to)


def _amount(row: Row | None) -> str | None:
    """A row's API-equivalent dollars; None when a call in it has no known price."""
    row = row or _EMPTY
    return None if row.unknown_calls else money_text(row.api_equivalent)


def _share(part: Row | None, whole: Row) -> str | None:
    part = part or _EMPTY
    if part.unknown_calls or whole.unknown_calls or not whole.api_equivalent:
        return None
    share = part.api_equivalent / whole.api_equivalent
    return str(share.quantize(Decimal("0.0001"), rounding=ROUND_HALF_EVEN))


Call = tuple[UsageEvent, PricedCall]
# (commit index, calls, their tokens, their price, by a subagent, retry (None: not logged))
Part = tuple[int, int, Tokens, PricedCall, bool, bool | None]


def tool_set(tool_calls: str | None) -> frozenset[str]:
    """The tool calls a call asked for (`UsageEvent.tool_calls`: comma-separated)."""
    return frozenset(tool_calls.split(",")) if tool_calls else frozenset()


def _retries(calls: list[Call]) -> list[bool | None]:
    """Per call (in time order): it repeats a tool call its thread's previous call asked for;
    None when the agent's log does not name tool calls."""
    last: dict[str | None, frozenset[str]] = {}
    out: list[bool | None] = []
    for event, _ in calls:
        if event.agent not in TOOL_CALL_AGENTS:
            out.append(None)
            continue
        tools = tool_set(event.tool_calls)
        thread = event.subagent_id
        out.append(bool(tools & last.get(thread, frozenset())))
        last[thread] = tools
    return out


class OutcomeReport:
    """Rows of one outcome view; feed it each session's calls, then `to_json`."""

    def __init__(self, by: str) -> None:
        if by not in OUTCOME_KEYS:
            raise OutcomeKeyError(f"unknown outcome view {by!r}: one of {', '.join(OUTCOME_KEYS)}")
        self.by = by
        self.groups: dict[RowKey, _Group] = {}
        self.statuses: dict[str, int] = {}
        self.pr_lookups: dict[str, int] = {}  # per session: found, none, or why not known

    def add_session(
        self,
        outcome: SessionOutcome | None,
        calls: Iterable[Call],
        moves: Mapping[str, Moved] | None = None,
    ) -> None:
        """A session's calls one by one; `moves`: by event id, what the Agent SDK credit's rule
        (`pricing.sdk_credit`) moves out of subscription_included for a call (its overage is
        metered, its untold part estimated), so that a row's classes are those of every other
        spend surface."""
        ordered = sorted(calls, key=lambda c: (c[0].ts, c[0].event_id))
        if not ordered:
            return
        session_id = root_session(ordered[0][0])
        self._count(outcome)
        commits = list(outcome.commits) if outcome is not None else []
        times = commit_times(commits)
        for (event, priced), retry in zip(ordered, _retries(ordered), strict=True):
            part = (bisect_left(times, event.ts), 1, event.tokens, priced)
            subagent = event.role is Role.SUBAGENT
            self._add(outcome, commits, session_id, part, subagent, retry)
            if moves and (move := moves.get(event.event_id)):
                self.move(outcome, session_id, (part[0], move, priced.estimated), subagent, retry)

    def move(
        self,
        outcome: SessionOutcome | None,
        session_id: str,
        move: tuple[int, Moved, bool],
        subagent: bool,
        retry: bool | None,
    ) -> None:
        """Move one call's part out of subscription_included in the rows it was added to:
        (its commit index, what moves, whether its price is an estimate)."""
        at, moved, estimated = move
        commits = list(outcome.commits) if outcome is not None else []
        commit = commits[at] if at < len(commits) else None
        group = self._group(outcome, commit)
        rows = [group.row]
        if commit is None and group.no_outcome is not None:
            rows.append(group.no_outcome)
        if subagent and group.subagent is not None:
            rows.append(group.subagent)
        if retry and group.retry is not None:
            rows.append(group.retry)
        for row in rows:
            row.move(moved.overage, moved.untold, estimated=estimated)

    def add_session_parts(
        self,
        outcome: SessionOutcome | None,
        session_id: str,
        parts: Iterable[Part],
        also: Iterable[int] = (),
    ) -> None:
        """A session's calls (at least one) summed in parts: each part's calls all belong to
        one commit, given by its index in `outcome.commits` (the rule above; past the end:
        none), one class, subagent or not, retries or not (None: not logged). `also`: in a
        view whose rows are not commits (all of a session's commits fall in one row), other
        commits that calls of a part belong to."""
        self._count(outcome)
        commits = list(outcome.commits) if outcome is not None else []
        for at, calls, tokens, priced, subagent, retry in parts:
            self._add(outcome, commits, session_id, (at, calls, tokens, priced), subagent, retry)
        for at in also:
            if self.by == "commit":
                raise ValueError("a commit view's parts name their commits one by one")
            self._group(outcome, commits[at]).commits[commits[at].sha] = commits[at]

    def _count(self, outcome: SessionOutcome | None) -> None:
        status = outcome.status if outcome is not None else "unchecked"
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if outcome is not None and outcome.pr_status:
            self.pr_lookups[outcome.pr_status] = self.pr_lookups.get(outcome.pr_status, 0) + 1

    def _add(
        self,
        outcome: SessionOutcome | None,
        commits: list[Commit],
        session_id: str,
        part: tuple[int, int, Tokens, PricedCall],
        subagent: bool,
        retry: bool | None,
    ) -> None:
        at, calls, tokens, priced = part
        commit = commits[at] if at < len(commits) else None
        group = self._group(outcome, commit)
        group.sessions.add(session_id)
        if not commits:
            group.no_outcome_sessions.add(session_id)
        group.row.add_calls(calls, tokens, priced)
        if commit is None:
            group.no_outcome = group.no_outcome or Row(keys={})
            group.no_outcome.add_calls(calls, tokens, priced)
        else:
            group.commits[commit.sha] = commit
        if subagent:
            group.subagent = group.subagent or Row(keys={})
            group.subagent.add_calls(calls, tokens, priced)
        if retry is None:
            group.retry_unseen_calls += calls
        elif retry:
            group.retry = group.retry or Row(keys={})
            group.retry.add_calls(calls, tokens, priced)

    def _group(self, outcome: SessionOutcome | None, commit: Commit | None) -> _Group:
        ok = outcome is not None and outcome.status == "ok"
        repo = outcome.repo if outcome is not None and ok else None
        branch = outcome.branch if outcome is not None and ok else None
        pr = outcome.pr if outcome is not None else None
        if self.by == "commit":
            key: RowKey = (commit.sha if commit else None,)
        elif self.by == "branch":
            key = (repo, branch)
        elif self.by == "pr":
            key = (f"{repo}#{pr.number}" if pr is not None and repo else None,)
        else:
            key = (repo,)
        group = self.groups.get(key)
        if group is None:  # its detail comes from the first call's outcome
            keys = dict(zip(VIEW_KEYS[self.by], key, strict=True))
            detail = self._detail(repo, branch, pr, commit)
            group = self.groups[key] = _Group(Row(keys=keys), detail)
        return group

    def _detail(
        self, repo: str | None, branch: str | None, pr: PullRequest | None, commit: Commit | None
    ) -> dict[str, Any]:
        where = {"repo": repo, "branch": branch}
        if self.by == "commit" and commit is not None:
            detail = where | {"subject": commit.subject, "author_ts": commit.author_ts}
            return detail | {"rule": commit.rule}
        if self.by == "branch" and pr is not None:
            return {"pr": pr.number, "pr_merged": pr.merged}
        if self.by == "pr" and pr is not None:
            detail = where | {"number": pr.number, "state": pr.state}
            return detail | {"merged": pr.merged, "url": pr.url}
        return {}

    def to_json(self) -> dict[str, Any]:
        rows = [self.groups[k] for k in sorted(self.groups, key=lambda k: [v or "" for v in k])]
        no_outcome, subagent, retry = Row(keys={}), Row(keys={}), Row(keys={})
        total = _Group(Row(keys={}), no_outcome=no_outcome, subagent=subagent, retry=retry)
        for group in rows:
            total.row.merge(group.row)
            total.commits.update(group.commits)
            total.sessions |= group.sessions
            total.no_outcome_sessions |= group.no_outcome_sessions
            for into, part in ((no_outcome, group.no_outcome), (subagent, group.subagent)):
                if part is not None:
                    into.merge(part)
            if group.retry is not None:
                retry.merge(group.retry)
            total.retry_unseen_calls += group.retry_unseen_calls
        return {
            "group_by": list(VIEW_KEYS[self.by]),
            "view": self.by,
            "rule": RULE,
            "rows": [g.to_json() for g in rows],
            "total": total.to_json(),
            "sessions_by_status": dict(sorted(self.statuses.items())),
            "pull_request_lookups": dict(sorted(self.pr_lookups.items())),
        }


def outcome_report(
    by: str,
    outcomes: Mapping[str, SessionOutcome],
    calls: Iterable[Call],
    moves: Mapping[str, Moved] | None = None,
) -> dict[str, Any]:
    """The `by` view of `calls` (any sessions, any order) against the sessions' outcomes;
    `moves`: what the Agent SDK credit moves of each call (`OutcomeReport.add_session`)."""
    per_session: dict[str, list[Call]] = {}
    for call in calls:
        per_session.setdefault(root_session(call[0]), []).append(call)
    report = OutcomeReport(by)
    for session_id, session_calls in per_session.items():
        report.add_session(outcomes.get(session_id), session_calls, moves)
    return report.to_json()


def _dollars(value: str | None) -> str:
    if value is None:
        return "unknown"
    return f"${Decimal(value).quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN):,}"


def render_outcome_text(report: Mapping[str, Any]) -> str:
    """The table both CLIs print for an outcome view."""
    keys: list[str] = report["group_by"]
    head = [
        *keys,
        "sessions",
        "no-out",
        "commits",
        "+lines",
        "-lines",
        "API-equiv",
        "paid",
        "no outcome",
        "subagent",
        "retry",
        "what",
    ]
    lines = [head]
    rows = [*report["rows"], {**report["total"], keys[0]: "TOTAL"}]
    for row in rows:
        out = row["outcome"]
        cost = row["cost"]
        paid = (
            None
            if cost["unknown"] is None
            else str(Decimal(cost["metered"]) + Decimal(cost["estimated"]))
        )
        share = out["subagent_share"]
        lines.append(
            [
                *(_cell(row, k) for k in keys),
                str(out["sessions"]),
                str(out["no_outcome_sessions"]),
                str(out["commits"]),
                f"{out['lines_added']:,}",
                f"{out['lines_deleted']:,}",
                _dollars(None if cost["unknown"] is None else cost["api_equivalent"]),
                _dollars(paid),
                _dollars(out["no_outcome_cost"]),
                "-" if share is None else f"{Decimal(share) * 100:.0f}%",
                "not logged" if out["retry_cost"] is None else _dollars(out["retry_cost"]),
                _what(out),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    numeric = range(len(keys), len(head) - 1)
    text = [
        "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in lines
    ]
    statuses = ", ".join(f"{n} {s}" for s, n in report["sessions_by_status"].items())
    text += ["", f"sessions: {statuses}" if statuses else "sessions: none"]
    if lookups := report.get("pull_request_lookups"):
        text.append("pull requests: " + ", ".join(f"{n} {s}" for s, n in lookups.items()))
    text.append(f"rule: {report['rule']}")
    return "\n".join(text)


_NONE: Final = {
    "commit": "(no outcome)",
    "repo": "(no repository)",
    "branch": "-",
    "pr": "(no pull request)",
}


def _cell(row: Mapping[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return _NONE[key]
    return str(value)[:SHORT_SHA] if key == "commit" else str(value)


def _what(out: Mapping[str, Any]) -> str:
    if "subject" in out:
        return f"{out['subject'][:50]} [{out['rule']}]"
    if "state" in out:
        return "merged" if out["merged"] else out["state"]
    if "pr" in out:
        return f"PR #{out['pr']}" + (" merged" if out["pr_merged"] else "")
    return ""


__all__ = [
    "OUTCOME_KEYS",
    "OutcomeKeyError",
    "OutcomeReport",
    "check_outcome_keys",
    "outcome_report",
    "render_outcome_text",
    "tool_set",
]
