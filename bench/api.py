"""The hub's API under a stored fleet: p50/p99 of the report endpoint, and of the live
stream's update after a batch (from the batch's send to the `update` event at a client).

A real `fleet-hub serve` subprocess on loopback (tests.api_harness), seeded with
`--events` usage events from `--machines` nodes in signed batches of 500.

    python -m bench.api [--events 50000] [--machines 20] [--requests 30] [--batches 100]
"""

from __future__ import annotations

import argparse
import queue
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx

from tests.api_harness import ServedHub, call, serve_hub
from tests.fleet_harness import stop

BATCH = 500


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def percentiles(samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"p50 {statistics.median(ms):.1f} ms / p99 {p99(ms):.1f} ms (n={len(ms)})"


def seed(hub: ServedHub, events: int, machines: int) -> None:
    per_machine = events // machines
    for m in range(machines):
        node = f"spark{m:02d}"
        for start in range(0, per_machine, BATCH):
            hub.send(node, [call(node, n) for n in range(start, min(per_machine, start + BATCH))])


def time_reports(hub: ServedHub, by: str, requests: int) -> list[float]:
    samples = []
    with httpx.Client(base_url=hub.url, headers=hub.headers("viewer"), timeout=60) as client:
        client.get("/api/v1/report", params={"by": by}).raise_for_status()  # warm
        for _ in range(requests):
            started = time.perf_counter()
            client.get("/api/v1/report", params={"by": by}).raise_for_status()
            samples.append(time.perf_counter() - started)
    return samples


def time_stream(hub: ServedHub, batches: int) -> list[float]:
    updates: queue.Queue[float] = queue.Queue()
    ready = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET", hub.url + "/api/v1/stream", headers=hub.headers("viewer"), timeout=None
        ) as stream:
            for line in stream.iter_lines():  # ends when the hub stops
                if line == "event: hello":
                    ready.set()
                elif line.startswith("data: ") and '"usage":10' in line:
                    updates.put(time.perf_counter())

    threading.Thread(target=listen, daemon=True).start()
    ready.wait(30)
    samples = []
    for b in range(batches):
        started = time.perf_counter()
        hub.send("streamer", [call("streamer", b * 10 + n) for n in range(10)])
        samples.append(updates.get(timeout=30) - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--machines", type=int, default=20)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--batches", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fleetmeter-bench-api-") as tmp:
        hub = serve_hub(Path(tmp))
        try:
            started = time.perf_counter()
            seed(hub, args.events, args.machines)
            took = time.perf_counter() - started
            print(f"seeded {args.events:,} events from {args.machines} nodes in {took:.1f} s")
            for by in ("machine", "day,machine"):
                samples = time_reports(hub, by, args.requests)
                print(f"GET /api/v1/report?by={by}: {percentiles(samples)}")
            samples = time_stream(hub, args.batches)
            print(f"stream update after a 10-event batch: {percentiles(samples)}")
        finally:
            stop(hub.proc)


if __name__ == "__main__":
    main()
