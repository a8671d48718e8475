"""The dashboard attached to a hub: how long connecting takes (the snapshot), how long a batch
takes from the hub's ack to the attached dashboard's figures (the stream's update, then the
mirror's fetches), and how many requests each batch costs it.

A real `fleet-hub serve` subprocess on loopback (tests.api_harness), seeded with `--machines`
nodes of `--sessions` sessions each; then `--batches` batches of 10 calls in 10 sessions of
one machine, one at a time, each waited for in a `RemoteFleet`.

    python -m bench.attached [--machines 20] [--sessions 25] [--batches 50]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import msgspec

from bench.api import percentiles
from hub.ledger import Period
from hub.remote import RemoteFleet
from hub.service import Update
from tests.api_harness import ServedHub, call, serve_hub
from tests.fleet_harness import stop


def seed(hub: ServedHub, machines: int, sessions: int) -> int:
    sent = 0
    for m in range(machines):
        node = f"spark{m:02d}"
        calls = [
            msgspec.structs.replace(call(node, n), session_id=f"{node}-s{n % sessions}")
            for n in range(sessions * 2)
        ]
        hub.send(node, calls)
        sent += len(calls)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--sessions", type=int, default=25, help="per machine")
    parser.add_argument("--batches", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-attached-") as tmp:
        hub = serve_hub(Path(tmp))
        try:
            calls = seed(hub, args.machines, args.sessions)
            asked: Counter[str] = Counter()

            def count(request: httpx.Request) -> None:
                asked[request.url.path] += 1

            started = time.perf_counter()
            remote = RemoteFleet(hub.url, hub.tokens["viewer"], event_hooks={"request": [count]})
            remote.start()
            connect = time.perf_counter() - started
            told = threading.Event()

            def note(_: Update) -> None:
                told.set()

            remote.subscribe(note)
            rng = random.Random(7)
            samples = []
            before = asked.copy()
            for b in range(args.batches):
                node = f"spark{rng.randrange(args.machines):02d}"
                batch = [
                    msgspec.structs.replace(
                        call(node, 10_000 + b * 10 + i), session_id=f"{node}-s{i}"
                    )
                    for i in range(10)
                ]
                calls += len(batch)
                hub.send(node, batch)  # returns once the hub committed it
                acked = time.perf_counter()
                while remote.fleet(Period.TODAY).calls < calls:
                    told.wait(10)
                    told.clear()
                samples.append(time.perf_counter() - acked)
            per_batch = {
                path.removeprefix("/api/v1/"): n / args.batches
                for path, n in sorted((asked - before).items())
            }
            remote.close()
        finally:
            stop(hub.proc)
    print(
        f"attached to a hub of {args.machines} machines, {args.machines * args.sessions} "
        f"sessions: connected (token check + snapshot) in {connect * 1000:.0f} ms"
    )
    print(f"batch acked → attached dashboard's figures: {percentiles(samples)}")
    print("requests per batch: " + ", ".join(f"{p} {n:.2f}" for p, n in per_batch.items()))


if __name__ == "__main__":
    main()
