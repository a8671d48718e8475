"""Each detector on injected scenarios and on clean traffic (a simulated fleet, priced by the
shipped tables), and each rule's edges on hand-made calls."""

from __future__ import annotations

from decimal import Decimal
from functools import cache

import msgspec
import pytest

from hub.detectors._base import Call, InputRates, Recent
from hub.detectors.cache import CacheThrash
from hub.detectors.context import ContextGrowth
from hub.detectors.fanout import SubagentFanout
from hub.detectors.loops import RetryLoop
from hub.detectors.model_swap import ModelSwap
from hub.detectors.peers import PeerOutlier
from hub.detectors.runner import DetectorRunner, default_detectors
from hub.detectors.spike import RunRateSpike
from hub.findings import Finding
from hub.model import IngestResult
from node_agent.simulate.scenarios import FINDING_KINDS, KINDS, Week, simulate
from pricing import Billing, PriceBook
from shared.events import Agent, Role, Tokens, UsageEvent

BOOK = PriceBook.default()
RATES = InputRates(BOOK)
T0 = 1_793_000_000.0
SONNET = "claude-sonnet-4-5-20250929"


class Sink:
    def __init__(self) -> None:
        self.found: list[tuple[Finding, float]] = []
        self.now = 0.0

    def raise_finding(self, finding: Finding) -> None:
        self.found.append((finding, self.now))


def _run(week: Week) -> list[tuple[Finding, float]]:
    sink = Sink()
    runner = DetectorRunner(sink, default_detectors(RATES))
    for event in week.events:
        sink.now = event.ts
        runner.observe(event, BOOK.price(event, Billing.API).api_equivalent)
    return sink.found


@cache
def _clean() -> tuple[Week, list[tuple[Finding, float]]]:
    week = simulate(machines=8, days=3, seed=7)
    return week, _run(week)


@cache
def _injected() -> tuple[Week, list[tuple[Finding, float]]]:
    week = simulate(machines=8, days=3, seed=7, per_kind=6)
    return week, _run(week)


def test_clean_traffic_raises_no_finding() -> None:
    week, found = _clean()
    assert len(week.events) > 50_000
    assert [f.text for f, _ in found] == []  # the false-alarm count: 0 in 24 machine-days


@pytest.mark.parametrize("kind", KINDS)
def test_every_injected_scenario_is_found_soon_after_its_onset(kind: str) -> None:
    week, found = _injected()
    cases = [i for i in week.injections if i.kind == kind]
    assert len(cases) == 6
    for injection in cases:
        hits = [
            at
            for finding, at in found
            if finding.kind in FINDING_KINDS[kind]
            and injection.named_by(finding.scope)
            and injection.onset <= at <= injection.onset + 1800
        ]
        assert hits, f"{kind} on {injection.machine} at {injection.onset} not found"
        assert min(hits) - injection.onset < 300  # within 5 minutes of the onset
    # Every other finding concerns an injected session, or the machine of one while it ran
    # (a thrashing session's spend is a spike of its machine too): none is about normal work.
    stray = [f for f, at in found if not any(i.concerns(f.scope, at) for i in week.injections)]
    assert stray == []


def _call(
    n: int,
    *,
    ts: float | None = None,
    tokens: Tokens | None = None,
    model: str = SONNET,
    session: str = "s1",
    machine: str = "spark01",
    tool: str | None = None,
    subagent: str | None = None,
) -> UsageEvent:
    return UsageEvent(
        event_id=f"e{session}{subagent}{n}",
        ts=T0 + n * 20.0 if ts is None else ts,
        agent=Agent.CLAUDE_CODE,
        model=model,
        tokens=tokens or Tokens(5, 300, 50_000 + n * 2_000, 0, 2_000),
        session_id=session,
        role=Role.SUBAGENT if subagent else Role.MAIN,
        parent_session_id=session if subagent else None,
        subagent_id=subagent,
        machine=machine,
        profile="max-a",
        account="ops@example.com",
        tool_calls=tool,
    )


def test_a_spike_is_one_finding_per_happening_with_its_baseline_in_figures() -> None:
    spike = RunRateSpike()
    found: list[Finding] = []
    ts = T0
    for _ in range(30 * 10):  # 30 active windows at about $1 each: the baseline
        found += spike.observe(Call(_call(0, ts=ts), Decimal("0.10")))
        ts += 30.0
    assert found == []
    onset = ts
    for _ in range(60):  # $1 every 5 s: $60 a window, for 5 minutes
        found += spike.observe(Call(_call(0, ts=ts), Decimal("1.00")))
        ts += 5.0
    machine = [f for f in found if f.scope == "machine=spark01"]
    assert len(machine) == 1  # the runaway goes on: still one finding
    finding = machine[0]
    assert finding.kind == "run_rate_spike"
    assert finding.evidence["baseline_median_usd"].startswith("1.0")
    assert Decimal(finding.evidence["window_spend_usd"]) > Decimal(finding.evidence["bar_usd"])
    assert onset - 300 <= finding.start <= onset
    for _ in range(20):  # back to normal for a while, then a second runaway
        found += spike.observe(Call(_call(0, ts=ts), Decimal("0.10")))
        ts += 30.0
    for _ in range(60):
        found += spike.observe(Call(_call(0, ts=ts), Decimal("1.00")))
        ts += 5.0
    machine = [f for f in found if f.scope == "machine=spark01"]
    assert len(machine) == 2 and machine[0].id != machine[1].id


def test_a_spike_without_history_needs_the_absolute_bar() -> None:
    spike = RunRateSpike()
    found = [f for n in range(20) for f in spike.observe(Call(_call(n, ts=T0 + n), Decimal(1)))]
    assert found == []  # $20 in a window: below the $25 a scope without history needs
    found = spike.observe(Call(_call(21, ts=T0 + 21), Decimal(6)))
    assert [f.evidence["baseline_median_usd"] for f in found] == ["none yet", "none yet"]
    assert spike.observe(Call(_call(22, ts=T0 + 22), None)) == []  # unknown: no dollars


def test_a_machine_at_many_times_its_peers_is_an_outlier_and_the_peers_are_not() -> None:
    peers = PeerOutlier()
    found: list[Finding] = []
    for minute in range(30):
        for m in range(6):
            cost = Decimal("4.00") if m == 0 else Decimal("0.20")
            event = _call(minute, ts=T0 + minute * 60 + m, machine=f"spark0{m}", session=f"s{m}")
            found += peers.observe(Call(msgspec.structs.replace(event, account=f"a{m}"), cost))
    scopes = {f.scope for f in found}
    assert scopes == {"machine=spark00", "account=a0", "machine=spark00,profile=max-a"}
    machine = next(f for f in found if f.scope == "machine=spark00")
    assert machine.evidence["ratio"] == "20.0" and machine.evidence["peers"] == "5"


def test_cache_writes_never_read_are_thrash_and_a_working_cache_is_not() -> None:
    thrash = CacheThrash(RATES)
    working = [
        thrash.observe(Call(_call(n, tokens=Tokens(5, 300, 40_000 * n, 30_000, 0)), None))
        for n in range(1, 30)
    ]
    assert not any(working)  # large writes, but each read back by the next call
    found = [
        f
        for n in range(10)
        for f in thrash.observe(
            Call(_call(n, session="s2", tokens=Tokens(5, 300, 0, 80_000, 0)), None)
        )
    ]
    assert len(found) == 1
    assert found[0].evidence["rule"] == "writes_unread" and found[0].evidence["tier"] == "5m"
    assert found[0].evidence["cache_write_5m_tokens"] == "400000"
    assert found[0].id == "cache_thrash:s2"


def test_one_hour_writes_read_once_never_pay_back() -> None:
    thrash = CacheThrash(RATES)
    found: list[Finding] = []
    # Each 1-hour write is read by the next call, then the cache is lost (the prefix is
    # written again): one read, never the two a 1-hour write needs to pay back its 2x.
    for n in range(12):
        write = Tokens(5, 300, 0, 0, 50_000) if n % 2 == 0 else Tokens(5, 300, 50_000, 0, 0)
        found += thrash.observe(Call(_call(n, tokens=write), None))
    assert len(found) == 1
    evidence = found[0].evidence
    assert evidence["rule"] == "1h_unpaid" and evidence["tier"] == "1h"
    assert evidence["unpaid_1h_writes"] == "3"
    # $3 per million input tokens: (1.0 - 0.9 x 1 read) x 150,000 tokens = $0.045
    assert Decimal(evidence["waste_usd"]) == Decimal("0.045")
    unpriced = CacheThrash(RATES)
    found = []
    for n in range(12):
        write = Tokens(5, 300, 0, 0, 50_000) if n % 2 == 0 else Tokens(5, 300, 50_000, 0, 0)
        found += unpriced.observe(Call(_call(n, tokens=write, model="no-such-model"), None))
    assert found[0].evidence["waste_usd"] == "unknown"  # never $0
    assert "unknown amount" in found[0].text


def test_the_same_tool_call_three_times_is_a_loop_twice_is_not() -> None:
    loops = RetryLoop()
    twice = [loops.observe(Call(_call(n, tool="Bash:abc"), None)) for n in range(2)]
    other = loops.observe(Call(_call(2, tool="Edit:def"), None))
    assert not any(twice) and other == []
    found = [f for n in range(3, 9) for f in loops.observe(Call(_call(n, tool="Bash:abc"), None))]
    assert len(found) == 1  # on the 3rd identical call (after 2 repeats), once
    assert found[0].evidence["tool"] == "Bash" and found[0].id == "retry_loop:s1:Bash:abc"


def test_similar_small_calls_without_a_signature_are_a_loop() -> None:
    loops = RetryLoop()
    same = [Tokens(5, 120, 30_000 + n * 700, 700, 0) for n in range(6)]
    found = [f for n, t in enumerate(same) for f in loops.observe(Call(_call(n, tokens=t), None))]
    assert [f.evidence["rule"] for f in found] == ["similar_small_calls"]
    varied = [Tokens(5, 120 + 90 * n, 30_000 + n * 700, 700, 0) for n in range(6)]
    assert not [
        f
        for n, t in enumerate(varied)
        for f in loops.observe(Call(_call(n, tokens=t, session="s2"), None))
    ]


def test_a_swap_to_a_pricier_model_is_found_a_cheaper_or_unknown_one_is_not() -> None:
    swap = ModelSwap(RATES)
    opus = "claude-opus-4-1-20250805"
    threads = {
        "cheaper": [SONNET, SONNET, "claude-haiku-4-5-20251001"],
        "unknown": [SONNET, "no-such-model", SONNET],
        "pricier": [SONNET, SONNET, opus, opus, SONNET, opus],
        "opus from the start": [opus, opus],
    }
    found = [
        f
        for session, models in threads.items()
        for n, model in enumerate(models)
        for f in swap.observe(Call(_call(n, model=model, session=session), None))
    ]
    assert [(f.scope.split("session=")[1], f.evidence["ratio"]) for f in found] == [
        ("pricier", "5.0")  # once per (thread, from, to), however often it swaps back
    ]
    assert found[0].evidence["from_input_usd_per_mtok"] == "3.000000"


def test_a_prompt_climbing_every_call_is_context_growth_ordinary_growth_is_not() -> None:
    growth = ContextGrowth()
    ordinary = [Tokens(5, 300, 60_000 + n * 3_000, 3_000, 0) for n in range(40)]
    assert not any(growth.observe(Call(_call(n, tokens=t), None)) for n, t in enumerate(ordinary))
    climb = [Tokens(5, 300, 40_000 + n * 15_000, 15_000, 0) for n in range(10)]
    found = [
        (n, f)
        for n, t in enumerate(climb)
        for f in growth.observe(Call(_call(n, tokens=t, session="s2"), None))
    ]
    # on its 5th call (4 steep steps): at a normal pace, within 5 minutes of the climb's start
    assert [(n, f.evidence["median_step_tokens"]) for n, f in found] == [(4, "15000")]


def test_more_than_ten_subagents_in_ten_minutes_is_a_fanout() -> None:
    fanout = SubagentFanout()
    slow = [
        fanout.observe(Call(_call(n, ts=T0 + n * 70, subagent=f"c{n}"), None)) for n in range(30)
    ]
    assert not any(slow)  # 30 children, but never more than 10 within 10 minutes
    fast = [
        f
        for n in range(14)
        for f in fanout.observe(Call(_call(n, ts=T0 + 5000 + n * 20, subagent=f"d{n}"), None))
    ]
    assert len(fast) == 1 and fast[0].evidence["subagents"] == "11"


def test_the_runner_judges_each_call_once_and_a_failing_detector_costs_nothing() -> None:
    class Broken:
        kind = "broken"

        def observe(self, call: Call) -> list[Finding]:
            raise RuntimeError("boom")

    sink = Sink()
    runner = DetectorRunner(sink, [Broken(), RetryLoop()])
    events = [_call(n, tool="Bash:abc") for n in range(4)]
    free = (None, False)
    first = IngestResult(changes=[(None, e) for e in events[:3]], prices=[(None, free)] * 3)
    runner.observe_batch(first)
    assert [f.kind for f, _ in sink.found] == ["retry_loop"]
    # later revisions of calls already seen are not new calls (no second loop from them)
    again = IngestResult(
        changes=[(e, msgspec.structs.replace(e, revision=1)) for e in events[:3]],
        prices=[(free, free)] * 3,
    )
    runner.observe_batch(again)
    assert runner.calls == 3 and len(sink.found) == 1


def test_state_is_bounded() -> None:
    recent: Recent[list[int]] = Recent(list, 3)
    for key in "abcde":
        recent.get(key).append(1)
    assert [k for k, _ in recent.items()] == ["c", "d", "e"]
