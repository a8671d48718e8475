"""The hook gated by the real governor: a real `fleet-hub serve` with a budget in hub.toml, a
real `node-agent run`, and a fake Claude Code session whose calls cross the budget mid-session
while it calls `node-agent hook` as Claude Code does. The verdicts come from
`Governor.standings()` through the hub's signed acks; `fleet-hub budget override` lets the next
turn through."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from node_agent.query_client import session_figures
from shared.events import Agent, Tokens, UsageEvent
from tests import fleet_harness as fleet
from tests.agent_harness import AgentSide, hook
from tests.api_harness import ServedHub, serve_hub
from tests.budget_harness import api_price, budgets, restart
from tests.test_source_claude import OTHER_SESSION, SESSION

NODE = "spark01"  # the machine the harness's agent token is bound to


def one_call_price() -> Decimal:
    """What one call of the harness's transcript costs at API rates, exactly."""
    tokens = Tokens(input=4, output=187, cache_read=48811, cache_write_1h=2210)
    event = UsageEvent(
        event_id="x",
        ts=time.time(),
        agent=Agent.CLAUDE_CODE,
        model="claude-sonnet-4-5-20250929",
        tokens=tokens,
        session_id=SESSION,
        machine=NODE,
    )
    return api_price(event)


@dataclass
class Governed:
    served: ServedHub
    agent: AgentSide
    call: Decimal  # one call's price


def with_budgets(served: ServedHub, *tables: dict[str, str]) -> None:
    """[[budgets]] tables appended to the running hub's hub.toml (it reloads them)."""
    lines = []
    for table in tables:
        lines += ["", "[[budgets]]", *(f'{k} = "{v}"' for k, v in table.items())]
    with served.setup.config.open("a") as fh:
        fh.write("\n".join(lines) + "\n")
    names = {t["name"] for t in tables}
    fleet.wait_for(lambda: names <= set(budgets(served)), 30, "the hub to take the budgets")


@pytest.fixture
def governed(tmp_path: Path) -> Iterator[Governed]:
    served = serve_hub(tmp_path)
    with fleet.processes() as started:
        started.append(served.proc)
        home = tmp_path / "claude"
        (home / "projects").mkdir(parents=True)
        spec = fleet.ProfileSpec("work", Agent.CLAUDE_CODE, home)
        config = fleet.write_node(tmp_path, NODE, served.setup, [spec])
        started.append(fleet.start_node(config, tmp_path))
        sock = config.parent / "state" / "query.sock"
        fleet.wait_for(sock.exists, 30, "the node's query socket")
        try:
            yield Governed(served, AgentSide(config, home, tmp_path), one_call_price())
        finally:
            started.append(served.proc)  # a restarted hub is stopped too


def spent(served: ServedHub, name: str) -> Decimal:
    return Decimal(budgets(served)[name]["spent"])


def test_a_budget_in_hub_toml_crossed_mid_session_stops_the_turn_until_overridden(
    governed: Governed,
) -> None:
    served, agent, call = governed.served, governed.agent, governed.call
    limit = call * Decimal("3.5")  # warn at 50 % (2nd call), the pause at the 3rd
    with_budgets(
        served,
        {"name": "work-day", "scope": "profile=work", "period": "day", "basis": "api",
         "limit": str(limit), "action": "pause"},
    )  # fmt: skip
    agent.calls(1)
    fleet.wait_for(lambda: spent(served, "work-day") == call, 30, "the first call counted")
    assert hook(agent, "UserPromptSubmit") == {}  # 29 %: nothing to say

    agent.calls(1, start=1)  # 57 %: a warning in the agent's context

    def noted() -> str:
        return str(hook(agent, "PostToolBatch").get("hookSpecificOutput", {}))

    fleet.wait_for(lambda: "work-day" in noted(), 30, "the warning through the ack", every=0.3)
    assert f"${2 * call} of ${limit}" in noted()
    assert "continue" not in hook(agent, "PostToolBatch")

    agent.calls(1, start=2)  # 86 % and less than a call left: the governor's pause
    fleet.wait_for(
        lambda: hook(agent, "PostToolBatch").get("continue") is False, 30, "the stop", every=0.3
    )
    assert spent(served, "work-day") == 3 * call
    for event in ("UserPromptSubmit", "PostToolBatch", "PreToolUse"):
        answer = hook(agent, event)
        assert answer["continue"] is False, event
        reason = answer["stopReason"]
        assert "budget 'work-day' (profile:work, day) is exhausted" in reason
        assert f"${3 * call} of ${limit} spent; action pause" in reason
        assert "fleet-hub budget override work-day --limit AMOUNT" in reason

    # A hub killed (-9) and started again still says it: the stop is in its store.
    restart(served, agent.tmp, signal.SIGKILL)
    state = agent.config.parent / "state"
    restarted = time.time()

    def fresh() -> bool:
        age = session_figures(state, SESSION, [], None)["verdicts_age_s"]
        return age is not None and time.time() - age > restarted

    fleet.wait_for(fresh, 30, "an ack of the restarted hub", every=0.3)
    assert hook(agent, "UserPromptSubmit")["continue"] is False

    done = served.cli(
        "budget", "override", "work-day", "--limit", "5", "--until", "+1h", "--why", "release"
    )
    assert done.returncode == 0, done.stderr
    fleet.wait_for(
        lambda: hook(agent, "UserPromptSubmit") == {}, 30, "the override to reach the hook", 0.3
    )
    assert "continue" not in hook(agent, "PostToolBatch")


def test_a_session_budget_stops_the_session_that_spent_it_and_no_other(
    governed: Governed,
) -> None:
    served, agent, call = governed.served, governed.agent, governed.call
    limit = call * Decimal("2.5")  # a hard stop keeps a call of headroom: it fires at two
    with_budgets(
        served,
        {"name": "per-session", "scope": "fleet", "period": "session", "basis": "api",
         "limit": str(limit), "action": "kill"},
        {"name": "other machine", "scope": "machine=spark99", "period": "day", "basis": "api",
         "limit": "0.01", "action": "pause"},
    )  # fmt: skip
    agent.calls(1, start=100, session=OTHER_SESSION)  # another session: one call, inside
    agent.calls(2)  # this one: over its own limit
    fleet.wait_for(
        lambda: hook(agent, "PostToolBatch").get("continue") is False, 30, "the stop", every=0.3
    )
    reason = hook(agent, "UserPromptSubmit")["stopReason"]
    assert f"budget 'per-session' (session:{SESSION}, session) is exhausted" in reason
    assert f"${2 * call} of ${limit} spent; action kill" in reason
    # The other session spent one call: the same budget lets it go on.
    assert "continue" not in hook(agent, "UserPromptSubmit", OTHER_SESSION)
    # A budget over another machine is not this node's (spark99 spent nothing, nor do we show it).
    assert "other machine" not in str(hook(agent, "PostToolBatch"))
