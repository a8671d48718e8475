"""Models that logs of the last two years still name (Claude 3 and 3.5, GPT-4o and 4.1, the
o-series, Gemini 1.5 and 2.0): each is priced at its list rates on the dates a log carries.

Rates are USD per million tokens; every expected figure is written out as the sum it is.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from pricing import Billing, CostClass, PriceBook
from shared.events import Agent, Tokens, UsageEvent

M = Decimal(1_000_000)
THOUSAND = Tokens(input=1000, cache_read=1000, output=1000)  # uncached, cached, output


def per_thousand(uncached: str, cached: str, output: str) -> Decimal:
    """THOUSAND's cost at these rates per million."""
    return 1000 * (Decimal(uncached) + Decimal(cached) + Decimal(output)) / M


def at(year: int, month: int, day: int) -> float:
    return datetime(year, month, day, 12, tzinfo=UTC).timestamp()


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.default()


def cost(book: PriceBook, model: str, ts: float, tokens: Tokens) -> tuple[Decimal | None, str]:
    event = UsageEvent(
        event_id="e1", ts=ts, agent=Agent.OPENCODE, model=model, tokens=tokens, session_id="s"
    )
    priced = book.price(event, Billing.API)
    return priced.api_equivalent, priced.cost_class


@pytest.mark.parametrize(
    ("logged", "day", "tokens", "usd"),
    [
        # tokscale's OpenCode fixture: 1,000 in, 500 out, 200 read, 100 written.
        (
            "claude-3-5-sonnet-20241022",
            at(2024, 12, 1),
            Tokens(input=1000, output=500, cache_read=200, cache_write_5m=100),
            (1000 * 3 + 500 * 15 + 200 * Decimal("0.30") + 100 * Decimal("3.75")) / M,
        ),
        (
            "claude-3-5-sonnet-20240620",
            at(2024, 7, 1),
            Tokens(input=1000, output=1000),
            Decimal(1000 * 3 + 1000 * 15) / M,
        ),
        (
            "anthropic/claude-3-opus-20240229",
            at(2025, 3, 1),
            Tokens(input=1000, output=100, cache_write_1h=10),
            Decimal(1000 * 15 + 100 * 75 + 10 * 30) / M,
        ),
        (
            "claude-3-haiku-20240307",
            at(2025, 5, 1),
            Tokens(input=1000, output=1000, cache_read=10_000, cache_write_5m=1000),
            (1000 * Decimal("0.25") + 1000 * Decimal("1.25") + 10_000 * Decimal("0.03") + 300) / M,
        ),
        (
            "claude-3-sonnet-20240229",
            at(2025, 1, 2),
            Tokens(input=2000, output=100),
            Decimal(2000 * 3 + 100 * 15) / M,
        ),
        # gpt-4o meant gpt-4o-2024-05-13 ($5 / $15) until 2024-10-02, then the $2.50 snapshot.
        ("gpt-4o", at(2024, 6, 1), Tokens(input=1000, output=1000), Decimal(5000 + 15000) / M),
        (
            "gpt-4o-2024-08-06",
            at(2025, 1, 10),
            Tokens(input=1000, cache_read=1000, output=1000),
            (1000 * Decimal("2.50") + 1000 * Decimal("1.25") + 1000 * 10) / M,
        ),
        ("openai/gpt-4o-mini", at(2025, 2, 1), THOUSAND, per_thousand("0.15", "0.075", "0.60")),
        ("gpt-4.1-mini-2025-04-14", at(2025, 6, 1), THOUSAND, per_thousand("0.40", "0.10", "1.60")),
        ("gpt-4.1-nano", at(2025, 6, 1), THOUSAND, per_thousand("0.10", "0.025", "0.40")),
        # o-series: reasoning tokens are output.
        (
            "o1-2024-12-17",
            at(2025, 1, 5),
            Tokens(input=1000, cache_read=1000, output=1000, reasoning=500),
            (1000 * 15 + 1000 * Decimal("7.50") + 1000 * 60 + 500 * 60) / M,
        ),
        ("o3-mini-2025-01-31", at(2025, 3, 1), THOUSAND, per_thousand("1.10", "0.55", "4.40")),
        ("gemini-2.0-flash-001", at(2025, 4, 1), THOUSAND, per_thousand("0.10", "0.025", "0.40")),
        (
            "gemini-2.0-flash-lite",
            at(2025, 4, 1),
            Tokens(input=1000, output=1000),
            (1000 * Decimal("0.075") + 1000 * Decimal("0.30")) / M,
        ),
        # 1.5 Pro after the cut of 2024-10-01, below and above its 128K cliff.
        (
            "models/gemini-1.5-pro-002",
            at(2024, 12, 1),
            Tokens(input=100_000, output=1000),
            (100_000 * Decimal("1.25") + 1000 * 5) / M,
        ),
        (
            "gemini-1.5-pro-002",
            at(2024, 12, 1),
            Tokens(input=200_000, output=1000),
            (200_000 * Decimal("2.50") + 1000 * 10) / M,
        ),
        (
            "gemini-1.5-flash",
            at(2024, 12, 1),
            Tokens(input=1000, output=1000),
            (1000 * Decimal("0.075") + 1000 * Decimal("0.30")) / M,
        ),
    ],
)
def test_older_models_at_their_list_price(
    book: PriceBook, logged: str, day: float, tokens: Tokens, usd: Decimal
) -> None:
    assert cost(book, logged, day, tokens) == (usd, CostClass.METERED)


def test_before_launch_stays_unknown(book: PriceBook) -> None:
    # A date before a model existed is a wrong clock or a wrong name, never a guessed price.
    usd, cls = cost(book, "gpt-4.1-mini", at(2025, 1, 1), Tokens(input=1000))
    assert (usd, cls) == (None, CostClass.UNKNOWN)


def test_a_rate_that_did_not_exist_yet_is_estimated(book: PriceBook) -> None:
    # Prompt caching came to gpt-4o on 2024-10-01; a cached count before that has no rate.
    _, cls = cost(book, "gpt-4o", at(2024, 9, 1), Tokens(input=1000, cache_read=1000))
    assert cls is CostClass.ESTIMATED


def test_haiku_3_5_launched_at_1_and_5_then_cut(book: PriceBook) -> None:
    # $1 / $5 from launch; the cut to $0.80 / $4 came about a month later (its day is unverified,
    # so the launch period is estimated).
    tokens = Tokens(input=1000, output=1000, cache_read=1000, cache_write_1h=1000)
    launch = cost(book, "claude-3-5-haiku-20241022", at(2024, 11, 15), tokens)
    assert launch == (
        (1000 * 1 + 1000 * 5 + 1000 * Decimal("0.10") + 1000 * 2) / M,
        CostClass.ESTIMATED,
    )
    after = cost(book, "claude-3-5-haiku-20241022", at(2025, 1, 15), tokens)
    assert after == (
        (1000 * Decimal("0.80") + 1000 * 4 + 1000 * Decimal("0.08") + 1000 * Decimal("1.60")) / M,
        CostClass.METERED,
    )


def test_o1_mini_launch_price_and_the_cut_with_o3_mini(book: PriceBook) -> None:
    # $3 / $12 from 2024-09-12; the o3-mini price ($1.10 / cached $0.55 / $4.40) from 2025-01-31.
    launch = cost(book, "o1-mini-2024-09-12", at(2024, 10, 15), Tokens(input=1000, output=1000))
    assert launch == (Decimal(1000 * 3 + 1000 * 12) / M, CostClass.METERED)
    cut = cost(book, "o1-mini", at(2025, 1, 31), THOUSAND)
    assert cut == (per_thousand("1.10", "0.55", "4.40"), CostClass.METERED)
