"""`make bench`: every benchmark, each printing its own figures.

python -m bench.run [--only scan,fleet,tui,store,outcomes,governor,detectors,credit]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from bench import credit, detectors, fleet, governor, outcomes, scan, store, tui

BENCHMARKS = ("scan", "fleet", "tui", "store", "outcomes", "governor", "detectors", "credit")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run ({', '.join(BENCHMARKS)})",
    )
    args = parser.parse_args(argv)
    chosen = {b.strip() for b in args.only.split(",") if b.strip()}
    if unknown := sorted(chosen - set(BENCHMARKS)):
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    if "scan" in chosen:
        print("== scan: node-agent scan vs ccusage and tokscale ==")
        scan.main()
    if "fleet" in chosen:
        print("\n== fleet: live latency, commands, hub ingest, node idle cost ==")
        fleet.main([])
    if "tui" in chosen:
        print("\n== tui: a tick at 200 machines / 2,000 profiles / 5,000 sessions, and memory ==")
        tui.main([])
    if "store" in chosen:
        print("\n== store: a hub restarted on 1,000,000 stored events, its report and memory ==")
        store.main([])
    if "outcomes" in chosen:
        print("\n== outcomes: fleet-hub report --by commit|branch|pr|repo vs --by day, 1M calls ==")
        outcomes.hub_main([])
    if "governor" in chosen:
        print("\n== governor: a budget's crossing log line to the agent stopped, and overshoot ==")
        governor.main([])
    if "detectors" in chosen:
        print("\n== detectors: a simulated 50-machine week, clean and with injected scenarios ==")
        detectors.main([])
    if "credit" in chosen:
        print("\n== credit: a Claude subscription's Agent SDK credit read from the store ==")
        credit.main([])


if __name__ == "__main__":
    main()
