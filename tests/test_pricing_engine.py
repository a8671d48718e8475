"""The arithmetic and the cost classes, against figures worked out by hand from the tables.

Rates are USD per million tokens; every expected figure below is written out as the sum it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from pricing import Billing, CostClass, PriceBook, PricedCall
from shared.events import Agent, Tokens, UsageEvent


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def event(model: str, ts: float, tokens: Tokens, **kw: Any) -> UsageEvent:
    """A usage event; `kw` sets the optional fields (service_tier, speed, provider, ...)."""
    return UsageEvent(
        event_id="e1",
        ts=ts,
        agent=Agent.CLAUDE_CODE,
        model=model,
        tokens=tokens,
        session_id="s1",
        **kw,
    )


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.default()


def price(
    book: PriceBook, model: str, ts: float, billing: Billing = Billing.API, **kw: Any
) -> PricedCall:
    tokens = kw.pop("tokens")
    assert isinstance(tokens, Tokens)
    return book.price(event(model, ts, tokens, **kw), billing)


OCT_2025 = at(2025, 10, 1)
APR_2026 = at(2026, 4, 20)
MAY_2026 = at(2026, 5, 15)
MIXED = Tokens(
    input=1_000, output=500, cache_read=10_000, cache_write_5m=2_000, cache_write_1h=3_000
)


# --- cost classes ---------------------------------------------------------------------------


def test_metered_sums_every_bucket_at_its_own_rate(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5-20250929", OCT_2025, tokens=MIXED)
    # 1,000×3 + 500×15 + 10,000×0.30 + 2,000×3.75 + 3,000×6 = 39,000 per million
    assert p == PricedCall(Decimal("0.039"), CostClass.METERED, "claude-sonnet-4-5", False, ())


def test_subscription_keeps_the_api_equivalent(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5-20250929", OCT_2025, Billing.SUBSCRIPTION, tokens=MIXED)
    assert p.cost_class is CostClass.SUBSCRIPTION_INCLUDED
    assert p.api_equivalent == Decimal("0.039")
    assert not p.estimated


def test_subscription_outranks_estimated_but_keeps_the_flag(book: PriceBook) -> None:
    tokens = Tokens(cache_write_5m=10_000)
    p = price(
        book,
        "claude-sonnet-4-5",
        OCT_2025,
        Billing.SUBSCRIPTION,
        tokens=tokens,
        cache_write_unsplit=True,
    )
    assert p.cost_class is CostClass.SUBSCRIPTION_INCLUDED
    assert p.estimated and p.api_equivalent == Decimal("0.0375")
    assert any("5m/1h split" in n for n in p.notes)


def test_unknown_model_is_never_zero_dollars(book: PriceBook) -> None:
    for billing in Billing:
        p = price(book, "claude-sonnet-4-7", OCT_2025, billing, tokens=MIXED)
        assert p.cost_class is CostClass.UNKNOWN
        assert p.api_equivalent is None and p.model_id is None
        assert "no price is known" in p.notes[0]


def test_before_the_first_price_is_unknown(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", at(2025, 1, 1), tokens=MIXED)
    assert p.cost_class is CostClass.UNKNOWN and p.model_id == "claude-sonnet-4-5"
    assert "before 2025-09-29" in p.notes[0]


@pytest.mark.parametrize(
    "tokens",
    [Tokens(input=-1), Tokens(output=-5), Tokens(web_search_requests=-1)],
)
def test_impossible_counts_are_unknown_not_a_wrong_figure(book: PriceBook, tokens: Tokens) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=tokens)
    assert p.cost_class is CostClass.UNKNOWN and p.api_equivalent is None


def test_invalid_timestamp_is_unknown(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", float("nan"), tokens=MIXED)
    assert p.cost_class is CostClass.UNKNOWN and "not a valid instant" in p.notes[0]


def test_real_claude_code_line(book: PriceBook) -> None:
    # The assistant line of research/log-formats.md §1 (2026-09-03, all writes 1-hour).
    tokens = Tokens(input=4, output=187, cache_read=48_811, cache_write_1h=2_210)
    p = price(book, "claude-sonnet-4-5-20250929", at(2026, 9, 3, 14, 2), tokens=tokens)
    # 4×3 + 187×15 + 48,811×0.30 + 2,210×6 = 12 + 2,805 + 14,643.3 + 13,260 = 30,720.3
    assert p.api_equivalent == Decimal("0.0307203") and p.cost_class is CostClass.METERED


# --- cache tiers ------------------------------------------------------------------------------


def test_each_cache_tier_has_its_own_rate(book: PriceBook) -> None:
    # Haiku 4.5 has no long-context cliff, so a million tokens of one bucket prices cleanly.
    def one(**bucket: int) -> Decimal | None:
        return price(
            book, "claude-haiku-4-5", at(2025, 12, 1), tokens=Tokens(**bucket)
        ).api_equivalent

    million = 1_000_000
    assert one(input=million) == Decimal("1")
    assert one(cache_write_1h=million) == Decimal("2")  # 2× input, not 1.25×
    assert one(cache_write_5m=million) == Decimal("1.25")
    assert one(cache_read=million) == Decimal("0.10")
    assert one(output=million) == Decimal("5")


def test_unsplit_write_is_estimated_at_the_5m_rate(book: PriceBook) -> None:
    tokens = Tokens(cache_write_5m=10_000)
    p = price(book, "claude-opus-4-5", at(2026, 1, 5), tokens=tokens, cache_write_unsplit=True)
    assert p.cost_class is CostClass.ESTIMATED
    assert p.api_equivalent == Decimal("0.0625")  # 10,000 × 6.25
    assert "5-minute rate $6.25/MTok" in p.notes[0] and "$10/MTok" in p.notes[0]


def test_unsplit_flag_without_writes_changes_nothing(book: PriceBook) -> None:
    p = price(
        book, "claude-opus-4-5", at(2026, 1, 5), tokens=Tokens(input=10), cache_write_unsplit=True
    )
    assert p.cost_class is CostClass.METERED


@pytest.mark.parametrize(
    ("model", "tokens", "expected"),
    [
        # GPT-5.6: one cache-write rate, 1.25× input: 1,000×5 + 1,000×6.25 = 11,250
        ("gpt-5.6", Tokens(input=1_000, cache_write_5m=1_000), Decimal("0.01125")),
        # GLM: writes are free: 1,000×0.60 + 1,000×0 = 600
        ("glm-4.6", Tokens(input=1_000, cache_write_5m=1_000), Decimal("0.0006")),
    ],
)
def test_single_cache_write_rate_is_not_an_estimate(
    book: PriceBook, model: str, tokens: Tokens, expected: Decimal
) -> None:
    p = price(book, model, at(2026, 9, 1), tokens=tokens, cache_write_unsplit=True)
    assert (p.api_equivalent, p.cost_class) == (expected, CostClass.METERED)


def test_a_bucket_without_a_rate_is_estimated_not_dropped_silently(book: PriceBook) -> None:
    p = price(book, "gpt-5", OCT_2025, tokens=Tokens(input=1_000, cache_write_5m=500))
    assert p.cost_class is CostClass.ESTIMATED
    assert p.api_equivalent == Decimal("0.00125")  # only the 1,000 × 1.25 that has a rate
    assert "500 cache_write_5m tokens left unpriced" in p.notes[0]


def test_reasoning_is_billed_at_the_reasoning_rate(book: PriceBook) -> None:
    p = price(book, "gpt-5", OCT_2025, tokens=Tokens(output=100, reasoning=900))
    assert p.api_equivalent == Decimal("0.01")  # 1,000 × 10


def test_web_search_is_per_request(book: PriceBook) -> None:
    p = price(
        book, "claude-sonnet-4-5", OCT_2025, tokens=Tokens(input=1_000, web_search_requests=3)
    )
    assert p.api_equivalent == Decimal("0.033")  # 1,000×3/1e6 + 3 × $10/1,000
    q = price(book, "gpt-5", OCT_2025, tokens=Tokens(input=1_000, web_search_requests=3))
    assert q.cost_class is CostClass.ESTIMATED and "web searches left unpriced" in q.notes[0]


def test_exact_to_the_last_digit(book: PriceBook) -> None:
    p = price(book, "deepseek-v4-flash", at(2026, 9, 1), tokens=Tokens(cache_read=1))
    assert p.api_equivalent == Decimal("0.0000000028")
    assert isinstance(p.api_equivalent, Decimal)


# --- the long-context cliff -------------------------------------------------------------------


def _prompt(input: int) -> Tokens:
    return Tokens(input=input, cache_read=150_000, cache_write_1h=50_000, output=10_000)


def test_exactly_at_the_threshold_stays_on_base(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=_prompt(0))
    assert _prompt(0).prompt == 200_000
    # 150,000×0.30 + 50,000×6 + 10,000×15 = 45,000 + 300,000 + 150,000
    assert (p.api_equivalent, p.cost_class) == (Decimal("0.495"), CostClass.METERED)


def test_one_token_over_moves_the_whole_request_output_too(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=_prompt(1))
    # 1×6 + 150,000×0.60 + 50,000×12 + 10,000×22.50 = 6 + 90,000 + 600,000 + 225,000
    assert (p.api_equivalent, p.cost_class) == (Decimal("0.915006"), CostClass.METERED)


def test_cliff_counts_cache_reads_not_just_uncached_input(book: PriceBook) -> None:
    # Claude Code's usual shape: a few uncached tokens on top of a huge cache read.
    p = price(book, "claude-sonnet-4-0", OCT_2025, tokens=Tokens(input=4, cache_read=200_000))
    assert p.api_equivalent == Decimal("0.120024")  # 4×6 + 200,000×0.60


def test_cliff_with_batch(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=_prompt(1), service_tier="batch")
    assert p.api_equivalent == Decimal("0.457503")  # half of 0.915006 (batch LC 3 / 11.25)


def test_openai_272k_cliff(book: PriceBook) -> None:
    below = price(book, "gpt-5.4", APR_2026, tokens=Tokens(input=272_000, output=1_000))
    above = price(book, "gpt-5.4", APR_2026, tokens=Tokens(input=272_001, output=1_000))
    assert below.api_equivalent == Decimal("0.695")  # 272,000×2.50 + 1,000×15
    assert above.api_equivalent == Decimal("1.382505")  # 272,001×5 + 1,000×22.50


def test_gemini_200k_cliff_includes_thinking(book: PriceBook) -> None:
    tokens = Tokens(input=150_000, cache_read=50_001, output=1_000, reasoning=2_000)
    p = price(book, "gemini-2.5-pro", OCT_2025, tokens=tokens)
    # 150,000×2.50 + 50,001×0.25 + 1,000×15 + 2,000×15 = 375,000 + 12,500.25 + 15,000 + 30,000
    assert p.api_equivalent == Decimal("0.43250025")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (32_000, Decimal("0.037")),  # 32,000×1 + 1,000×5
        (32_001, Decimal("0.0666018")),  # 32,001×1.80 + 1,000×9
        (128_001, Decimal("0.399003")),  # 128,001×3 + 1,000×15
        (256_001, Decimal("1.596006")),  # 256,001×6 + 1,000×60
    ],
)
def test_qwen_several_thresholds(book: PriceBook, prompt: int, expected: Decimal) -> None:
    p = price(book, "qwen3-coder-plus", OCT_2025, tokens=Tokens(input=prompt, output=1_000))
    assert p.api_equivalent == expected
    assert p.cost_class is CostClass.ESTIMATED  # USD international prices are unverified
    assert "unverified" in p.notes[0]


def test_haiku_5_5_has_a_100k_threshold(book: PriceBook) -> None:
    p = price(book, "claude-haiku-5-5", at(2026, 10, 1), tokens=Tokens(input=100_001))
    assert p.api_equivalent == Decimal("0.0500005")  # 100,001 × 0.50


# --- effective dates --------------------------------------------------------------------------

ONE_M_EACH = Tokens(input=1_000_000, output=1_000_000, cache_read=1_000_000)


def test_sonnet_5_keeps_its_launch_price_after_august(book: PriceBook) -> None:
    # The rise to $3 / $15 announced for 2026-09-01 was cancelled: Anthropic's page still says $2.
    last = price(book, "claude-sonnet-5", at(2026, 8, 31, 23, 59, 59), tokens=ONE_M_EACH)
    first = price(book, "claude-sonnet-5", at(2026, 9, 1), tokens=ONE_M_EACH)
    assert last.api_equivalent == first.api_equivalent == Decimal("12.20")  # 2 + 10 + 0.20


def test_opus_5_5_and_sonnet_5_5_cache_reads(book: PriceBook) -> None:
    # Opus 5.5: 4 / 20 with writes 5 / 8 and a 0.20 read (0.05x input), metered, not estimated.
    opus = price(book, "claude-opus-5-5", at(2026, 10, 1), tokens=ONE_M_ALL)
    assert (opus.api_equivalent, opus.cost_class) == (Decimal("37.20"), CostClass.METERED)
    # Sonnet 5.5: 2 / 10, writes 2.50 / 4; the read 0.20 until 2026-10-07, 0.10 from then.
    before = price(book, "claude-sonnet-5-5", at(2026, 10, 6), tokens=ONE_M_ALL)
    after = price(book, "claude-sonnet-5-5", at(2026, 10, 7), tokens=ONE_M_ALL)
    assert (before.api_equivalent, before.cost_class) == (Decimal("18.70"), CostClass.METERED)
    assert after.api_equivalent == Decimal("18.60")  # 2 + 10 + 0.10 + 2.50 + 4


def test_opus_5_starts_on_its_release_day(book: PriceBook) -> None:
    assert price(book, "claude-opus-5", at(2026, 7, 23), tokens=ONE_M_EACH).api_equivalent is None
    assert price(book, "claude-opus-5", at(2026, 7, 24), tokens=ONE_M_EACH).api_equivalent == (
        Decimal("30.50")  # 5 + 25 + 0.50
    )


# Every class at one million tokens: input, output, cache read, 5m write, 1h write.
ONE_M_ALL = Tokens(
    input=1_000_000,
    output=1_000_000,
    cache_read=1_000_000,
    cache_write_5m=1_000_000,
    cache_write_1h=1_000_000,
)


@pytest.mark.parametrize(
    ("model", "day", "usd"),
    [
        ("claude-fable-5", at(2026, 6, 9), Decimal("93.50")),  # 10 + 50 + 1 + 12.50 + 20
        ("claude-mythos-5", at(2026, 6, 9), Decimal("93.50")),
        ("claude-fable-5-1", at(2026, 9, 1), Decimal("92.75")),  # 10 + 50 + 0.25 + 12.50 + 20
        ("claude-mythos-5-1", at(2026, 9, 1), Decimal("92.75")),
        ("claude-fable-5-2", at(2026, 11, 9), Decimal("74.20")),  # 8 + 40 + 0.20 + 10 + 16
        ("claude-mythos-5-2", at(2026, 11, 9), Decimal("74.20")),
        ("claude-fable-5-2-20261109", at(2026, 12, 1), Decimal("74.20")),
    ],
)
def test_fable_and_mythos_each_version_at_its_own_price(
    book: PriceBook, model: str, day: float, usd: Decimal
) -> None:
    # Mythos is Fable's model for vetted organisations, priced as the Fable of the same version.
    p = price(book, model, day, tokens=ONE_M_ALL)
    assert (p.api_equivalent, p.cost_class) == (usd, CostClass.METERED)


@pytest.mark.parametrize(
    ("model", "launch"),
    [
        ("claude-fable-5", at(2026, 6, 9)),
        ("claude-mythos-5", at(2026, 6, 9)),
        ("claude-fable-5-1", at(2026, 9, 1)),
        ("claude-fable-5-2", at(2026, 11, 9)),
        ("claude-mythos-5-2", at(2026, 11, 9)),
    ],
)
def test_fable_and_mythos_unknown_before_release(
    book: PriceBook, model: str, launch: float
) -> None:
    p = price(book, model, launch - 1, tokens=ONE_M_ALL)
    assert (p.api_equivalent, p.cost_class) == (None, CostClass.UNKNOWN)


def test_o3_price_cut(book: PriceBook) -> None:
    before = price(book, "o3", at(2025, 6, 9, 23, 59), tokens=ONE_M_EACH)
    after = price(book, "o3-2025-04-16", at(2025, 6, 10), tokens=ONE_M_EACH)
    assert before.api_equivalent == Decimal("52.50")  # 10 + 40 + 2.50
    assert after.api_equivalent == Decimal("10.50")  # 2 + 8 + 0.50


def test_deepseek_v4_pro_promotion_ends_at_1600_utc(book: PriceBook) -> None:
    promo = price(book, "deepseek-v4-pro", at(2026, 5, 31, 15, 59, 59), tokens=ONE_M_EACH)
    listed = price(book, "deepseek-v4-pro", at(2026, 5, 31, 16, 0, 0), tokens=ONE_M_EACH)
    assert promo.api_equivalent == Decimal("1.308625")  # 0.435 + 0.87 + 0.003625
    assert listed.api_equivalent == Decimal("5.2345")  # 1.74 + 3.48 + 0.0145


def test_long_context_surcharge_removed_for_4_6_on_2026_03_13(book: PriceBook) -> None:
    tokens = Tokens(input=300_000, output=1_000)
    sonnet_before = price(book, "claude-sonnet-4-6", at(2026, 3, 12), tokens=tokens)
    sonnet_after = price(book, "claude-sonnet-4-6", at(2026, 3, 13), tokens=tokens)
    assert sonnet_before.api_equivalent == Decimal("1.8225")  # 300,000×6 + 1,000×22.50
    assert sonnet_after.api_equivalent == Decimal("0.915")  # 300,000×3 + 1,000×15
    opus_before = price(book, "claude-opus-4-6", at(2026, 3, 12), tokens=tokens)
    opus_after = price(book, "claude-opus-4-6", at(2026, 3, 13), tokens=tokens)
    assert opus_before.api_equivalent == Decimal("3.0375")  # 300,000×10 + 1,000×37.50
    assert opus_before.cost_class is CostClass.ESTIMATED  # those rates are not in the sources
    assert (opus_after.api_equivalent, opus_after.cost_class) == (
        Decimal("1.525"),  # 300,000×5 + 1,000×25
        CostClass.METERED,
    )


def test_sonnet_4_5_surcharge_after_2026_03_13_is_flagged(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", at(2026, 6, 1), tokens=_prompt(1))
    assert p.api_equivalent == Decimal("0.915006")
    assert p.cost_class is CostClass.ESTIMATED and "unverified" in p.notes[0]


# --- modifiers --------------------------------------------------------------------------------

TEN_K = Tokens(input=1_000, output=1_000)  # Opus 4.x: 1,000×5 + 1,000×25 = 30,000 → $0.03


@pytest.mark.parametrize(
    ("model", "expected"),
    [("claude-opus-4-6", Decimal("0.18")), ("claude-opus-4-8", Decimal("0.06"))],
)
def test_fast_mode_multiplier_per_model(book: PriceBook, model: str, expected: Decimal) -> None:
    p = price(book, model, APR_2026, tokens=TEN_K, speed="fast")
    assert (p.api_equivalent, p.cost_class) == (expected, CostClass.METERED)


def test_openai_fast_tier(book: PriceBook) -> None:
    p = price(book, "gpt-5.5", MAY_2026, tokens=TEN_K, service_tier="fast")
    assert p.api_equivalent == Decimal("0.0875")  # (1,000×5 + 1,000×30) × 2.5


def test_fast_without_a_known_multiplier_is_estimated(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=MIXED, speed="fast")
    assert (p.api_equivalent, p.cost_class) == (Decimal("0.039"), CostClass.ESTIMATED)
    assert "speed 'fast'" in p.notes[0]


def test_batch_halves_the_whole_call(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=MIXED, service_tier="batch")
    assert (p.api_equivalent, p.cost_class) == (Decimal("0.0195"), CostClass.METERED)


def test_explicit_flex_rates(book: PriceBook) -> None:
    p = price(book, "o3", OCT_2025, tokens=ONE_M_EACH, service_tier="flex")
    assert p.api_equivalent == Decimal("5.25")  # 1 + 4 + 0.25


def test_explicit_priority_rates_with_their_own_cliff(book: PriceBook) -> None:
    tokens = Tokens(input=300_000, output=1_000)
    p = price(book, "gemini-3-pro-preview", at(2025, 12, 1), tokens=tokens, service_tier="priority")
    assert (p.api_equivalent, p.cost_class) == (Decimal("2.1924"), CostClass.METERED)


def test_explicit_tier_without_a_long_context_rate_is_estimated(book: PriceBook) -> None:
    tokens = Tokens(input=300_000, output=1_000)
    p = price(book, "gpt-5.4", APR_2026, tokens=tokens, service_tier="priority")
    assert p.api_equivalent == Decimal("1.53")  # priority base: 300,000×5 + 1,000×30
    assert p.cost_class is CostClass.ESTIMATED and "above 272,000" in p.notes[0]


def test_inference_geo_us(book: PriceBook) -> None:
    p = price(book, "claude-opus-4-6", APR_2026, tokens=TEN_K, inference_geo="us")
    assert (p.api_equivalent, p.cost_class) == (Decimal("0.033"), CostClass.METERED)
    q = price(book, "claude-opus-4-6", APR_2026, tokens=TEN_K, inference_geo="")
    assert (q.api_equivalent, q.cost_class) == (Decimal("0.03"), CostClass.METERED)


def test_geo_without_data_is_estimated(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=MIXED, inference_geo="us")
    assert (p.api_equivalent, p.cost_class) == (Decimal("0.039"), CostClass.ESTIMATED)


def test_modifiers_multiply(book: PriceBook) -> None:
    p = price(book, "claude-opus-4-6", APR_2026, tokens=TEN_K, speed="fast", inference_geo="us")
    assert p.api_equivalent == Decimal("0.198")  # 0.03 × 6 × 1.1


@pytest.mark.parametrize("tier", [None, "standard", "default", "auto", "STANDARD", ""])
def test_plain_service_tiers(book: PriceBook, tier: str | None) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=MIXED, service_tier=tier)
    assert (p.api_equivalent, p.cost_class, p.notes) == (Decimal("0.039"), CostClass.METERED, ())


def test_unrecognised_tier_is_priced_at_standard_and_estimated(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=MIXED, service_tier="turbo")
    assert (p.api_equivalent, p.cost_class) == (Decimal("0.039"), CostClass.ESTIMATED)
    assert p.notes == ("unrecognised service tier 'turbo'; priced at standard",)


def test_known_tier_without_public_price(book: PriceBook) -> None:
    p = price(book, "claude-sonnet-4-5", OCT_2025, tokens=MIXED, service_tier="priority")
    assert (p.api_equivalent, p.cost_class) == (Decimal("0.039"), CostClass.ESTIMATED)
    assert "capacity commitment" in " ".join(p.notes)


def test_conflicting_source_marks_the_modifier_estimated(book: PriceBook) -> None:
    p = price(book, "gpt-5.5", MAY_2026, tokens=TEN_K, service_tier="priority")
    assert p.api_equivalent == Decimal("0.07")  # 1,000×10 + 1,000×60
    assert p.cost_class is CostClass.ESTIMATED and "[conflict]" in p.notes[0]
