"""A call stamped far ahead (a node's clock years off, still within what the store keeps) and
report days at the calendar's edges: the API answers them, never with a 500 (found by an
outside review)."""

from __future__ import annotations

from pathlib import Path

import httpx
import msgspec

from tests.api_harness import call, little_fleet

IN_2096 = 4e9


def test_a_call_from_the_future_and_the_calendars_edges_are_answered(tmp_path: Path) -> None:
    with little_fleet(tmp_path) as served:
        ahead = msgspec.structs.replace(call("spark01", 99), event_id="claude:ahead", ts=IN_2096)
        served.send("spark01", [ahead])
        headers = served.headers("viewer")
        for path in (
            "/api/v1/runrate",
            "/api/v1/report?by=day,profile&since=1970-01-01&until=9999-12-31",
            "/api/v1/report?by=day&since=0001-01-01&until=9999-12-31&tz=Pacific/Kiritimati",
            "/api/v1/report?by=model&since=2096-01-01",
        ):
            got = httpx.get(served.url + path, headers=headers, timeout=30)
            assert got.status_code == 200, (path, got.text)
        everything = httpx.get(
            served.url + "/api/v1/report?by=model&since=1970-01-01&until=9999-12-31",
            headers=headers,
            timeout=30,
        ).json()
        assert everything["total"]["calls"] == 4  # the three of now and the one ahead
