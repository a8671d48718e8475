"""`CallBatch`: calls priced per group as sums of their counts equal the same calls priced one by
one, to the last digit and per cost class, whatever mix of models, tiers, cliffs, modifiers and
billing a group holds."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

import pricing
from pricing import Billing, CallBatch, CostClass, PriceBook, PricedCall
from pricing._classes import classify
from pricing._engine import quote
from shared.events import Agent, Tokens, UsageEvent
from tests.test_pricing_engine import APR_2026, MAY_2026, OCT_2025

# (model, instant, service tier, speed, geo): plain calls, cliffs, tiers with multipliers and
# with explicit rates, unknown tiers, fast mode, geography, a model without cache-write rates,
# a name several providers list, and models with no price.
SHAPES: list[tuple[str, float, str | None, str | None, str | None]] = [
    ("claude-sonnet-4-5-20250929", OCT_2025, None, None, None),
    ("claude-sonnet-4-5-20250929", OCT_2025, "batch", None, None),
    ("claude-sonnet-4-5", OCT_2025, None, "fast", None),
    ("claude-sonnet-4-5", OCT_2025, None, None, "us"),
    ("claude-opus-4-6", APR_2026, None, "fast", "us"),
    ("claude-opus-4-6", APR_2026, "mystery-tier", None, None),
    ("gpt-5", OCT_2025, None, None, None),
    ("gpt-5", OCT_2025, "flex", None, None),
    ("gpt-5.5", MAY_2026, "priority", None, None),
    ("gpt-5.5", MAY_2026, "fast", None, None),
    ("gemini-2.5-pro", OCT_2025, None, None, None),
    ("qwen3-max", OCT_2025, None, None, None),
    ("glm-4.6", OCT_2025, None, None, None),
    ("no-such-model-7", OCT_2025, None, None, None),
]


def random_tokens(rng: random.Random) -> Tokens:
    big = rng.random() < 0.3  # past 200k / 272k: the whole request at long-context rates
    return Tokens(
        input=rng.randrange(0, 300_000 if big else 5_000),
        output=rng.randrange(0, 20_000),
        cache_read=rng.randrange(0, 150_000),
        cache_write_5m=rng.choice([0, rng.randrange(0, 40_000)]),
        cache_write_1h=rng.choice([0, rng.randrange(0, 40_000)]),
        reasoning=rng.choice([0, rng.randrange(0, 8_000)]),
        web_search_requests=rng.choice([0, 0, 0, rng.randrange(1, 5)]),
    )


def random_events(seed: int, n: int) -> list[tuple[int, UsageEvent, Billing]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        model, ts, tier, speed, geo = rng.choice(SHAPES)
        event = UsageEvent(
            event_id=f"e{i}",
            ts=ts + rng.randrange(0, 86_400 * 20),
            agent=Agent.CLAUDE_CODE,
            model=model,
            tokens=random_tokens(rng),
            session_id="s",
            service_tier=tier,
            speed=speed,
            inference_geo=geo,
            cache_write_unsplit=rng.random() < 0.2,
        )
        out.append((rng.randrange(3), event, rng.choice([Billing.API, Billing.SUBSCRIPTION])))
    return out


def uncached_price(book: PriceBook, event: UsageEvent, billing: Billing) -> PricedCall:
    """The engine's figure for one call, worked out afresh (no shared terms)."""
    period = book.lookup(event.model, datetime.fromtimestamp(event.ts, UTC))
    if period is None:
        return book.price(event, billing)
    q = quote(
        period,
        event.tokens,
        service_tier=event.service_tier,
        speed=event.speed,
        inference_geo=event.inference_geo,
        cache_write_unsplit=event.cache_write_unsplit,
    )
    cls = classify(priced=True, estimated=q.estimated, billing=billing)
    return PricedCall(q.amount, cls, period.model_id, q.estimated, q.notes)


def by_group_and_class(
    items: list[tuple[int, int, Tokens, PricedCall]],
) -> tuple[dict[tuple[int, CostClass], Decimal], Counter[tuple[int, CostClass]], dict[int, Tokens]]:
    money: dict[tuple[int, CostClass], Decimal] = {}
    calls: Counter[tuple[int, CostClass]] = Counter()
    tokens: dict[int, Tokens] = {}
    for group, n, toks, priced in items:
        key = (group, priced.cost_class)
        calls[key] += n
        tokens[group] = tokens.get(group, Tokens()) + toks
        if priced.api_equivalent is not None:
            money[key] = money.get(key, Decimal(0)) + priced.api_equivalent
    return money, calls, tokens


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batch_sums_equal_one_by_one_prices(seed: int) -> None:
    book = PriceBook.default()
    events = random_events(seed, 600)
    one_by_one = [(g, 1, e.tokens, uncached_price(book, e, billing)) for g, e, billing in events]

    batch = CallBatch[int](book)
    settled: list[tuple[int, int, Tokens, PricedCall]] = []
    for g, e, billing in events:
        unknown = batch.add(g, e, billing)
        if unknown is not None:
            settled.append((g, 1, e.tokens, unknown))
    settled.extend(batch.settle())

    expected = by_group_and_class(one_by_one)
    assert by_group_and_class(settled) == expected
    # The mix really exercised every class, so the equality says something about each.
    classes = {cls for _, cls in expected[1]}
    assert classes == set(CostClass)
    assert len(settled) < len(one_by_one) / 2  # and it priced fewer sums than calls


def test_settle_empties_the_batch() -> None:
    batch = CallBatch[str](PriceBook.default())
    for _, event, billing in random_events(9, 20):
        batch.add("row", event, billing)
    assert list(batch.settle())
    assert list(batch.settle()) == []


def test_terms_are_shared_by_calls_that_differ_only_in_counts() -> None:
    book = PriceBook.default()
    events = [e for _, e, _ in random_events(4, 200) if e.model == "gpt-5" and not e.service_tier]
    below = [e for e in events if e.tokens.prompt <= 272_000]
    assert len(below) > 2
    assert len({id(book.terms(e)) for e in below}) == 1


def test_terms_stay_bounded_whatever_tier_names_a_log_holds() -> None:
    book = PriceBook.load(Path(pricing.__file__).parent / "tables")  # its own cache
    for i in range(5_000):
        call = UsageEvent(
            event_id=f"e{i}",
            ts=OCT_2025,
            agent=Agent.CLAUDE_CODE,
            model="claude-sonnet-4-5",
            tokens=Tokens(input=10),
            session_id="s",
            service_tier=f"garbage-{i}",
        )
        assert book.price(call).estimated
    assert len(book._terms) <= 4096


def test_the_quick_quote_equals_the_full_one() -> None:
    book = PriceBook.default()
    for _, event, _ in random_events(11, 400):
        terms = book.terms(event)
        if isinstance(terms, PricedCall):
            continue
        quick = terms.plan.quote(event.tokens, event.cache_write_unsplit)
        full = terms.plan._full_quote(event.tokens, event.cache_write_unsplit)
        assert quick == full


def _period_by_datetime(book: PriceBook, model: str, ts: float) -> object:
    """The period `entry.at` gives for `ts` through a datetime, as every call once did."""
    entry = book._resolve(model, None).entry
    assert entry is not None
    try:
        return entry.at(datetime.fromtimestamp(ts, UTC))
    except (OverflowError, OSError, ValueError):
        return "invalid"


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "deepseek-chat", "deepseek-v4-pro"])
def test_a_period_found_by_epoch_seconds_is_the_one_its_datetime_finds(model: str) -> None:
    """At, just before and just after every period start, down to the microsecond that a
    datetime rounds to, and at instants no datetime holds."""
    book = PriceBook.default()
    entry = book._resolve(model, None).entry
    assert entry is not None and len(entry.periods) > 1
    instants = [float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 0.0]
    for period in entry.periods:
        start = period.start.timestamp()
        for delta in (0.0, 4e-7, 6e-7, 1e-6, 5e-4, 1e-3, 2e-3, 1.0, 86_400.0):
            instants += [start - delta, start + delta]
    for ts in instants:
        found = book._period_at(entry, ts)
        expected = _period_by_datetime(book, model, ts)
        assert (isinstance(found, str) and expected == "invalid") or found is expected, ts


def test_a_call_added_by_its_fields_prices_as_its_event() -> None:
    """`add_counts` (no event built) and `add` settle to the same sums, classes and groups."""
    book = PriceBook.default()
    events = random_events(21, 400)
    by_event, by_fields = CallBatch[int](book), CallBatch[int](book)
    unknown_events, unknown_fields = [], []
    for group, event, billing in events:
        unknown_events.append(by_event.add(group, event, billing))
        counts = tuple(getattr(event.tokens, f) for f in Tokens.__struct_fields__)
        unknown_fields.append(
            by_fields.add_counts(
                group,
                event.model,
                event.provider,
                event.ts,
                counts,
                billing,
                service_tier=event.service_tier,
                speed=event.speed,
                inference_geo=event.inference_geo,
                cache_write_unsplit=event.cache_write_unsplit,
            )
        )
    assert unknown_fields == unknown_events
    assert list(by_fields.settle()) == list(by_event.settle())


def test_impossible_counts_given_by_field_are_unknown_and_named() -> None:
    book = PriceBook.default()
    terms = book.terms_for("claude-sonnet-4-5", None, OCT_2025, (1, 2, 3, -4, 0, 0, 0))
    assert isinstance(terms, PricedCall) and terms.cost_class is CostClass.UNKNOWN
    assert terms.notes == ("the cache_write_5m count -4 is not a non-negative whole number",)
    float_count = book.terms_for("claude-sonnet-4-5", None, OCT_2025, (1, 2.5, 0, 0, 0, 0, 0))  # type: ignore[arg-type]
    assert isinstance(float_count, PricedCall)
    assert float_count.notes == ("the output count 2.5 is not a non-negative whole number",)
