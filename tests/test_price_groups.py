"""Solo Claude calls priced per group: a call whose kind (model, tier, speed, geo) and price
period are already known is classed by a range check and its long-context cliff instead of a
`terms_for` lookup. The report must equal the per-call lookup's to the cent and the token: rows
and their order, unknown models, and the SDK credit's per-hour sums and per-call records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node_agent import report as report_module
from node_agent.claude_tally import RowKeys
from node_agent.render import render_json
from node_agent.report import Query, Report
from node_agent.scan import Target
from node_agent.sources._claude_line import UsageLine
from pricing import CallBatch, PriceBook, PricedCall
from pricing.rollup import Rollup
from pricing.sdk_credit import CREDIT_SINCE
from shared.config import Billing, Profile
from shared.events import Agent, Tokens

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


# What fixes a call's terms apart from its counts and instant: each example draws a few kinds of
# one or two models, so that calls of one kind meet on both sides of price changes and cliffs,
# and kinds that differ only in tier, speed or geo meet too.
def _kinds(
    models: list[str],
) -> st.SearchStrategy[list[tuple[str, str | None, str | None, str | None]]]:
    kind = st.tuples(
        st.sampled_from(models),
        st.sampled_from([None, None, "standard", "batch", "priority", "mystery-tier"]),
        st.sampled_from([None, None, "fast"]),
        st.sampled_from([None, None, "us"]),
    )
    return st.lists(kind, min_size=1, max_size=4)


def _lines(anchor: float) -> st.SearchStrategy[list[UsageLine]]:
    models = st.lists(st.sampled_from(MODELS), min_size=1, max_size=2)
    return models.flatmap(_kinds).flatmap(lambda kinds: _lines_of(anchor, kinds))


def _lines_of(
    anchor: float, kinds: list[tuple[str, str | None, str | None, str | None]]
) -> st.SearchStrategy[list[UsageLine]]:
    # Near an anchor (down to the millisecond a period start is compared as a datetime) or
    # within two days of it, so that calls of one kind fall on both sides of a price change.
    offset = st.one_of(
        st.floats(-2 * 86_400, 2 * 86_400),
        st.sampled_from([0.0, -1e-3, 1e-3, -2e-3, 2e-3, -5e-4, 5e-4, -1e-6, 1e-6, -1.0, 1.0]),
    )
    line = st.builds(
        lambda n, off, kind, tokens, unsplit, entry, side: UsageLine(
            n,
            f"claude:m:{n}",
            f"m{n}",
            2,
            anchor + off,
            kind[0],
            tokens,
            f"s{n % 2}",
            side,
            None,
            "/w/a" if n % 3 else None,
            None,
            kind[1],
            kind[2],
            kind[3],
            unsplit,
            None,
            None,
            None,
            entry,
        ),  # fmt: skip
        st.integers(0, 10_000),
        offset,
        st.sampled_from(kinds),
        _tokens(),
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


def _per_call(lines: list[UsageLine], target: Target, query: Query) -> Report:
    """The reference: every call priced on its own, its terms looked up afresh (`terms_for`)."""
    report = Report(Rollup(query.by, query.tz))
    row_of = RowKeys(report.rollup, report_module._attribution(target, "node-1"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CallBatch, "_learn", lambda *_args: None)
        report_module._price_each(report, lines, row_of, target, query)
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
    _same(_priced(lines, target, query), _per_call(lines, target, query))


@settings(max_examples=400, deadline=None)
@given(
    ANCHORS.flatmap(lambda a: st.tuples(_lines(a), _query(a).map(lambda q: Query(q.by, q.tz)))),
    st.sampled_from([None, Billing.API]),
)
def test_calls_priced_by_their_summed_counts_price_as_one_by_one(
    lines_and_query: tuple[list[UsageLine], Query], billing: Billing | None
) -> None:
    """`_price_alike` (every call in a row, no credit drawn): per bucket of row and kind, the
    calls of one period and cliff summed before pricing. Equal to the per-call path, or it
    declines (some call has no price) with nothing added."""
    lines, query = lines_and_query
    target = _target(billing)
    alike = Report(Rollup(query.by, query.tz))
    row_of = RowKeys(alike.rollup, report_module._attribution(target, "node-1"))
    took = report_module._price_alike(alike, lines, row_of, target.billing)
    per_call = _per_call(lines, target, query)
    unknown = sum(row.unknown_calls for row in per_call.rollup.rows.values())
    assert took == (unknown == 0)
    if took:
        _same(alike, per_call)
    else:
        assert not alike.rollup.rows and not alike.unknown_models


def test_alike_calls_look_their_terms_up_once_per_bucket_and_cliff() -> None:
    """Calls of one row and kind in one period: one `terms_for` per cliff, and the sums."""
    book = PriceBook.default()
    batch = CallBatch[int](book)
    book._spans.clear()  # (shared by the book's batches: another test may have filled it)
    looked_up = 0
    real = book.terms_for

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal looked_up
        looked_up += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    start = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    stamps = [start + n * 60 for n in range(1_000)]
    counts = [(250_000 if n % 2 else 1_000, 10, 0, n % 3, 0, 0, 0) for n in range(1_000)]
    kind = ("claude-sonnet-4-5", None, None, None, None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(book, "terms_for", counting)
        assert batch.add_alike(7, kind, stamps, counts, Billing.API)
    assert looked_up == 2  # once per side of sonnet 4.5's 200k cliff
    settled = list(batch.settle())
    assert [(g, calls) for g, calls, _t, _p in settled] == [(7, 500), (7, 500)]
    assert sum((t for _g, _c, t, _p in settled), Tokens()) == Tokens(
        *map(sum, zip(*counts, strict=True))
    )


def test_the_span_memo_serves_most_calls_of_a_log() -> None:
    """Calls of one kind in one period after the first skip `terms_for` (else no gain)."""
    book = PriceBook.default()
    batch = CallBatch[int](book)
    book._spans.clear()  # (shared by the book's batches: another test may have filled it)
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


# An installed table may leave a gap with no price (`until` before the next `from`) and end
# its last period: calls there are unknown, never priced from a neighbouring period.
GAP_TABLE = """
schema = 1
provider = "gapco"
currency = "USD"
aliases = []

[[models]]
id = "gap-model"
name = "Gap Model"
sources = [{ name = "test", ref = "test", checked = 2026-01-01 }]

[[models.periods]]
from = 2026-01-01
until = 2026-02-01
[models.periods.rates]
input = "1"
output = "2"
reasoning = "2"
cache_read = "0.1"

[[models.periods]]
from = 2026-03-01
until = 2026-04-01
[models.periods.rates]
input = "3"
output = "4"
reasoning = "4"
cache_read = "0.3"
"""


def test_calls_in_a_gap_between_installed_periods_stay_unknown(tmp_path: Path) -> None:
    (tmp_path / "gap.toml").write_text(GAP_TABLE, encoding="utf-8")
    book = PriceBook.load(tmp_path)
    day = 86_400.0
    jan, feb, mar, apr = (datetime(2026, m, 1, tzinfo=UTC).timestamp() for m in (1, 2, 3, 4))
    instants = [jan + day, feb - day, feb + day, mar - 1e-3, mar + day, apr - day, apr + day]
    instants += [apr + 1e-3, feb, mar, jan + 10 * day]
    grouped = CallBatch[int](book)
    counts = (100, 10, 0, 0, 0, 0, 0)
    unknown: list[float] = []
    per_call = Decimal(0)
    for ts in instants:
        if grouped.add_counts(0, "gap-model", None, ts, counts, Billing.API) is not None:
            unknown.append(ts)
        expected = book.terms_for("gap-model", None, ts, counts)
        assert isinstance(expected, PricedCall) == (ts in unknown), ts
        if not isinstance(expected, PricedCall):
            per_call += expected.plan.amount(Tokens(*counts))
    assert unknown == [feb + day, mar - 1e-3, apr + day, apr + 1e-3, feb]
    settled = [priced.api_equivalent for _g, _c, _t, priced in grouped.settle()]
    # 3 January calls at $1 / $2 per million, 3 March ones at $3 / $4
    assert sum(a for a in settled if a is not None) == per_call == Decimal("0.00138")
