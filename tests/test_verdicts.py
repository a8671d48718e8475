"""The verdict shape on the wire: untrusted maps, exact money, bounded lists."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.verdicts import (
    MAX_VERDICTS,
    Verdict,
    VerdictAction,
    VerdictError,
    VerdictState,
    amount_text,
    bounded,
    verdict_from_map,
    verdict_to_map,
    verdicts_from_list,
)


def one(**changes: Any) -> Verdict:
    base = Verdict(
        budget="b",
        scope="profile:work",
        period="day",
        basis="api-equivalent",
        spent="1.10",
        limit="2.00",
        share=0.55,
        state=VerdictState.OK,
        action=VerdictAction.PAUSE,
        override="ask ops",
    )
    return replace(base, **changes)


def test_a_verdict_goes_and_comes_back_exactly() -> None:
    v = one(state=VerdictState.EXHAUSTED, forecast=1.7e9, spent="0.1000000001")
    back = verdict_from_map(verdict_to_map(v))
    assert back == v and back.remaining() is not None and str(back.remaining()) == "1.8999999999"
    assert back.stops
    assert verdict_from_map(verdict_to_map(one(spent=None))).remaining() is None


@pytest.mark.parametrize(
    "bad",
    [
        {"spent": 1.1},  # money as a float: refused, never rounded
        {"spent": "lots"},
        {"limit": "NaN"},
        {"state": "sleeping"},
        {"action": "explode"},
        {"share": "half"},
        {"budget": None},
        {"forecast": float("inf")},
    ],
)
def test_malformed_verdicts_are_refused(bad: dict[str, Any]) -> None:
    data = {**verdict_to_map(one()), **bad}
    with pytest.raises(VerdictError):
        verdict_from_map(data)


def test_a_bad_verdict_is_dropped_alone_and_lists_are_bounded() -> None:
    good = verdict_to_map(one())
    assert verdicts_from_list([good, {"budget": 3}, "x", good]) == [one(), one()]
    with pytest.raises(VerdictError):
        verdicts_from_list({"not": "a list"})
    many = [one(share=i / 100) for i in range(MAX_VERDICTS * 2)]
    many.append(one(state=VerdictState.EXHAUSTED, share=0.01))
    sent = bounded(many)
    assert len(sent) == MAX_VERDICTS
    assert sent[0]["state"] == "exhausted"  # what stops goes first, never cut
    assert len(verdicts_from_list(sent + sent)) == MAX_VERDICTS


def test_which_sessions_a_verdict_applies_to() -> None:
    assert one(scope="fleet").applies_to(None, machine="n1")
    assert one(scope="machine:n1").applies_to("s", machine="n1")
    assert not one(scope="machine:n2").applies_to("s", machine="n1")
    assert one(scope="session:s").applies_to("s", machine="n1")
    assert not one(scope="session:s").applies_to(None, machine="n1")
    assert one(scope="profile:work").applies_to("s", machine="n1", profile="work")
    assert not one(scope="profile:work").applies_to("s", machine="n1", profile=None)
    assert not one(scope="galaxy:x").applies_to("s", machine="n1")
    assert not one(state=VerdictState.EXHAUSTED, action=VerdictAction.ALERT).stops


def test_a_two_part_scope_needs_both_parts_and_a_model_part_the_sessions_models() -> None:
    two = one(scope="profile:work,agent:claude-code")
    assert two.applies_to("s", machine="n1", profile="work", agent="claude-code")
    assert not two.applies_to("s", machine="n1", profile="work", agent="codex")
    assert not two.applies_to("s", machine="n1", profile="home", agent="claude-code")
    assert not two.applies_to("s", machine="n1", agent="claude-code")  # profile unknown
    model = one(scope="model:claude-opus-4-1,session:s")
    assert model.applies_to("s", machine="n1", models={"claude-opus-4-1", "x"})
    assert not model.applies_to("s", machine="n1", models={"x"})
    assert not model.applies_to("t", machine="n1", models={"claude-opus-4-1"})


def test_quota_amounts_are_percents_and_unknown_is_never_zero() -> None:
    assert amount_text("92.5", "quota") == "92.5 %"
    assert amount_text("1.10", "api") == "$1.10"
    assert amount_text(None, "paid") == "unknown"
