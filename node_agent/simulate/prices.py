"""The generator's own list prices: the independent side of every cost check.

Deliberately NOT the `pricing` package: tests compare that package against these figures, so
they are copied by hand from research/pricing-billing.md §1.1–1.4 (USD per million tokens, as
decimal strings) for the handful of models the simulated fleet uses, one explicit rate per
token class (no multipliers).

Rules encoded here:
- Long-context cliff (Sonnet 4.5, Gemini 2.5 Pro): when input + cache read + both cache
  writes of ONE call exceed 200,000, every token of that call (output included) is billed at
  the long-context rates. Exactly 200,000 is still standard ("exceeds").
- A cache write logged without its TTL split is billed at the 5-minute rate (the caller puts
  it in `cache_write_5m`, as shared.events.Tokens prescribes).
- Reasoning tokens are billed at the output rate (they are disjoint from `output` in Tokens).
- Web search: $10 per 1,000 requests on Anthropic models.
- Opus 4.6 is flat above 200K only since 2026-03-13 (Anthropic dropped the surcharge); the
  surcharge rates before that are not in the research, so pricing an earlier call is an error.
- DeepSeek: on the simulated dates (Oct–Nov 2026) `deepseek-chat` is deprecated (2026-07-24)
  and `deepseek-v4-flash` list prices (in force since 2026-04) apply: hit 0.0028, miss 0.14,
  output 0.28. Calls before 2026-05-01 are refused rather than guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext

from shared.events import Tokens

MTOK = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per MTok for each token class; None where the provider bills no such class."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal | None
    cache_write_1h: Decimal | None


@dataclass(frozen=True, slots=True)
class ModelPrice:
    model: str
    standard: Rates
    long_context: Rates | None = None
    threshold: int = 200_000
    valid_from: date | None = None
    web_search_per_request: Decimal = Decimal(0)


def _d(value: str) -> Decimal:
    return Decimal(value)


def _rates(inp: str, out: str, read: str, w5: str | None, w1: str | None) -> Rates:
    return Rates(
        _d(inp), _d(out), _d(read), None if w5 is None else _d(w5), None if w1 is None else _d(w1)
    )


_WEB_SEARCH = _d("0.01")  # $10 per 1,000 searches

PRICES: dict[str, ModelPrice] = {
    # §1.1 Sonnet 4 / 4.5: 3 / 15, writes 3.75 (5m) and 6 (1h), read 0.30; long context
    # (request > 200K) 6 / 22.50, writes 7.50 / 12, read 0.60.
    "claude-sonnet-4-5-20250929": ModelPrice(
        "claude-sonnet-4-5-20250929",
        _rates("3", "15", "0.30", "3.75", "6"),
        long_context=_rates("6", "22.50", "0.60", "7.50", "12"),
        web_search_per_request=_WEB_SEARCH,
    ),
    # §1.1 Opus 4.6: 5 / 25, writes 6.25 / 10, read 0.50; flat across 1M since 2026-03-13.
    "claude-opus-4-6": ModelPrice(
        "claude-opus-4-6",
        _rates("5", "25", "0.50", "6.25", "10"),
        valid_from=date(2026, 3, 13),
        web_search_per_request=_WEB_SEARCH,
    ),
    # §1.1 Haiku 4.5: 1 / 5, writes 1.25 / 2, read 0.10.
    "claude-haiku-4-5-20251001": ModelPrice(
        "claude-haiku-4-5-20251001",
        _rates("1", "5", "0.10", "1.25", "2"),
        web_search_per_request=_WEB_SEARCH,
    ),
    # §1.2 gpt-5 and gpt-5-codex: 1.25 in, 0.125 cached, 10 out; no cache-write class.
    "gpt-5": ModelPrice("gpt-5", _rates("1.25", "10.00", "0.125", None, None)),
    "gpt-5-codex": ModelPrice("gpt-5-codex", _rates("1.25", "10.00", "0.125", None, None)),
    # §1.3 Gemini 2.5 Pro: ≤200K 1.25 / 10, cache read 0.125; >200K 2.50 / 15, read 0.25.
    "gemini-2.5-pro": ModelPrice(
        "gemini-2.5-pro",
        _rates("1.25", "10.00", "0.125", None, None),
        long_context=_rates("2.50", "15.00", "0.25", None, None),
    ),
    # §1.4 DeepSeek V4 Flash (2026-04 on): miss 0.14, hit 0.0028, out 0.28; writes not billed.
    "deepseek-v4-flash": ModelPrice(
        "deepseek-v4-flash",
        _rates("0.14", "0.28", "0.0028", None, None),
        valid_from=date(2026, 5, 1),
    ),
    # §1.4 GLM-4.6 (Z.ai international): 0.60 / 0.11 cached / 2.20; cache writes free.
    "glm-4.6": ModelPrice("glm-4.6", _rates("0.60", "2.20", "0.11", "0", "0")),
}

# Names the agents log for the same models.
ALIASES: dict[str, str] = {
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",  # OpenCode (models.dev id)
    "claude-4.5-sonnet": "claude-sonnet-4-5-20250929",  # Cursor usage CSV
}


def lookup(model: str) -> ModelPrice | None:
    """The list price of a model as logged, or None when it has none (priced as unknown)."""
    return PRICES.get(ALIASES.get(model, model))


def call_cost(model: str, tokens: Tokens, at: datetime) -> Decimal | None:
    """Exact API-equivalent cost of one call, or None for a model without a list price."""
    price = lookup(model)
    if price is None:
        return None
    day = at.astimezone(UTC).date()
    if price.valid_from is not None and day < price.valid_from:
        raise ValueError(f"no list price for {model} on {day} in the generator's table")
    rates = price.standard
    if price.long_context is not None and tokens.prompt > price.threshold:
        rates = price.long_context
    with localcontext() as ctx:
        ctx.prec = 60
        total = (
            tokens.input * rates.input
            + (tokens.output + tokens.reasoning) * rates.output
            + tokens.cache_read * rates.cache_read
            + _write(tokens.cache_write_5m, rates.cache_write_5m, model)
            + _write(tokens.cache_write_1h, rates.cache_write_1h, model)
        ) / MTOK
        total += tokens.web_search_requests * price.web_search_per_request
    return total


def is_long_context(model: str, tokens: Tokens) -> bool:
    price = lookup(model)
    return bool(price and price.long_context is not None and tokens.prompt > price.threshold)


def _write(count: int, rate: Decimal | None, model: str) -> Decimal:
    if count == 0:
        return Decimal(0)
    if rate is None:
        raise ValueError(f"{model} has no cache-write price but a call wrote {count} tokens")
    return count * rate


def price_table() -> dict[str, dict[str, object]]:
    """The table as plain data, written into truth.json so a reader sees what was assumed."""

    def rates(r: Rates) -> dict[str, str | None]:
        return {
            "input": str(r.input),
            "output": str(r.output),
            "cache_read": str(r.cache_read),
            "cache_write_5m": None if r.cache_write_5m is None else str(r.cache_write_5m),
            "cache_write_1h": None if r.cache_write_1h is None else str(r.cache_write_1h),
        }

    table: dict[str, dict[str, object]] = {}
    for name, p in PRICES.items():
        table[name] = {
            "per_mtok": rates(p.standard),
            "long_context_per_mtok": None if p.long_context is None else rates(p.long_context),
            "long_context_above_prompt_tokens": p.threshold if p.long_context else None,
            "valid_from": None if p.valid_from is None else p.valid_from.isoformat(),
            "web_search_per_request": str(p.web_search_per_request),
            "aliases": sorted(a for a, t in ALIASES.items() if t == name),
        }
    return table
