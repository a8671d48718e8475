"""The detectors scored on a simulated fleet week (`node_agent.simulate.scenarios`).

python -m bench.detectors [--machines 50] [--days 7] [--per-kind 24] [--seed 1]
                          [--ingest-events 40000]

Two runs of the same fleet (same seed, same normal traffic) through the hub's detectors,
directly on the event stream (each call priced by the shipped price tables, fed to a
`DetectorRunner` in time order, as the hub's ingest would; no processes):

- clean: no injections. Every finding is a false alert: counted per 100 machine-days.
- injected: `--per-kind` scenarios of each kind. A scenario is detected when a finding of the
  kind that names it (its session; for a runaway, its machine or profile) is raised within
  30 minutes of its onset. Recall per kind; time to detect (the simulated time of the call
  that raised the finding, minus the onset) in seconds, and in calls for the loop kinds (the
  scenario's calls from its onset up to the one that raised it: 3 = after 2 repeats).
- ingest: what the detectors add to the hub's own path, `FleetService.ingest` of 500-call
  batches into a store on disk, without and with the runner attached (the best of 3 each).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hub.detectors._base import InputRates
from hub.detectors.runner import DetectorRunner, attach, default_detectors
from hub.findings import Finding
from hub.service import FleetService
from hub.store import Store
from node_agent.simulate.scenarios import FINDING_KINDS, KINDS, Injection, Week, simulate
from pricing import Billing, PriceBook
from shared.events import Event

WINDOW_S = 1800.0
LOOP_KINDS = ("retry_loop", "cache_thrash", "model_swap", "context_climb", "fanout")


@dataclass(frozen=True, slots=True)
class Raised:
    finding: Finding
    at: float  # simulated time of the call that raised it
    session: str  # that call's session


class _Recorder:
    def __init__(self) -> None:
        self.raised: list[Raised] = []
        self.now = 0.0
        self.session = ""

    def raise_finding(self, finding: Finding) -> None:
        self.raised.append(Raised(finding, self.now, self.session))


def run(week: Week, book: PriceBook) -> tuple[list[Raised], float, float]:
    """Feed the week to the detectors; (what they raised, seconds pricing, seconds detecting)."""
    recorder = _Recorder()
    runner = DetectorRunner(recorder, default_detectors(InputRates(book)))
    t0 = time.perf_counter()
    priced = [(e, book.price(e, Billing.API).api_equivalent) for e in week.events]
    t1 = time.perf_counter()
    for event, cost in priced:
        recorder.now, recorder.session = event.ts, event.session_id
        runner.observe(event, cost)
    return recorder.raised, t1 - t0, time.perf_counter() - t1


def _matches(injection: Injection, raised: Raised) -> bool:
    f = raised.finding
    if f.kind not in FINDING_KINDS[injection.kind]:
        return False
    if not injection.onset <= raised.at <= injection.onset + WINDOW_S:
        return False
    return injection.named_by(f.scope)


def _calls_to_detect(week: Week, injection: Injection, at: float) -> int:
    return sum(
        1
        for e in week.events
        if e.session_id == injection.session_id
        and e.subagent_id is None
        and injection.onset <= e.ts <= at
    )


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ingest_cost(events: int, book: PriceBook) -> tuple[float, float]:
    """Microseconds per call of `FleetService.ingest` without and with the detectors."""
    week = simulate(machines=10, days=2, seed=3)
    by_node: dict[str, list[Event]] = {}
    for event in week.events[:events]:
        by_node.setdefault(event.machine, []).append(event)
    batches = [
        (node, calls[start : start + 500])
        for node, calls in by_node.items()
        for start in range(0, len(calls), 500)
    ]
    best: dict[bool, float] = {}
    for attached in (False, True, False, True, False, True):
        with tempfile.TemporaryDirectory() as tmp:
            service = FleetService(Store.in_dir(Path(tmp)), book)
            service.wait_loaded()
            if attached:
                attach(service, _Recorder(), book)
            t0 = time.perf_counter()
            for seq, (node, batch) in enumerate(batches, 1):
                service.ingest(node, "s1", seq, seq, batch)
            spent = (time.perf_counter() - t0) / events * 1e6
            best[attached] = min(best.get(attached, spent), spent)
    return best[False], best[True]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.detectors", description=__doc__)
    parser.add_argument("--machines", type=int, default=50)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--per-kind", type=int, default=24)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ingest-events", type=int, default=40_000)
    args = parser.parse_args(argv)
    book = PriceBook.default()

    t0 = time.perf_counter()
    clean = simulate(args.machines, args.days, args.seed, 0)
    made = time.perf_counter() - t0
    raised, price_s, detect_s = run(clean, book)
    machine_days = args.machines * args.days
    print(
        f"clean fleet: {args.machines} machines x {args.days} days, {len(clean.events):,} calls "
        f"(simulated in {made:.1f} s, priced in {price_s:.1f} s; the detectors took "
        f"{detect_s:.1f} s, {detect_s / max(1, len(clean.events)) * 1e6:.1f} us a call)"
    )
    per_kind = Counter(r.finding.kind for r in raised)
    rate = len(raised) / machine_days * 100
    print(
        f"  false alerts: {len(raised)} in {machine_days} machine-days = {rate:.2f} per 100 "
        f"machine-days (target < 1)" + (f": {dict(per_kind)}" if per_kind else "")
    )
    for r in raised[:10]:
        print(f"    {r.finding.kind} {r.finding.scope}: {r.finding.text}")

    if args.ingest_events:
        without, with_ = ingest_cost(args.ingest_events, book)
        print(
            f"hub ingest (FleetService.ingest, 500-call batches, store on disk): "
            f"{without:.1f} us a call without the detectors, {with_:.1f} us with them"
        )

    week = simulate(args.machines, args.days, args.seed, args.per_kind)
    raised, _, _ = run(week, book)
    print(
        f"injected fleet: {len(week.events):,} calls, {len(week.injections)} scenarios "
        f"({args.per_kind} of each kind)"
    )
    explained: set[int] = set()
    print(f"  {'kind':<14} {'recall':>8} {'ttd p50':>8} {'ttd p95':>8} {'calls p50/p95/max':>18}")
    for kind in KINDS:
        cases = [i for i in week.injections if i.kind == kind]
        ttd: list[float] = []
        calls: list[float] = []
        for injection in cases:
            hits = [(n, r) for n, r in enumerate(raised) if _matches(injection, r)]
            explained.update(n for n, _ in hits)
            if not hits:
                continue
            first = min(r.at for _, r in hits)
            ttd.append(first - injection.onset)
            if kind in LOOP_KINDS:
                calls.append(_calls_to_detect(week, injection, first))
        recall = len(ttd) / len(cases) * 100 if cases else float("nan")
        call_text = (
            f"{_pct(calls, 0.5):.0f}/{_pct(calls, 0.95):.0f}/{max(calls):.0f}" if calls else "-"
        )
        print(
            f"  {kind:<14} {recall:>7.1f}% {_pct(ttd, 0.5):>7.0f}s {_pct(ttd, 0.95):>7.0f}s "
            f"{call_text:>18}"
        )
        if kind == "retry_loop":
            for variant in ("signature", "burst"):
                some = [i for i in cases if i.variant == variant]
                found = [i for i in some if any(_matches(i, r) for r in raised)]
                print(f"    {variant}: {len(found)}/{len(some)}")
    other = [r for n, r in enumerate(raised) if n not in explained]
    stray = [
        r for r in other if not any(i.concerns(r.finding.scope, r.at) for i in week.injections)
    ]
    print(
        f"  other findings: {len(other)} about the scenarios (another kind, or the machine of "
        f"a session that thrashed, say); {len(stray)} about nothing injected"
        + (f": {dict(Counter(r.finding.kind for r in stray))}" if stray else "")
    )
    for r in stray[:5]:
        print(f"    {r.finding.kind} {r.finding.scope}: {r.finding.text}")


if __name__ == "__main__":
    main()
