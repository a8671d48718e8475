"""Helpers for the budget tests and bench: batches with a chosen hello sent to a real hub,
exact prices of calls, and budgets read back through the API."""

from __future__ import annotations

import dataclasses
import itertools
import signal
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pynng

from hub._pricing import safe_price
from pricing import Billing, PriceBook
from shared.codec import pack
from shared.events import Agent, Event, Tokens, UsageEvent
from shared.hello import NodeHello, ProcessInfo, ProfileInfo, hello_to_map
from shared.wire import batch_body, seal
from tests.api_harness import ServedHub, node_hello
from tests.fleet_harness import HubSetup, start_hub, stop, wait_for

_SEQ = itertools.count(1)
_BOOK: PriceBook | None = None


def api_price(event: UsageEvent) -> Decimal:
    """The call's exact API-equivalent price, as the hub prices it."""
    global _BOOK
    if _BOOK is None:
        _BOOK = PriceBook.default()
    amount = safe_price(_BOOK, event, Billing.API)[0].api_equivalent
    assert amount is not None
    return amount


def usage(
    node: str,
    n: int,
    *,
    session: str = "s1",
    profile: str | None = "api-a",
    project: str | None = "/src/app",
    model: str = "claude-sonnet-4-5",
    agent: Agent = Agent.CLAUDE_CODE,
    ts: float | None = None,
    entrypoint: str | None = "cli",  # interactive, as a terminal's Claude Code logs it
) -> UsageEvent:
    return UsageEvent(
        event_id=f"claude:{node}:{session}:msg_{n}",
        ts=time.time() if ts is None else ts,
        agent=agent,
        model=model,
        tokens=Tokens(input=1000 + n, output=500, cache_read=2000),
        session_id=session,
        machine=node,
        profile=profile,
        project=project,
        entrypoint=entrypoint,
    )


def hello(
    node: str,
    profiles: tuple[ProfileInfo, ...] = (),
    processes: tuple[ProcessInfo, ...] = (),
) -> NodeHello:
    return dataclasses.replace(node_hello(node), profiles=profiles, processes=processes)


def send(setup: HubSetup, node: str, events: list[Event], greeting: NodeHello | None) -> None:
    """One signed batch, acked after the hub committed it (and the governor judged it)."""
    seq0 = next(_SEQ) * 1000
    seq1 = seq0 + len(events) - 1
    body = batch_body(
        "s1",
        seq0,
        seq1,
        [pack(e) for e in events],
        None if greeting is None else hello_to_map(greeting),
    )
    with pynng.Req0(recv_timeout=10_000, send_timeout=5000) as sock:
        sock.dial(setup.events, block=True)
        sock.send(seal(setup.key(node), node, "batch", body))
        sock.recv()


def budgets(served: ServedHub, role: str = "viewer") -> dict[str, dict[str, Any]]:
    reply = httpx.get(served.url + "/api/v1/budgets", headers=served.headers(role), timeout=10)
    assert reply.status_code == 200, reply.text
    return {row["name"]: row for row in reply.json()["budgets"]}


def add_budget(served: ServedHub, **table: object) -> httpx.Response:
    return httpx.post(
        served.url + "/api/v1/budgets", json=table, headers=served.headers("operator"), timeout=10
    )


def restart(served: ServedHub, tmp: Path, sig: int = signal.SIGTERM) -> subprocess.Popen[bytes]:
    """Stop the served hub with `sig` and start it again on the same config and store; waits
    until the new one's API answers."""
    stop(served.proc, sig)
    log = served.setup.config.parent / "hub.log"
    log.rename(log.with_name(f"hub.log.{time.time_ns()}"))  # the new start's line is awaited
    served.proc = start_hub(served.setup, tmp)

    def answers() -> bool:
        try:
            return httpx.get(served.url + "/api/v1/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(answers, 30, "the restarted hub's API")
    return served.proc
