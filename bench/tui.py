"""The TUI at fleet scale: what a tick costs when a large fleet's traffic comes in, and what the
process weighs.

    .venv/bin/python -m bench.tui [--machines 200 --profiles 2000 --sessions 5000]
                                  [--calls 2000,10000] [--ticks 30] [--profile] [--heap]

A synthetic fleet (`tests.synthetic_fleet`: a real FleetService over a SQLite store on disk, the
real ledger and price book; 10 profiles and 25 agent sessions per machine, every session with a
live process in its machine's hello, and `--history` calls in the last hour) drives the real
`FleetApp` under `run_test(size=(200, 60))`. The app's own 0.25 s timer is switched off
(`BenchApp.tick` does nothing) so that only the bench ticks. Each measured tick:

1. ingests the traffic: `--calls` per second fleet-wide, spread over random sessions, one batch
   per machine with its hello (at 2,000 calls/s every machine reports about 10 calls a second).
   Not part of the tick (the hub's receiver thread does it), but its rate is shown;
2. (a) `dashboard.tick()`: the view model: what changed, and the rows it builds (new ones, then
   the longest waiting within its budget);
3. (b) `app.apply_frame(frame)`: cells written into the tables, the rows in view that were
   not built yet, re-sorting, the header, feed and (once a second) the spend-by table;
4. (c) render: `await pilot.pause()`: messages, layout, the compositor, and the bytes a real
   terminal would be sent (the headless driver skips them: `BenchApp._display` makes them).
   Its CPU time is what counts: the pause also sleeps at least 20 ms to see that the app is
   idle, which is not work.

Two cadences, each with the Machines tab in front (200 rows), then with the Sessions tab in
front (5,000 rows) sorted by tok/min, so that re-sorting counts too (the cursor stays on its
session, so the view follows that session as it moves):

- "1 s/tick": one whole second of traffic in each tick, as the issue asks (the target: under
  50 ms a tick). The app ticks four times a second, so this is four ticks' worth of changes;
- "4 ticks/s": a quarter second of traffic per tick, the app's own cadence.

Rows that changed out of view are built over the next ticks (see `hub.dashboard`): "waiting"
is how many such rows were not drawn yet after each tick (none of them is in view).

Memory: the process's RSS (psutil) before the fleet is built, once the fleet is loaded and the
app is up, and at the end; this process is the hub (store, ledger, session book) plus the TUI,
as `fleet-hub` runs it. `--heap` also traces the Python heap (tracemalloc; it slows every tick,
so the times of such a run are not the figures). `--profile` prints the cProfile of the ticks.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import pstats
import resource
import shutil
import statistics
import time
import tracemalloc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import RenderableType
from textual._compositor import CompositorUpdate
from textual.pilot import Pilot
from textual.screen import Screen

from hub.dashboard import Row, Table
from hub.service import FleetService
from hub.tui.app import FleetApp
from tests.synthetic_fleet import SyntheticFleet, build

WORK = Path(__file__).resolve().parent / ".work" / "tui"
SIZE = (200, 60)
TARGET_TICK = 0.050  # s
SORTED_BY = "tpm"  # the Sessions tab's sort column
SETTLE_TICKS = 3


class BenchApp(FleetApp):
    """The real app, ticked only by the bench, and paying for the terminal's bytes."""

    def __init__(self, service: FleetService) -> None:
        super().__init__(service)
        self.encoded = 0  # bytes of terminal output made since the last reset
        self.built = 0  # rows the view model built since the last reset
        build_rows = self.dashboard.rows

        def counted(table: Table, keys: Iterable[str]) -> tuple[dict[str, Row], set[str]]:
            rows, gone = build_rows(table, keys)
            self.built += len(rows) + len(gone)
            return rows, gone

        self.dashboard.rows = counted  # type: ignore[method-assign]

    def tick(self) -> None:
        """The app's timer calls this every 0.25 s: the bench ticks instead."""

    def _display(self, screen: Screen[Any], renderable: RenderableType | None) -> None:
        update: object = renderable  # a CompositorUpdate is no RenderableType to mypy
        if isinstance(update, CompositorUpdate):
            self.encoded += len(update.render_segments(self.console))
        super()._display(screen, renderable)


@dataclass
class Tick:
    ingest: float  # s
    calls: int
    view: float  # s: (a)
    apply: float  # s: (b)
    render: float  # CPU s: (c)
    cells: int  # written
    built: int  # rows built (view model and in view)
    waiting: int  # rows changed out of view, not built yet
    encoded: int  # bytes to the terminal

    @property
    def total(self) -> float:
        return self.view + self.apply + self.render


@dataclass
class Pass:
    label: str
    calls: int  # per tick
    ticks: list[Tick] = field(default_factory=list)

    def totals(self) -> list[float]:
        return [t.total for t in self.ticks]


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), -(-len(ordered) * q // 100)))
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


async def first_frame(app: BenchApp, pilot: Pilot[None]) -> Tick:
    """The app's first tick: every row is new."""
    await pilot.pause()
    return await one_tick(app, pilot, None, 0)


async def one_tick(
    app: BenchApp,
    pilot: Pilot[None],
    fleet: SyntheticFleet | None,
    calls: int,
    prof: cProfile.Profile | None = None,
) -> Tick:
    """Ingest `calls` calls (one batch per machine that has any), then tick and draw."""
    began = time.perf_counter()
    sent = fleet.second_of_updates(calls) if fleet is not None and calls else 0
    ingest = time.perf_counter() - began
    gc.collect()  # a collection the ingest made due should not land in the tick
    app.encoded = app.built = 0
    if prof is not None:
        prof.enable()
    t0 = time.perf_counter()
    frame = app.dashboard.tick()
    t1 = time.perf_counter()
    cells = app.apply_frame(frame)
    t2 = time.perf_counter()
    cpu = time.process_time()
    await pilot.pause()
    render = time.process_time() - cpu
    if prof is not None:
        prof.disable()
    waiting = sum(app.table(t).stale_rows for t in Table)
    return Tick(ingest, sent, t1 - t0, t2 - t1, render, cells, app.built, waiting, app.encoded)


async def idle_render(pilot: Pilot[None]) -> float:
    """CPU of a `pilot.pause()` when nothing changed: the floor under (c)."""
    cpu = []
    for _ in range(5):
        began = time.process_time()
        await pilot.pause()
        cpu.append(time.process_time() - began)
    return statistics.median(cpu)


def show_pass(p: Pass) -> None:
    ticks = p.ticks
    rate = sum(t.calls for t in ticks) / max(sum(t.ingest for t in ticks), 1e-9)
    print(f"\n{p.label}: {len(ticks)} ticks of {p.calls:,} calls")
    print(f"  ingest (the receiver thread's work, not in the tick): {rate:,.0f} calls/s")
    print(f"  {'ms per tick':<36} {'p50':>6} {'p95':>6} {'max':>6}")
    parts: list[tuple[str, list[float]]] = [
        ("(a) view model: dashboard.tick()", [t.view for t in ticks]),
        ("(b) apply_frame: cells into tables", [t.apply for t in ticks]),
        ("(c) render: CPU of pilot.pause()", [t.render for t in ticks]),
        ("total (a+b+c)", p.totals()),
    ]
    for name, values in parts:
        print(
            f"  {name:<36} {ms(pct(values, 50)):>6} {ms(pct(values, 95)):>6} {ms(max(values)):>6}"
        )
    over = sum(v >= TARGET_TICK for v in p.totals())
    print(
        f"  per tick (median): {statistics.median(t.built for t in ticks):,.0f} rows built, "
        f"{statistics.median(t.cells for t in ticks):,.0f} cells written, "
        f"{statistics.median(t.waiting for t in ticks):,.0f} rows waiting, "
        f"{statistics.median(t.encoded for t in ticks) / 1024:,.1f} KiB to the terminal; "
        f"{over} of {len(ticks)} ticks at or over {TARGET_TICK * 1000:.0f} ms"
    )


async def run(args: argparse.Namespace) -> None:
    machines = args.machines
    profiles = max(1, args.profiles // machines)
    sessions = max(1, args.sessions // machines)
    rates = [int(c) for c in args.calls.split(",") if c.strip()]
    if args.heap:
        tracemalloc.start()
    base = rss_mb()
    began = time.perf_counter()
    fleet = build(
        fresh(WORK / "data"),
        machines=machines,
        profiles_per_machine=profiles,
        sessions_per_machine=sessions,
        history_calls=args.history,
    )
    print(
        f"fleet: {machines} machines, {machines * profiles:,} profiles, "
        f"{machines * sessions:,} sessions (each with a live process), {args.history:,} calls "
        f"in the last hour; built in {time.perf_counter() - began:.1f} s; terminal "
        f"{SIZE[0]}x{SIZE[1]}; {psutil.cpu_count()} CPUs, load {psutil.getloadavg()[0]:.1f}"
    )
    app = BenchApp(fleet.service)
    prof = cProfile.Profile() if args.profile else None
    passes: list[Pass] = []
    async with app.run_test(size=SIZE) as pilot:
        first = await first_frame(app, pilot)
        for _ in range(SETTLE_TICKS):
            await one_tick(app, pilot, fleet, 0)
        up = rss_mb()
        heap = tracemalloc.get_traced_memory() if args.heap else None
        shown = ", ".join(f"{t.value} {app.table(t).row_count:,}" for t in Table)
        print(
            f"first frame, every row new ({shown}): view model {ms(first.view)} ms, "
            f"apply {ms(first.apply)} ms, render {ms(first.render)} ms CPU; an idle render "
            f"(nothing changed) costs {ms(await idle_render(pilot))} ms CPU"
        )
        for cadence, share in (("1 s/tick", 1.0), ("4 ticks/s", 0.25)):
            for rate in rates:
                calls = round(rate * share)
                for tab in ("machines", "sessions"):
                    app.action_tab(tab)
                    label = f"{cadence}, {rate:,} calls/s, {tab.capitalize()} tab"
                    if tab == "sessions":
                        app.table(Table.SESSIONS).sort_by(SORTED_BY, reverse=True)
                        label += f" sorted by {SORTED_BY}"
                    for _ in range(SETTLE_TICKS):
                        await one_tick(app, pilot, fleet, calls)
                    p = Pass(label, calls)
                    for _ in range(args.ticks):
                        p.ticks.append(await one_tick(app, pilot, fleet, calls, prof))
                    show_pass(p)
                    passes.append(p)
                    app.table(Table.SESSIONS).sort_column = None
    end = rss_mb()
    print(
        f"\nmemory: RSS {base:.0f} MB before the fleet, {up:.0f} MB with the fleet loaded and "
        f"the app up, {end:.0f} MB at the end (peak {peak_rss_mb():.0f} MB)"
    )
    if heap is not None:
        print(
            f"  Python heap (tracemalloc) with the app up: {heap[0] / 2**20:.0f} MB "
            f"(peak {heap[1] / 2**20:.0f} MB); the times above are slowed by the tracing"
        )
    print(f"\nsummary: ms per tick (a+b+c), target < {TARGET_TICK * 1000:.0f} ms at p95")
    width = max(len(p.label) for p in passes)
    print(f"  {'':<{width}}  {'p50':>6} {'p95':>6} {'max':>6}  met")
    for p in passes:
        totals = p.totals()
        met = "yes" if pct(totals, 95) < TARGET_TICK else "NO"
        print(
            f"  {p.label:<{width}}  {ms(pct(totals, 50)):>6} {ms(pct(totals, 95)):>6} "
            f"{ms(max(totals)):>6}  {met}"
        )
    if prof is not None:
        for order, lines in (("cumulative", 40), ("tottime", 30)):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(order).print_stats(lines)
            print(out.getvalue())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tui", description=__doc__.split("\n")[0])
    parser.add_argument("--machines", type=int, default=200)
    parser.add_argument("--profiles", type=int, default=2000, help="fleet-wide, split evenly")
    parser.add_argument("--sessions", type=int, default=5000, help="fleet-wide, split evenly")
    parser.add_argument(
        "--calls", default="2000,10000", help="fleet-wide calls per second, one pass each"
    )
    parser.add_argument("--ticks", type=int, default=30, help="measured ticks per pass")
    parser.add_argument("--history", type=int, default=50_000, help="calls in the last hour")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the ticks")
    parser.add_argument("--heap", action="store_true", help="trace the Python heap (slower)")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
