"""The governor end to end: from the log line that crosses a budget to the agent's process
tree stopped (state T), p50 / p99, and the overshoot in dollars of a $500/h runaway.

A real `fleet-hub serve`, a real `node-agent run` at its default poll (0.5 s; new sessions
found at its 5 s rescan), and fake Claude agents in runaway mode (cache thrash, Haiku 4.5)
paced to spend `--rate` dollars an hour each. Each agent gets a budget on its own session
(API-equivalent, pause at the limit, the limit `--calls` typical calls away). The crossing
line is the last call the budget's 100 % mark counted (its log timestamp); the stop is when
every process of the agent's tree is seen stopped (polled every 5 ms). The overshoot is
the spend logged up to the stop minus the limit (negative: stopped before the limit, as the
headroom of one typical call intends).

Also what the governor adds to the hub's ingest: the service's whole path per event for
500-event batches from 20 machines, with no budget and with `--budgets` of mixed scopes and
periods (in process, a store on disk); and to a re-price of those calls under a corrected
table (Haiku 4.5 at twice its rates: every budget recounted in each re-pricing step), CPU
time per stored call, best of 3, no budget and `--budgets` alternating.

    python -m bench.governor [--agents 5] [--rounds 4] [--rate 500] [--calls 6] [--budgets 10]
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import httpx
import psutil

from hub._pricing import safe_price
from hub.budgets.governor import Governor
from hub.budgets.model import parse_budget
from hub.service import FleetService
from hub.store import Store
from node_agent.simulate.fake_agent import LaunchedAgent, launch
from pricing import Billing, PriceBook
from pricing.installed import install_table, overlay, read_installed
from shared.events import Agent, Event, Tokens, UsageEvent
from tests import fleet_harness as fleet
from tests.api_harness import ServedHub, serve_hub

NODE = "bench01"
MODEL = "claude-haiku-4-5"


def mean_call_cost() -> Decimal:
    """A runaway call of the fake agent at its mean token counts (1 h cache writes of
    60k-180k tokens, 200-2,000 out)."""
    event = UsageEvent(
        event_id="mean", ts=time.time(), agent=Agent.CLAUDE_CODE, model=MODEL, session_id="mean",
        tokens=Tokens(input=8, output=1100, cache_write_1h=120_000),
    )  # fmt: skip
    amount = safe_price(PriceBook.default(), event, Billing.API)[0].api_equivalent
    assert amount is not None
    return amount


def node_at_defaults(tmp: Path, served: ServedHub, home: Path) -> Path:
    config = fleet.write_node(
        tmp, NODE, served.setup, [fleet.ProfileSpec("api-a", Agent.CLAUDE_CODE, home)]
    )
    lines = config.read_text().splitlines()
    keep = [ln for ln in lines if not ln.startswith(("poll_interval", "rescan_interval"))]
    config.write_text("\n".join(keep) + "\n")
    return config


def watch_stop(agent: LaunchedAgent, stopped: dict[int, float], done: threading.Event) -> None:
    while not done.is_set():
        tree = agent.tree()
        statuses = set()
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                statuses.add(proc.status())
        if statuses == {psutil.STATUS_STOPPED}:
            stopped[agent.pid] = time.time()
            return
        time.sleep(0.005)


def crossing_line_ts(db: Path, budget: str, session: str) -> tuple[float, Decimal, Decimal]:
    """(log time of the call that crossed, the mark's limit, spend at quiescence)."""
    with sqlite3.connect(db, timeout=10) as con:
        spent, limit, after = con.execute(
            "SELECT spent, lim, spent_after FROM budget_marks WHERE budget = ? "
            "AND mark LIKE '100@%'",
            (budget,),
        ).fetchone()
        rows = con.execute(
            "SELECT ts, amount FROM usage WHERE session_id = ? ORDER BY ts", (session,)
        ).fetchall()
    total = Decimal(0)
    for ts, amount in rows:
        total += Decimal(amount)
        if total >= Decimal(spent):
            return float(ts), Decimal(limit), Decimal(after)
    raise AssertionError(f"{budget}: no call reaches the mark's spend {spent}")


def run_round(
    tmp: Path, served: ServedHub, home: Path, round_no: int, agents: int, pace: float,
    limit: Decimal,
) -> list[tuple[float, Decimal, Decimal]]:  # fmt: skip
    launched: list[LaunchedAgent] = []
    stopped: dict[int, float] = {}
    done = threading.Event()
    watchers = []
    try:
        for i in range(agents):
            agent = launch(
                Agent.CLAUDE_CODE, home, "--mode", "runaway", "--model", MODEL,
                "--pace", f"{pace:.3f}", "--children", "1", "--machine", NODE,
                "--profile", "api-a", "--session-seed", str(round_no * 100 + i),
                env=fleet.child_env(tmp),
            )  # fmt: skip
            launched.append(agent)
            reply = httpx.post(
                served.url + "/api/v1/budgets",
                headers=served.headers("operator"),
                json={"name": f"r{round_no}-a{i}", "scope": f"session={agent.session_id}",
                      "period": "day", "basis": "api", "limit": str(limit), "action": "pause",
                      "forecast_minutes": 0},
                timeout=10,
            )  # fmt: skip
            reply.raise_for_status()
            watcher = threading.Thread(target=watch_stop, args=(agent, stopped, done))
            watcher.start()
            watchers.append(watcher)
        fleet.wait_for(lambda: len(stopped) == agents, 180, "every agent stopped", every=0.2)
        time.sleep(1.0)  # let the calls logged before the stop reach the hub (the overshoot)
        db = served.setup.data_dir / "hub.db"
        out = []
        for i, agent in enumerate(launched):
            ts, lim, after = crossing_line_ts(db, f"r{round_no}-a{i}", agent.session_id)
            out.append((stopped[agent.pid] - ts, after - lim, lim))
        return out
    finally:
        done.set()
        for watcher in watchers:
            watcher.join()
        for agent in launched:
            agent.destroy()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ingest_cost(
    budgets: int, batches: int = 40, size: int = 500, reprice_runs: int = 0
) -> tuple[dict[int, float], dict[int, float]]:
    """Microseconds per event through `FleetService.ingest` with 0 and `budgets` budgets; and
    (with `reprice_runs`) CPU microseconds per stored call of a whole re-price, best of those
    runs, the two stores taking turns."""
    kinds = ["machine=m{i:02d}", "project=/src/p{i}", "session=s{i}", "model=claude-haiku-4-5"]
    periods = ["day", "hour", "5h", "session", "week"]
    table = [parse_budget({"name": "fleet", "scope": "fleet", "period": "month",
                           "basis": "api", "limit": "1000000"})]  # fmt: skip
    table += [
        parse_budget(
            {
                "name": f"b{i}",
                "scope": kinds[i % 4].format(i=i),
                "period": periods[i % 5],
                "basis": "api" if i % 2 else "paid",
                "limit": "1000",
                "action": "pause",
            }
        )  # fmt: skip
        for i in range(budgets - 1)
    ]
    out: dict[int, float] = {}
    repriced: dict[int, float] = {}
    book = PriceBook.default()
    kept: dict[int, tuple[Store, FleetService, Governor]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-governor-ingest-") as tmp_name:
        for n in (0, budgets):
            store = Store.in_dir(Path(tmp_name) / str(n))
            service = FleetService(store, book)
            service.wait_loaded()
            governor = Governor(store.path, service, table[:n])
            governor.attach(store)
            elapsed = 0.0
            for b in range(batches):
                node = f"m{b % 20:02d}"
                events: list[Event] = [
                    UsageEvent(
                        event_id=f"{n}:{b}:{k}",
                        ts=time.time(),
                        agent=Agent.CLAUDE_CODE,
                        model=MODEL,
                        session_id=f"s{k % 7}",
                        machine=node,
                        project=f"/src/p{k % 5}",
                        tokens=Tokens(input=100 + k, output=50),
                    )  # fmt: skip
                    for k in range(size)
                ]
                started = time.perf_counter()
                service.ingest(node, "s1", b * size + 1, (b + 1) * size, events)
                elapsed += time.perf_counter() - started
            kept[n] = (store, service, governor)
            out[n] = elapsed / (batches * size) * 1e6
        books = (_doubled(Path(tmp_name) / "prices"), book)
        for run in range(reprice_runs):
            for n in (0, budgets) if run % 2 == 0 else (budgets, 0):
                _, service, _ = kept[n]
                service.use_prices(books[run % 2])
                started = time.process_time()
                service.reprice(budget_s=1e9)
                spent = (time.process_time() - started) / (batches * size) * 1e6
                repriced[n] = min(repriced.get(n, spent), spent)
        for store, _, governor in kept.values():
            governor.close()
            store.close()
    return out, repriced


def _doubled(folder: Path) -> PriceBook:
    """The shipped tables with Haiku 4.5 at twice its rates (installed in `folder`)."""
    [haiku] = [m for m in PriceBook.default().models() if m.id == MODEL]
    rates = haiku.periods[-1].rates
    source = folder.parent / "haiku-twice.toml"
    lines = [
        'schema = 1\nprovider = "anthropic"\ncurrency = "USD"',
        "[[models]]",
        f'id = "{MODEL}"',
        'name = "Claude Haiku 4.5"',
        'sources = [{ name = "bench", ref = "bench.governor", checked = 2026-12-01 }]',
        "[[models.periods]]",
        "from = 2020-01-01",
        "[models.periods.rates]",
        *(
            f'{name} = "{getattr(rates, name) * 2}"'
            for name in (
                "input",
                "output",
                "reasoning",
                "cache_read",
                "cache_write_5m",
                "cache_write_1h",
            )
        ),
    ]
    source.write_text("\n".join(lines) + "\n")
    install_table(source, folder)
    return PriceBook(overlay(list(PriceBook.default().tables), read_installed(folder)))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.governor", description=__doc__)
    parser.add_argument("--agents", type=int, default=5, help="runaways at once (default 5)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    parser.add_argument("--rate", type=float, default=500.0, help="$/h per runaway")
    parser.add_argument("--calls", type=int, default=6, help="typical calls to the limit")
    parser.add_argument("--budgets", type=int, default=10, help="budgets for the ingest cost")
    args = parser.parse_args(argv)
    cost, repriced = ingest_cost(args.budgets, reprice_runs=6)
    print(
        f"ingest with the governor: {cost[0]:.1f} us/event with no budget, "
        f"{cost[args.budgets]:.1f} us/event with {args.budgets} (500-event batches)"
    )
    print(
        f"re-price of those 20,000 calls: {repriced[0]:.1f} CPU us/call with no budget, "
        f"{repriced[args.budgets]:.1f} with {args.budgets} (each recounted per 5,000-call step;"
        " best of 3)"
    )
    mean = mean_call_cost()
    pace = float(mean) * 3600 / args.rate
    limit = (mean * args.calls).quantize(Decimal("0.01"))
    print(
        f"runaways: {MODEL}, ~${mean:.3f} a call every {pace:.2f} s (${args.rate:.0f}/h), "
        f"budget ${limit} each, {args.agents} at once x {args.rounds} rounds; node at its "
        "default poll (0.5 s)"
    )
    with tempfile.TemporaryDirectory(prefix="bench-governor-") as tmp_name:
        tmp = Path(tmp_name)
        served = serve_hub(tmp)
        home = tmp / "homes" / "api-a"
        home.mkdir(parents=True)
        with fleet.processes() as started:
            started.append(served.proc)
            started.append(fleet.start_node(node_at_defaults(tmp, served, home), tmp))
            samples: list[tuple[float, Decimal, Decimal]] = []
            for round_no in range(args.rounds):
                samples += run_round(tmp, served, home, round_no, args.agents, pace, limit)
            fleet.stop(served.proc)
    latency = [s[0] for s in samples]
    overshoot = [s[1] for s in samples]
    print(
        f"crossing log line -> agent tree stopped: p50 {statistics.median(latency):.2f} s / "
        f"p99 {percentile(latency, 0.99):.2f} s / max {max(latency):.2f} s (n={len(latency)}; "
        "target p99 < 1.5 s)"
    )
    positive = [o for o in overshoot if o > 0]
    print(
        f"overshoot at ${args.rate:.0f}/h: max ${max(overshoot):.4f}, median "
        f"${statistics.median(overshoot):.4f} ({len(positive)} of {len(overshoot)} stops past "
        "the limit; negative = stopped before it; target < $0.25)"
    )


if __name__ == "__main__":
    main()
