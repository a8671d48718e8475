"""Model names as agents log them → the one table entry they mean.

Names are first normalised (case, provider prefixes, Bedrock and Vertex id shapes, date
snapshots, `-latest`, Cursor's `claude-4.5-sonnet` word order) and then looked up EXACTLY. There
is no prefix or fuzzy matching: `claude-sonnet-4` can never swallow `claude-sonnet-4-5`, and a
name the tables do not list stays unknown instead of borrowing a neighbour's price.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final

import msgspec

from pricing._types import ModelEntry, ProviderTable

# Bedrock: optional cross-region prefix, then the vendor (`us.anthropic.claude-…-v1:0`).
_BEDROCK: Final = re.compile(
    r"^(?:(?:us|eu|apac|global|jp|au|ca|us-gov|sa|me|af|mx)\.)?"
    r"(?P<vendor>anthropic|openai|deepseek|qwen|meta|amazon|mistral|cohere|google)\.(?P<rest>.+)$"
)
_BEDROCK_VERSION: Final = re.compile(r"(?:-v\d+)?(?::\d+)?$")
_DATE: Final = re.compile(r"-(?:20\d{6}|20\d{2}-\d{2}-\d{2})$")
_CLAUDE_VERSION_FIRST: Final = re.compile(
    r"^claude-(?P<major>\d+)(?:-(?P<minor>\d+))?-(?P<family>opus|sonnet|haiku|fable|mythos)(?P<rest>-.*)?$"
)
# Claude 3.x ids put the version first (`claude-3-5-haiku`); from 4 on the family comes first.
_FAMILY_FIRST_FROM: Final = 4


class Normalised(msgspec.Struct, frozen=True):
    name: str
    hints: tuple[str, ...]  # provider words seen in the raw name (`openrouter/anthropic/…`)


def normalise(raw: str) -> Normalised:
    """The canonical spelling of a logged model name, plus provider hints found on the way."""
    name = raw.strip().lower()
    hints: list[str] = []
    if "/" in name:  # provider prefixes: anthropic/…, openrouter/anthropic/…, models/…
        parts = [p for p in name.split("/") if p]
        hints.extend(parts[:-1])
        name = parts[-1] if parts else ""
    name = name.removesuffix("[1m]")  # Claude Code's 1M-context marker, same model and price
    name = name.split("@", 1)[0]  # Vertex: claude-sonnet-4-5@20250929
    bedrock = _BEDROCK.match(name)
    if bedrock:
        hints.append(bedrock["vendor"])
        name = bedrock["rest"]
    if bedrock or re.search(r":\d+$", name):
        name = _BEDROCK_VERSION.sub("", name)  # -v1:0, and Opus 4.6's bare -v1
    previous = None
    while previous != name:  # suffixes can stack: claude-…-20250929-thinking
        previous = name
        name = _DATE.sub("", name).removesuffix("-latest")
        if name.startswith("claude-"):
            name = _claude(name.removesuffix("-thinking"))
    return Normalised(name, tuple(hints))


def _claude(name: str) -> str:
    name = name.replace(".", "-")  # claude-sonnet-4.5 → claude-sonnet-4-5
    m = _CLAUDE_VERSION_FIRST.match(name)
    if m and int(m["major"]) >= _FAMILY_FIRST_FROM:  # Cursor: claude-4.5-sonnet
        version = m["major"] + (f"-{m['minor']}" if m["minor"] else "")
        return f"claude-{m['family']}-{version}{m['rest'] or ''}"
    return name


class Resolution(msgspec.Struct, frozen=True):
    entry: ModelEntry | None
    notes: tuple[str, ...] = ()
    ambiguous: bool = False


class ModelIndex:
    """Exact lookup of normalised names across all provider tables."""

    def __init__(self, tables: Sequence[ProviderTable]) -> None:
        self._order = [t.provider for t in tables]
        self._by_name: dict[str, list[ModelEntry]] = {}
        self._labels: dict[str, str] = {}
        self._provider_words: dict[str, str] = {}
        for table in tables:
            for word in (table.provider, *table.aliases):
                self._provider_words.setdefault(word, table.provider)
            for label in table.labels:
                self._labels[label.name] = label.note
            for entry in table.models:
                for name in entry.names:
                    self._by_name.setdefault(name, []).append(entry)

    def _providers(self, words: Iterable[str]) -> set[str]:
        return {self._provider_words[w] for w in words if w in self._provider_words}

    def resolve(self, raw: str, provider: str | None = None) -> Resolution:
        low = raw.strip().lower()
        if low in self._labels:
            return Resolution(None, (self._labels[low],))
        norm = normalise(raw)
        if norm.name in self._labels:
            return Resolution(None, (self._labels[norm.name],))
        candidates = self._by_name.get(norm.name, [])
        if not candidates:
            shown = f"{raw!r}" if norm.name == low else f"{raw!r} (read as {norm.name!r})"
            return Resolution(None, (f"no price is known for model {shown}",))
        if len(candidates) == 1:
            return Resolution(candidates[0])
        # The same name in several provider tables: the hint decides, never a guess by order
        # alone unless nothing points anywhere.
        for words in ((provider.strip().lower(),) if provider else (), norm.hints):
            wanted = self._providers(words)
            chosen = [c for c in candidates if c.provider in wanted]
            if len(chosen) == 1:
                return Resolution(chosen[0])
        first = min(candidates, key=lambda c: self._order.index(c.provider))
        others = ", ".join(sorted(c.provider for c in candidates if c is not first))
        note = (
            f"model {raw!r} is listed by several providers; priced as {first.provider} "
            f"(also in: {others}); give the provider to settle it"
        )
        return Resolution(first, (note,), ambiguous=True)
