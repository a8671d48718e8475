"""A daemon hands its start-up memory back once (`node_agent.memory.settle`): every open outbox
(and no closed one) is told to empty its page cache, and keeps its rows and its work; the
start-up objects are frozen out of the cyclic collector. (What the page cache held is not
visible from Python: the idle bench shows the memory, ~2 MB.)"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node_agent import memory
from node_agent.outbox import Outbox
from shared.events import Agent, Role, Tokens, UsageEvent


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def calls(n: int) -> list[UsageEvent]:
    tokens = Tokens(input=3, output=100, cache_read=1000, cache_write_5m=0, cache_write_1h=0)
    return [
        UsageEvent(
            event_id=f"claude:msg_{i}:req_{i}",
            ts=time.time(),
            agent=Agent.CLAUDE_CODE,
            model="claude-sonnet-4-5",
            tokens=tokens,
            session_id="s1",
            revision=1,
            role=Role.MAIN,
        )
        for i in range(n)
    ]


def test_settle_empties_each_open_outbox_cache_and_keeps_its_rows(
    tmp_path: Path, unfrozen: None
) -> None:
    first, second = Outbox(tmp_path / "a.db"), Outbox(tmp_path / "b.db")
    closed = Outbox(tmp_path / "c.db")
    closed.close()
    try:
        assert {id(o) for o in Outbox.open_ones()} >= {id(first), id(second)}
        assert id(closed) not in {id(o) for o in Outbox.open_ones()}
        first.commit(calls(2000), {})
        before = first.pending()
        frozen = memory.settle()
        assert frozen > 1_000 and gc.get_freeze_count() == frozen
        assert first.pending() == before == 2000  # the rows stay; only the cache went
        first.commit(calls(1), {})  # and it keeps working
        assert first.pending() == 2000  # (the same id again: not a new row)
    finally:
        first.close()
        second.close()
