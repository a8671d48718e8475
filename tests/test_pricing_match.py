"""Model-name matching: every alias form resolves, near misses do not, labels are not models."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pricing import CostClass, PriceBook, normalise
from shared.events import Agent, Tokens, UsageEvent

SEPT_2026 = datetime(2026, 9, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook.default()


def resolved(book: PriceBook, model: str, provider: str | None = None) -> str | None:
    period = book.lookup(model, SEPT_2026, provider)
    return period.model_id if period else None


@pytest.mark.parametrize(
    ("logged", "model_id"),
    [
        # dated ids and -latest aliases
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4-0"),
        ("claude-opus-4-20250514", "claude-opus-4-0"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("o3-2025-04-16", "o3"),
        ("codex-mini-latest", "codex-mini"),
        ("qwen3-coder-plus-2025-09-23", "qwen3-coder-plus"),
        # provider prefixes
        ("anthropic/claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("openrouter/anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("openai/gpt-5-codex", "gpt-5-codex"),
        ("google/gemini-2.5-pro", "gemini-2.5-pro"),
        ("vertex_ai/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini/gemini-2.5-pro", "gemini-2.5-pro"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("z-ai/glm-4.6", "glm-4.6"),
        ("deepseek/deepseek-chat", "deepseek-chat"),
        # Bedrock
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku"),
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", "claude-haiku-4-5"),
        ("eu.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4-0"),
        ("apac.anthropic.claude-3-7-sonnet-20250219-v1:0", "claude-3-7-sonnet"),
        ("global.anthropic.claude-opus-4-6-v1", "claude-opus-4-6"),  # no date since Opus 4.6
        ("bedrock/us.anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1"),
        # Vertex
        ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
        ("vertex_ai/claude-opus-4-1@20250805", "claude-opus-4-1"),
        ("publishers/anthropic/models/claude-haiku-4-5@20251001", "claude-haiku-4-5"),
        # Cursor and other spellings
        ("claude-4.5-sonnet", "claude-sonnet-4-5"),
        ("claude-4-sonnet", "claude-sonnet-4-0"),
        ("claude-4.1-opus", "claude-opus-4-1"),
        ("claude-4.5-sonnet-thinking", "claude-sonnet-4-5"),
        ("claude-3.7-sonnet", "claude-3-7-sonnet"),
        ("claude-opus-4.5", "claude-opus-4-5"),
        ("gpt-5-codex", "gpt-5-codex"),
        ("claude-opus-4-6[1m]", "claude-opus-4-6"),
        # case and whitespace
        ("CLAUDE-Sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("  GPT-5.1-Codex-Max ", "gpt-5.1-codex-max"),
        ("US.Anthropic.Claude-Sonnet-4-5-20250929-V1:0", "claude-sonnet-4-5"),
    ],
)
def test_alias_forms(book: PriceBook, logged: str, model_id: str) -> None:
    assert resolved(book, logged) == model_id


@pytest.mark.parametrize(
    ("logged", "model_id"),
    [
        # Each of these is one token away from a listed model and must not borrow its price.
        ("claude-sonnet-4", "claude-sonnet-4-0"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-6", "claude-sonnet-4-6"),
        ("claude-sonnet-4-7", None),
        ("claude-sonnet-45", None),
        ("claude-sonnet-4-5-foo", None),
        ("claude-sonnet", None),
        ("claude-opus-4", "claude-opus-4-0"),
        ("claude-opus-4-5", "claude-opus-4-5"),
        ("claude-opus-4-9", None),
        ("claude-haiku-4", None),
        ("claude-fable-5", "claude-fable-5"),
        ("claude-fable-5-1", "claude-fable-5-1"),
        ("claude-fable-5-3", None),
        ("gpt-5", "gpt-5"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("gpt-5.1", "gpt-5.1"),
        ("gpt-5.1-codex", "gpt-5.1-codex"),
        ("gpt-5.1-codex-mini", "gpt-5.1-codex-mini"),
        ("gpt-5-codex-mini", None),
        ("gpt-5.7", None),
        ("gpt-5.6-sol", "gpt-5.6-sol"),
        ("gpt-5.6-sun", None),
        ("o3", "o3"),
        ("o3-mini", "o3-mini"),
        ("o3-pro", None),
        ("o1-mini", "o1-mini"),
        ("o1-mini-high", None),
        ("o1-pro", None),
        ("gpt-4o-audio-preview", None),
        ("gemini-1.5-pro-exp-0827", None),
        ("o4-mini", "o4-mini"),
        ("glm-4.5", "glm-4.5"),
        ("glm-4.5-air", "glm-4.5-air"),
        ("glm-4.5-airx", None),
        ("gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini-2.5-flash-lite", "gemini-2.5-flash-lite"),
        ("gemini-2.5-flash-preview-09-2025", None),
        ("gemini-flash-latest", None),
        ("deepseek-v4", None),
        ("deepseek-v4-pro", "deepseek-v4-pro"),
        ("qwen3-coder", None),
        ("qwen3-coder-plus", "qwen3-coder-plus"),
    ],
)
def test_near_misses(book: PriceBook, logged: str, model_id: str | None) -> None:
    assert resolved(book, logged) == model_id


DEC_2026 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("logged", "model_id"),
    [
        # Fable and Mythos: each version its own entry, never the neighbour one token away.
        ("claude-fable-5", "claude-fable-5"),
        ("claude-fable-5-20260609", "claude-fable-5"),
        ("claude-fable-5-1", "claude-fable-5-1"),
        ("claude-fable-5-2", "claude-fable-5-2"),
        ("claude-fable-5.2", "claude-fable-5-2"),
        ("claude-fable-5-2-20261109", "claude-fable-5-2"),
        ("claude-fable-5-2[1m]", "claude-fable-5-2"),
        ("claude-5.2-fable", "claude-fable-5-2"),
        ("global.anthropic.claude-fable-5-2", "claude-fable-5-2"),
        ("claude-mythos-5", "claude-mythos-5"),
        ("claude-mythos-5-20260609", "claude-mythos-5"),
        ("anthropic/claude-mythos-5-1", "claude-mythos-5-1"),
        ("claude-5-1-mythos", "claude-mythos-5-1"),
        ("claude-mythos-5-2", "claude-mythos-5-2"),
        ("us.anthropic.claude-mythos-5-2-v1:0", "claude-mythos-5-2"),
        # near misses stay unknown
        ("claude-fable-5-3", None),
        ("claude-fable-52", None),
        ("claude-fable-5-2-mini", None),
        ("claude-mythos", None),
        ("claude-mythos-5-3", None),
        ("claude-mythos-6", None),
        ("claude-mythos-preview", None),
    ],
)
def test_fable_and_mythos_versions(book: PriceBook, logged: str, model_id: str | None) -> None:
    period = book.lookup(logged, DEC_2026)
    assert (period.model_id if period else None) == model_id


@pytest.mark.parametrize(
    ("logged", "says"),
    [
        ("<synthetic>", "not a model"),
        ("codex-auto-review", "not a model"),
        ("CODEX-AUTO-REVIEW", "not a model"),
        ("openai/codex-auto-review", "not a model"),
        ("auto", "no list price"),
        ("unknown", "no price is known"),
        ("", "no price is known"),
    ],
)
def test_labels_and_unknowns_are_unknown_with_a_reason(
    book: PriceBook, logged: str, says: str
) -> None:
    assert book.lookup(logged, SEPT_2026) is None
    event = UsageEvent(
        event_id="e",
        ts=SEPT_2026.timestamp(),
        agent=Agent.CODEX,
        model=logged,
        tokens=Tokens(input=10),
        session_id="s",
    )
    p = book.price(event)
    assert p.cost_class is CostClass.UNKNOWN and p.api_equivalent is None
    assert says in p.notes[0]


@pytest.mark.parametrize(
    ("raw", "name", "hints"),
    [
        (
            "openrouter/anthropic/claude-4.5-sonnet",
            "claude-sonnet-4-5",
            ("openrouter", "anthropic"),
        ),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5", ("anthropic",)),
        ("deepseek-v3", "deepseek-v3", ()),  # -v3 is a name, not a Bedrock version suffix
        ("gpt-4o-2024-08-06", "gpt-4o", ()),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet", ()),
        ("claude-sonnet-4-5-20250929-thinking", "claude-sonnet-4-5", ()),
    ],
)
def test_normalise(raw: str, name: str, hints: tuple[str, ...]) -> None:
    found = normalise(raw)
    assert (found.name, found.hints) == (name, hints)


def test_provider_hint_is_not_required(book: PriceBook) -> None:
    assert resolved(book, "glm-4.6") == "glm-4.6"
    assert resolved(book, "glm-4.6", provider="zai") == "glm-4.6"
    assert resolved(book, "glm-4.6", provider="openrouter") == "glm-4.6"  # unknown hint: ignored
    assert resolved(book, "claude-sonnet-4-5", provider="openai") == "claude-sonnet-4-5"


def _table(provider: str, input_rate: str) -> str:
    return f"""
schema = 1
provider = "{provider}"
currency = "USD"
aliases = ["{provider}-cloud"]

[[models]]
id = "shared-model"
name = "Shared"
sources = [{{ name = "test", ref = "tests", checked = 2026-11-23 }}]

[[models.periods]]
from = 2025-01-01
[models.periods.rates]
input = "{input_rate}"
output = "1"
reasoning = "1"
"""


def test_provider_hint_settles_a_name_two_tables_share(tmp_path: Path) -> None:
    (tmp_path / "alpha.toml").write_text(_table("alpha", "1"))
    (tmp_path / "beta.toml").write_text(_table("beta", "2"))
    book = PriceBook.load(tmp_path)
    when = datetime(2026, 1, 1, tzinfo=UTC)

    def input_rate(model: str, provider: str | None) -> str:
        period = book.lookup(model, when, provider)
        assert period is not None and period.rates.input is not None
        return f"{period.provider}:{period.rates.input}"

    assert input_rate("shared-model", "beta") == "beta:2"
    assert input_rate("shared-model", "beta-cloud") == "beta:2"
    assert input_rate("shared-model", "alpha") == "alpha:1"
    assert input_rate("beta/shared-model", None) == "beta:2"  # the path names the provider

    event = UsageEvent(
        event_id="e",
        ts=when.timestamp(),
        agent=Agent.OPENCODE,
        model="shared-model",
        tokens=Tokens(input=1_000_000),
        session_id="s",
    )
    # No hint at all: priced (never dropped) but marked estimated, and the note says why.
    p = book.price(event)
    assert p.cost_class is CostClass.ESTIMATED and "several providers" in p.notes[0]
    hinted = book.price(
        UsageEvent(
            event_id="e",
            ts=when.timestamp(),
            agent=Agent.OPENCODE,
            model="shared-model",
            tokens=Tokens(input=1_000_000),
            session_id="s",
            provider="beta",
        )
    )
    assert (hinted.cost_class, hinted.api_equivalent) == (CostClass.METERED, Decimal("2"))


def test_lookup_needs_an_aware_instant(book: PriceBook) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        book.lookup("gpt-5", datetime(2026, 1, 1))


def test_lookup_returns_the_period_of_that_instant(book: PriceBook) -> None:
    before = book.lookup("o3", datetime(2025, 6, 9, 23, 59, tzinfo=UTC))
    after = book.lookup("o3", datetime(2025, 6, 10, tzinfo=UTC))
    assert before is not None and after is not None
    assert before.end == after.start == datetime(2025, 6, 10, tzinfo=UTC)
    assert (before.rates.input, after.rates.input) == (Decimal("10"), Decimal("2.00"))
    assert after.end is None
    # Provenance travels with the period: the model's sources, each with its check date.
    genai = "https://github.com/pydantic/genai-prices/blob/main/prices/providers/openai.yml"
    assert any(s.ref == genai for s in after.sources)
    assert all(s.checked <= datetime(2026, 11, 23).date() for s in after.sources)
    # and so do the model's notes ([conflict] on Sonnet 5's long-context bracket).
    sonnet = book.lookup("claude-sonnet-5", datetime(2026, 9, 1, tzinfo=UTC))
    assert sonnet is not None and any("[conflict]" in n for n in sonnet.model_notes)
