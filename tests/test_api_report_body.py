"""The report endpoint's body is encoded a few hundred rows at a time (`hub.api.json_body`), so
a session-level report is never held whole: its bytes stay exactly those of `orjson.dumps` of
the whole report, through a real `fleet-hub serve` as in the encoder alone."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.api.json_body import TRIM_AFTER_ROWS, json_pieces
from hub.report import build_hub_report
from hub.store import DB_FILE, Store
from shared.events import Agent, Tokens, UsageEvent
from tests.api_harness import ServedHub, serve_hub
from tests.fleet_harness import stop

SESSIONS = 2_600  # past json_body.TRIM_AFTER_ROWS, and several pieces of ROWS_PER_PIECE

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    head=st.dictionaries(st.text(max_size=6), _json, max_size=4),
    rows=st.lists(_json, max_size=30),
    per_piece=st.integers(min_value=1, max_value=7),
)
def test_pieces_join_to_the_whole_body(
    head: dict[str, Any], rows: list[Any], per_piece: int
) -> None:
    whole = {**head, "rows": rows}
    lazy = {**head, "rows": iter(rows)}
    assert b"".join(json_pieces(lazy, per_piece)) == orjson.dumps(whole)


def test_an_empty_body_is_an_empty_object() -> None:
    assert b"".join(json_pieces({})) == b"{}"


def _calls(first: int, n: int) -> list[UsageEvent]:
    now = time.time()
    return [
        UsageEvent(
            event_id=f"claude:msg_{i}:req_{i}",
            ts=now - (i % 3) * 86400,
            agent=Agent.CLAUDE_CODE,
            model="claude-sonnet-4-5" if i % 7 else "mystery-model-9",
            tokens=Tokens(input=100 + i, output=50, cache_read=1000 + i),
            session_id=f"sess-{i:05d}",
            machine="spark01",
            project=f"/src/app{i % 4}",
        )
        for i in range(first, first + n)
    ]


@pytest.fixture(scope="module")
def busy_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedHub]:
    served = serve_hub(tmp_path_factory.mktemp("report-body"))
    try:
        for first in range(0, SESSIONS, 500):
            served.send("spark01", _calls(first, min(500, SESSIONS - first)))
        yield served
    finally:
        stop(served.proc)


@pytest.mark.parametrize("by", ["session", "day,machine,project,session", "day,machine"])
def test_served_report_is_byte_for_byte_the_whole_report(busy_hub: ServedHub, by: str) -> None:
    answer = httpx.get(
        f"{busy_hub.url}/api/v1/report",
        params={"by": by},
        headers=busy_hub.headers("viewer"),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    with Store(Path(busy_hub.setup.data_dir) / DB_FILE) as store:
        whole = build_hub_report(store, by=by.split(","), tz=ZoneInfo("UTC"))
    assert answer.content == orjson.dumps(whole)
    if "session" in by:
        assert len(whole["rows"]) >= SESSIONS


def _full_collections() -> int:
    return int(gc.get_stats()[2]["collections"])


def test_a_long_body_ends_with_a_full_collection_a_short_one_does_not() -> None:
    # the collection a long answer's garbage calls for is paid at its end, not by a later
    # short request (it was the report endpoint's p99)
    gc.disable()  # no collection but the encoder's own meanwhile (gc.collect still runs)
    try:
        for rows, collections in ((TRIM_AFTER_ROWS, 1), (TRIM_AFTER_ROWS - 1, 0)):
            before = _full_collections()
            b"".join(json_pieces({"rows": iter([{"n": n} for n in range(rows)])}))
            assert _full_collections() == before + collections
    finally:
        gc.enable()
