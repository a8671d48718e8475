"""What a provider's reports say, in one shape whatever the provider.

A provider reports tokens per key (its usage report) and dollars per workspace or project
(its cost report, which has no key). Both are per UTC day. `UsageLine.scope` and
`CostLine.scope` are that workspace or project, the level at which dollars are known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Final

from shared.events import Tokens

# The token classes a provider bills apart (reasoning is billed as output).
CLASSES: Final = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
WEB_SEARCH: Final = "web_search"


class ConnectorError(Exception):
    """A provider's report could not be had: the message says why and what to do."""


def billed_tokens(tokens: Tokens) -> dict[str, int]:
    """Tokens per billed class: output and reasoning together, as providers bill them."""
    return {
        "input": tokens.input,
        "output": tokens.output + tokens.reasoning,
        "cache_read": tokens.cache_read,
        "cache_write_5m": tokens.cache_write_5m,
        "cache_write_1h": tokens.cache_write_1h,
    }


@dataclass(frozen=True, slots=True)
class UsageLine:
    day: date  # UTC
    key: str | None  # the API key id; None where the provider has none (e.g. Workbench)
    scope: str | None  # workspace (Anthropic) or project (OpenAI); None: the default one
    model: str
    tokens: Tokens  # reasoning is part of `output` here: providers bill it as output
    tier: str | None = None  # where one model has several rates: "200k-1M batch" (Anthropic)


@dataclass(frozen=True, slots=True)
class CostLine:
    day: date  # UTC
    scope: str | None
    model: str | None  # None for lines no model bills (web search, code execution)
    token_class: str | None  # one of CLASSES, WEB_SEARCH, or None (anything else)
    amount: Decimal  # USD, exact
    label: str  # the provider's description or line item
    tier: str | None = None  # as UsageLine.tier; None: the cost report does not say


@dataclass(slots=True)
class ProviderReport:
    provider: str
    usage: list[UsageLine] = field(default_factory=list)
    costs: list[CostLine] = field(default_factory=list)
    partial_days: set[date] = field(default_factory=set)  # a bucket still open when fetched
