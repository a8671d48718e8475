"""The API's report keeps past days' sums between reports (`hub.report.ReportCache`): after
any mix of new calls, late calls on kept days, revisions and retractions, a report through
the cache equals one read afresh from the roll-ups, for every grouping and time zone."""

from __future__ import annotations

import time
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.report import ReportCache, build_hub_report
from hub.store import Store
from tests.test_hub_rollup import usage

DAY = 86400.0
ZONES = (ZoneInfo("UTC"), ZoneInfo("Asia/Kolkata"))
GROUPINGS = (("machine",), ("day", "machine"), ("day", "model", "session"))

# (event id, days ago, hours ago, model, revision, retracted)
_steps = st.lists(
    st.tuples(
        st.sampled_from([f"e{i}" for i in range(12)]),
        st.integers(min_value=0, max_value=5),
        st.floats(min_value=0, max_value=23.9),
        st.sampled_from(["claude-sonnet-4-5", "claude-opus-4-1", "no-such-model"]),
        st.integers(min_value=0, max_value=3),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(_steps, min_size=1, max_size=5))
def test_a_cached_report_equals_one_read_afresh(
    tmp_path: Path, batches: list[list[tuple[str, int, float, str, int, bool]]]
) -> None:
    now = time.time()
    path = tmp_path / f"hub-{time.monotonic_ns()}.db"
    with Store(path) as store:
        cache = ReportCache(store.rollup_writes)
        for seq, batch in enumerate(batches, start=1):
            events = [
                usage(
                    event_id,
                    revision,
                    ts=now - days * DAY - hours * 3600,
                    model=model,
                    session_id=f"s{days}",
                    duplicate_of="e0" if retracted and event_id != "e0" else None,
                )
                for event_id, days, hours, model, revision, retracted in batch
            ]
            store.ingest("spark01", "events", seq, seq, events, None, now)
            for tz in ZONES:
                for by in GROUPINGS:
                    fresh = build_hub_report(store, by=by, tz=tz)
                    assert (
                        build_hub_report(
                            store, by=by, tz=tz, cache=(cache, store.rollup_writes.generation)
                        )
                        == fresh
                    )


def test_a_late_call_on_a_kept_day_is_read_again(tmp_path: Path) -> None:
    now = time.time()
    utc = ZoneInfo("UTC")
    with Store(tmp_path / "hub.db") as store:
        cache = ReportCache(store.rollup_writes)

        def calls() -> int:
            kept = (cache, store.rollup_writes.generation)
            rows = build_hub_report(store, by=("machine",), tz=utc, cache=kept)["rows"]
            return int(rows[0]["calls"])

        store.ingest("spark01", "events", 1, 1, [usage("a", ts=now - 3 * DAY)], None, now)
        assert calls() == 1
        # a node back from a long outage sends a call of three days ago
        store.ingest("spark01", "events", 2, 2, [usage("b", ts=now - 3 * DAY)], None, now)
        assert calls() == 2
