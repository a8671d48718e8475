"""A node's `outcomes` maps are untrusted: every malformed field is refused with a message
naming it (never another exception, which would escape the batch's handling before its ack)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.outcomes import (
    Commit,
    OutcomeDecodeError,
    PullRequest,
    SessionOutcome,
    outcome_from_map,
    outcome_to_map,
)

GOOD = SessionOutcome(
    "s1",
    1_700_000_000.0,
    "ok",
    repo="github.com/acme/widget",
    branch="main",
    commits=(Commit("ab" * 20, 1_700_000_100.0, 3, 1, "trailer", "fix"),),
    pr=PullRequest(7, "open", False, "https://github.com/acme/widget/pull/7"),
    pr_status="found",
)


def test_a_good_outcome_comes_back_as_it_went() -> None:
    assert outcome_from_map(outcome_to_map(GOOD)) == GOOD


def _with(**changes: Any) -> dict[str, Any]:
    data = outcome_to_map(GOOD)
    data.update(changes)
    return data


def _commit(**fields: Any) -> list[Any]:
    row = outcome_to_map(GOOD)["commits"][0]
    order = ["sha", "ts", "added", "deleted", "rule", "subject"]
    return [fields.get(name, value) for name, value in zip(order, row, strict=True)]


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ([1, 2], "not a map"),
        (_with(status=["ok"]), "status"),
        (_with(status={"ok": 1}), "status"),
        (_with(status="bogus"), "status"),
        (_with(session_id=["s1"]), "session_id"),
        (_with(session_id=""), "session_id"),
        (_with(checked_at=float("nan")), "checked_at"),
        (_with(checked_at=True), "checked_at"),
        (_with(commits={"a": 1}), "commits"),
        (_with(commits=[_commit(rule=["trailer"])]), "rule"),
        (_with(commits=[_commit(rule={"x": 1})]), "rule"),
        (_with(commits=[_commit(sha="../../etc")]), "sha"),
        (_with(commits=[_commit(added=-1)]), "lines added"),
        (_with(commits=[_commit(subject=b"x")]), "subject"),
        (_with(pr=[7, ["open"], False, "u"]), "pr state"),
        (_with(pr=[7, {"s": 1}, False, "u"]), "pr state"),
        (_with(pr=[7, "open", 1, "u"]), "merged"),
        (_with(pr=[7, "open", False]), "pr"),
        (_with(repo=["x"]), "repo"),
    ],
)
def test_a_malformed_field_is_refused_by_name(data: Any, names: str) -> None:
    with pytest.raises(OutcomeDecodeError, match=names):
        outcome_from_map(data)
