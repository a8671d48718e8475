"""The hub's store at 1,000,000 events (about a month of a 20-machine fleet): how long a
restarted `fleet-hub serve` takes to ack a batch, how long `fleet-hub report` takes, the hub's
memory and the bytes each stored event costs.

    .venv/bin/python -m bench.store [--events N] [--rebuild]

The store is built once and cached under bench/.work/store/: 20 machines × 3 profiles (one a
subscription), Claude Code and Codex sessions of 50-400 calls over the 30 days before the
build, 1% of calls retracted and 0.5% of an unknown model. It goes in through `Store.ingest` in
batches of 20,000 (the store's own path: rows, prices, roll-ups), not as 1M node batches.

Each run copies the cached file, starts a real `fleet-hub serve` on it and takes the time from
the process start to the first ack of a 500-event batch (a node dials, sends, retries every
50 ms until the receiver answers); then the report's wall time as a fresh process (best of 3,
page cache warm; with serve running, `fleet-hub report` asks it through the API), the API's own
report endpoint (`GET /api/v1/report?by=day,machine` and `?by=machine`, p50/p99 of 30 requests on
one connection) and the live stream's `update` after a 10-event batch (p50/p99 of 30 batches:
from the node's send to the event at a client), and the serve process's resident and peak memory
(VmRSS, VmHWM).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pynng

from bench.api import p99, percentiles
from hub.api_client import api_url
from hub.config import HubConfig, load_hub_config
from hub.store import DB_FILE, Store
from hub.tokens import read_admin_token
from shared.codec import pack
from shared.config import Billing
from shared.events import Agent, Role, Tokens, UsageEvent
from shared.hello import NodeHello, ProfileInfo, hello_to_map
from shared.wire import batch_body, derive_node_key, seal
from tests.fleet_harness import ROOT, child_env, make_hub

WORK = ROOT / "bench" / ".work" / "store"
MACHINES = 20
DAYS = 30
BUILD_BATCH = 20_000
TARGETS = {"ack": 2.0, "report": 1.0, "memory": 150.0, "api_p99": 0.1}
API_REQUESTS = 30


def _profiles(machine: int) -> tuple[ProfileInfo, ...]:
    return (
        ProfileInfo("max-a", Agent.CLAUDE_CODE, Billing.SUBSCRIPTION, f"ops{machine}@ex.com"),
        ProfileInfo("api", Agent.CLAUDE_CODE, Billing.API, None),
        ProfileInfo("codex", Agent.CODEX, Billing.API, None),
    )


def _hello(node: str, machine: int) -> NodeHello:
    return NodeHello(node, "0.1.0", time.time() - 86400, "linux", 8, _profiles(machine))


def _sessions(rng: random.Random, total: int, end: float) -> Iterator[list[UsageEvent]]:
    """Sessions of calls, machine by machine, until `total` calls."""
    made = 0
    n = 0
    while made < total:
        machine = n % MACHINES
        n += 1
        node = f"spark{machine:02d}"
        profile = rng.choice(("max-a", "max-a", "api", "codex"))
        codex = profile == "codex"
        calls = min(rng.randrange(50, 400), total - made)
        start = end - rng.uniform(0, DAYS * 86400.0)
        session = f"{rng.getrandbits(128):032x}"
        project = f"/home/dev/repo-{rng.randrange(12)}"
        events = []
        for i in range(calls):
            ts = start + i * rng.uniform(5, 40)
            cached = rng.randrange(15_000, 150_000)
            model = "gpt-5-codex" if codex else "claude-sonnet-4-5"
            if rng.random() < 0.005:
                model = "mystery-model-9"
            sub = not codex and rng.random() < 0.2
            tokens = Tokens(
                input=rng.randrange(3, 3000),
                output=rng.randrange(60, 1400),
                cache_read=cached,
                cache_write_1h=0 if codex else rng.randrange(200, 4000),
                reasoning=rng.randrange(0, 800) if codex else 0,
            )
            events.append(
                UsageEvent(
                    event_id=f"{'codex' if codex else 'claude'}:{rng.getrandbits(96):024x}",
                    ts=ts,
                    agent=Agent.CODEX if codex else Agent.CLAUDE_CODE,
                    model=model,
                    tokens=tokens,
                    session_id=f"{session}-sub{i % 3}" if sub else session,
                    revision=2 * tokens.total + 1,
                    role=Role.SUBAGENT if sub else Role.MAIN,
                    parent_session_id=session if sub else None,
                    project=project,
                    git_branch="main",
                    agent_version="2.1.140",
                    duplicate_of="claude:earlier" if rng.random() < 0.01 else None,
                    machine=node,
                    profile=profile,
                    origin=f"/home/dev/.claude-{profile}/projects/-home-dev-repo/{session}.jsonl:{i}",
                )
            )
        made += calls
        yield events


def build(path: Path, total: int) -> None:
    """The cached store: `total` calls, ingested in batches of BUILD_BATCH."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for leftover in path.parent.glob(partial.name + "*"):
        leftover.unlink()
    rng = random.Random(12)
    end = time.time()
    began = time.perf_counter()
    with Store(partial) as store:
        for machine in range(MACHINES):
            node = f"spark{machine:02d}"
            store.ingest(node, "s1", 1, 0, [], _hello(node, machine), end)
        pending: dict[str, list[UsageEvent]] = {}
        seq = 0
        stored = 0

        def flush(node: str) -> None:
            nonlocal seq, stored
            events = pending.pop(node)
            seq += 1
            packed = [pack(e) for e in events]
            store.ingest(node, "s1", seq, seq, events, None, end, packed=packed)
            stored += len(events)
            if stored // 200_000 != (stored - len(events)) // 200_000:
                rate = stored / (time.perf_counter() - began)
                print(f"  built {stored:,} events ({rate:,.0f}/s)", flush=True)

        for session in _sessions(rng, total, end):
            node = session[0].machine
            pending.setdefault(node, []).extend(session)
            if len(pending[node]) >= BUILD_BATCH:
                flush(node)
        for node in list(pending):
            flush(node)
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # noqa: SLF001 (a closed, whole file)
    partial.rename(path)
    print(f"  built the store of {total:,} events in {time.perf_counter() - began:.0f} s")


def _sizes(path: Path) -> dict[str, int]:
    """Bytes per table and index, where SQLite has the dbstat table (else empty)."""
    import sqlite3

    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC")
        return {name: size for name, size in rows}
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def _status(pid: int, key: str) -> float:
    """A /proc/PID/status figure in MB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _fleet_hub() -> list[str]:
    return [str(Path(sys.executable).with_name("fleet-hub"))]


def _first_ack(url: str, frames: Sequence[bytes], began: float, timeout: float = 120.0) -> float:
    """Seconds from `began` to the hub's first ack of `frames` (sent in turn, retried)."""
    deadline = began + timeout
    while time.perf_counter() < deadline:
        # recv_timeout: an nng request whose wait times out is abandoned (a second recv is
        # BadState), so wait for the answer in one go; dialling is what is retried
        with pynng.Req0(send_timeout=200, recv_timeout=int(timeout * 1000)) as sock:
            try:
                sock.dial(url, block=True)
            except pynng.NNGException:
                time.sleep(0.05)
                continue
            for frame in frames:
                sock.send(frame)
                sock.recv()
            return time.perf_counter() - began
    raise TimeoutError(f"no ack within {timeout:.0f} s")


def _api_client(config: HubConfig, config_path: Path) -> httpx.Client:
    deadline = time.monotonic() + 30
    while (token := read_admin_token(config_path)) is None and time.monotonic() < deadline:
        time.sleep(0.1)  # serve writes it once the API listens
    if token is None:
        raise TimeoutError("serve wrote no admin.token in 30 s")
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=api_url(config), headers=headers, timeout=60)


def _api_reports(client: httpx.Client, by: str) -> list[float]:
    client.get("/api/v1/report", params={"by": by}).raise_for_status()  # warm
    samples = []
    for _ in range(API_REQUESTS):
        started = time.perf_counter()
        client.get("/api/v1/report", params={"by": by}).raise_for_status()
        samples.append(time.perf_counter() - started)
    return samples


def _stream_updates(client: httpx.Client, url: str, key: bytes, node: str) -> list[float]:
    """From a 10-event batch's send to the stream's `update` at a client, per batch."""
    samples = []
    rng = random.Random(7)
    with (
        client.stream("GET", "/api/v1/stream", timeout=None) as stream,
        pynng.Req0(recv_timeout=10_000) as sock,
    ):
        sock.dial(url, block=True)
        lines = stream.iter_lines()
        next(line for line in lines if line.startswith("event: hello"))
        for i in range(API_REQUESTS):
            batch = next(_sessions(rng, 10, time.time()))
            seq0 = 1 + i * len(batch)
            events = [pack(e) for e in batch]
            body = batch_body("bench-live", seq0, seq0 + len(batch) - 1, events)
            started = time.perf_counter()
            sock.send(seal(key, node, "batch", body))
            next(line for line in lines if line.startswith("event: update"))
            samples.append(time.perf_counter() - started)
            sock.recv()
    return samples


def measure(cache: Path, total: int) -> dict[str, Any]:
    run = WORK / "run"
    shutil.rmtree(run, ignore_errors=True)
    setup = make_hub(run)
    setup.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cache, setup.data_dir / DB_FILE)
    config = load_hub_config(setup.config)
    node = "spark00"
    key = derive_node_key(setup.secret, node)
    rng = random.Random(99)
    batch = next(_sessions(rng, 500, time.time()))
    hello = hello_to_map(_hello(node, 0))
    frames = [
        seal(key, node, "batch", batch_body("bench-s9", 1, 0, [], hello)),
        seal(key, node, "batch", batch_body("bench-s9", 1, len(batch), [pack(e) for e in batch])),
    ]
    env = child_env(run)
    began = time.perf_counter()
    serve = subprocess.Popen(
        [*_fleet_hub(), "serve", "--config", str(setup.config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ack = _first_ack(setup.events, frames, began)
        time.sleep(3.0)  # let anything the hub does after it listens show in its memory
        started_peak = _status(serve.pid, "VmHWM")
        reports = {}
        for by in ("machine", "day,machine", "day,machine,profile,model,project,session"):
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                subprocess.run(
                    [*_fleet_hub(), "report", "--config", str(setup.config), "--json", "--by", by],
                    env=env,
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                times.append(time.perf_counter() - t0)
            reports[by] = min(times)
        with _api_client(config, setup.config) as client:
            api = {by: _api_reports(client, by) for by in ("machine", "day,machine")}
            stream = _stream_updates(client, setup.events, key, node)
        rss, peak = _status(serve.pid, "VmRSS"), _status(serve.pid, "VmHWM")
    finally:
        serve.terminate()
        _, err = serve.communicate(timeout=30)
        if serve.returncode not in (0, -15):
            print(err.decode(errors="replace")[-2000:])
    size = cache.stat().st_size
    return {
        "ack": ack,
        "rss": rss,
        "started_peak": started_peak,
        "peak": peak,
        "reports": reports,
        "api": api,
        "stream": stream,
        "bytes": size,
        "per_event": size / total,
        "tables": _sizes(cache),
        "config": config,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.store", description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rebuild", action="store_true", help="build the cached store again")
    args = parser.parse_args(argv)
    cache = WORK / f"hub-{args.events}.db"
    if args.rebuild or not cache.exists():
        print(f"building a store of {args.events:,} events in {cache} (cached for later runs)")
        build(cache, args.events)
    figures = measure(cache, args.events)
    ok = {
        "ack": figures["ack"] < TARGETS["ack"],
        "report": figures["reports"]["day,machine"] < TARGETS["report"],
        "memory": figures["started_peak"] < TARGETS["memory"],
        "api": p99(figures["api"]["day,machine"]) < TARGETS["api_p99"],
    }

    def mark(good: bool) -> str:
        return "ok" if good else "MISSED"

    print(f"store: {args.events:,} events, {figures['bytes'] / 1e6:.0f} MB")
    whole = "the whole file: rows, indexes and roll-ups"
    print(f"  bytes per stored event: {figures['per_event']:.0f} ({whole})")
    for name, size in list(figures["tables"].items())[:8]:
        print(f"    {name:<28} {size / 1e6:7.1f} MB  {size / args.events:5.0f} B/event")
    print(f"  serve start -> first ack: {figures['ack']:.2f} s (target < 2 s) {mark(ok['ack'])}")
    for by, seconds in figures["reports"].items():
        print(f"  fleet-hub report --by {by}: {seconds:.2f} s (best of 3)")
    print(f"    target < 1 s for day,machine: {mark(ok['report'])}")
    for by, samples in figures["api"].items():
        print(f"  GET /api/v1/report?by={by}: {percentiles(samples)}")
    print(f"    target p99 < 100 ms for day,machine: {mark(ok['api'])}")
    print(f"  stream update after a 10-event batch: {percentiles(figures['stream'])}")
    print(
        f"  serve memory: peak {figures['started_peak']:.0f} MB once started and acking "
        f"(target < 150 MB) {mark(ok['memory'])}"
    )
    print(
        f"    after the reports above: {figures['rss']:.0f} MB resident, "
        f"{figures['peak']:.0f} MB peak (the session-level report streamed, 500 rows a piece)"
    )
    if os.environ.get("BENCH_STRICT") and not all(ok.values()):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
