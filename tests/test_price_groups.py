"""Solo Claude calls priced per group: a call whose kind (model, tier, speed, geo) and price
period are already known is classed by a range check and its long-context cliff instead of a
`terms_for` lookup. The report must equal the per-call lookup's to the cent and the token: rows
and their order, unknown models, and the SDK credit's per-hour sums and per-call records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent import report as report_module
from node_agent.render import render_json
from node_agent.report import Query, Report
from node_agent.scan import Target
from node_agent.sources._claude_line import UsageLine
from pricing import CallBatch, PriceBook
from pricing.rollup import Rollup
from pricing.sdk_credit import CREDIT_SINCE
from shared.config import Billing, Profile
from shared.events import Agent

# Models with price changes (their period starts are anchors), long-context cliffs, a dated
# alias, a name with no price, and one priced only from a later date.
MODELS = [
    "claude-sonnet-4-5",
    "claude-sonnet-4-5-20250929",
    "claude-opus-4-6",
    "deepseek-chat",
    "deepseek-v4-pro",
    "gpt-5.5",
    "mystery-model",
]
ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]
KEYS = ["day", "week", "month", "model", "agent", "profile", "account", "machine", "project",
        "session", "role"]  # fmt: skip


def _period_starts() -> list[float]:
    book = PriceBook.default()
    starts = []
    for model in MODELS:
        entry = book._resolve(model, None).entry
        if entry is not None:
            starts += [p.start.timestamp() for p in entry.periods]
    return sorted(set(starts))


STARTS = _period_starts()
ANCHORS = st.one_of(
    st.floats(1.7e9, 1.8e9),
    st.sampled_from([*STARTS, CREDIT_SINCE]),
)
# The prompt (input + cache read + writes) below, at and above the 200k and 272k cliffs.
PROMPT_INPUT = st.one_of(
    st.integers(0, 5_000),
    st.integers(199_990, 200_010),
    st.integers(271_990, 272_010),
)


def _tokens() -> st.SearchStrategy[tuple[int, int, int, int, int, int, int]]:
    small = st.integers(0, 3)
    return st.tuples(
        PROMPT_INPUT,
        st.integers(0, 20_000),
        small,
        st.one_of(small, st.just(-1)),  # an impossible count: unknown, never $0
        small,
        st.integers(0, 100),
        st.sampled_from([0, 0, 0, 2]),
    )


def _lines(anchor: float) -> st.SearchStrategy[list[UsageLine]]:
    # Near an anchor (down to the millisecond a period start is compared as a datetime) or
    # within two days of it, so that calls of one kind fall on both sides of a price change.
    offset = st.one_of(
        st.floats(-2 * 86_400, 2 * 86_400),
        st.sampled_from([0.0, -1e-3, 1e-3, -2e-3, 2e-3, -5e-4, 5e-4, -1e-6, 1e-6, -1.0, 1.0]),
    )
    line = st.builds(
        lambda n, off, model, tokens, tier, speed, geo, unsplit, entry, side: UsageLine(
            n,
            f"claude:m:{n}",
            f"m{n}",
            2,
            anchor + off,
            model,
            tokens,
            f"s{n % 2}",
            side,
            None,
            "/w/a" if n % 3 else None,
            None,
            tier,
            speed,
            geo,
            unsplit,
            None,
            None,
            None,
            entry,
        ),  # fmt: skip
        st.integers(0, 10_000),
        offset,
        st.sampled_from(MODELS),
        _tokens(),
        st.sampled_from([None, None, "standard", "batch", "priority", "mystery-tier"]),
        st.sampled_from([None, None, "fast"]),
        st.sampled_from([None, None, "us"]),
        st.booleans(),
        st.sampled_from([None, "cli", "sdk-py", "sdk-ts", "claude-vscode"]),
        st.booleans(),
    )
    return st.lists(line, min_size=1, max_size=60)


def _query(anchor: float) -> st.SearchStrategy[Query]:
    day = datetime.fromtimestamp(anchor, UTC).date()
    bound = st.one_of(st.none(), st.integers(-2, 2).map(lambda d: day + timedelta(days=d)))
    return st.builds(
        lambda by, zone, since, until: Query(tuple(by), ZoneInfo(zone), since, until),
        st.lists(st.sampled_from(KEYS), min_size=1, max_size=4, unique=True),
        st.sampled_from(ZONES),
        bound,
        bound,
    )


def _target(billing: Billing | None) -> Target:
    home = Path("/home/u/.claude")
    if billing is None:
        return Target(home, Agent.CLAUDE_CODE)
    profile = Profile(name="work", agent=Agent.CLAUDE_CODE, home=home, account="a@x",
                      billing=billing)  # fmt: skip
    return Target(home, Agent.CLAUDE_CODE, profile)


def _priced(lines: list[UsageLine], target: Target, query: Query) -> Report:
    report = Report(Rollup(query.by, query.tz))
    report_module._price_lines(report, lines, target, "node-1", query)
    return report


def _same(grouped: Report, per_call: Report) -> None:
    assert render_json(grouped) == render_json(per_call)
    assert list(grouped.rollup.rows.items()) == list(per_call.rollup.rows.items())
    assert list(grouped.unknown_models.items()) == list(per_call.unknown_models.items())
    assert grouped.credit_calls == per_call.credit_calls
    assert grouped.credit_sums == per_call.credit_sums


@settings(max_examples=400, deadline=None)
@given(
    ANCHORS.flatmap(lambda a: st.tuples(_lines(a), _query(a))),
    st.sampled_from([None, Billing.API, Billing.SUBSCRIPTION]),
)
def test_calls_classed_by_their_period_span_price_as_the_per_call_lookup(
    lines_and_query: tuple[list[UsageLine], Query], billing: Billing | None
) -> None:
    lines, query = lines_and_query
    target = _target(billing)
    grouped = _priced(lines, target, query)
    with pytest.MonkeyPatch.context() as patch:
        # The per-call path: every call's terms looked up afresh (`terms_for`).
        patch.setattr(CallBatch, "_learn", lambda *_args: None)
        per_call = _priced(lines, target, query)
    _same(grouped, per_call)


def test_the_span_memo_serves_most_calls_of_a_log() -> None:
    """Calls of one kind in one period after the first skip `terms_for` (else no gain)."""
    book = PriceBook.default()
    batch = CallBatch[int](book)
    looked_up = 0
    real = book.terms_for

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal looked_up
        looked_up += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(book, "terms_for", counting)
        start = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
        for n in range(1_000):
            prompt = 250_000 if n % 2 else 1_000  # both sides of sonnet 4.5's 200k cliff
            batch.add_counts(n % 5, "claude-sonnet-4-5", None, start + n * 60,
                             (prompt, 10, 0, 0, 0, 0, 0), Billing.API)  # fmt: skip
    assert looked_up == 2  # once per cliff
    assert sum(calls for _g, calls, _t, _p in batch.settle()) == 1_000


def test_a_span_never_reaches_across_a_price_change() -> None:
    book = PriceBook.default()
    entry = book._resolve("claude-sonnet-4-5", None).entry
    assert entry is not None and len(entry.periods) > 1
    for period in entry.periods[1:]:
        change = period.start.timestamp()
        before = book.span_at("claude-sonnet-4-5", None, change - 3600)
        after = book.span_at("claude-sonnet-4-5", None, change + 3600)
        assert before is not None and after is not None
        assert before[1] < change - 1e-3 and after[0] > change + 1e-3
        assert after[2] is period and before[2] is not period
    assert book.span_at("mystery-model", None, 1.75e9) is None
    assert book.span_at("claude-sonnet-4-5", None, float("nan")) is None
    first = entry.periods[0].start.timestamp()
    assert book.span_at("claude-sonnet-4-5", None, first - 86_400) is None  # before any price
