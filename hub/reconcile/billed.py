"""The provider's side per (day, model, key): its tokens, and its dollars shared out to keys.

A cost report knows dollars per workspace or project, model and token class, not per key; the
usage report knows each key's tokens per class. A class's dollars are shared among the keys of
its workspace and model in proportion to their tokens of that class, which is exact wherever
the provider charges one rate per class: where it names a rate tier (Anthropic's context window
and service tier), only the keys of that tier share its dollars (all the model's keys when
the usage names no such tier). Web search is shared by search
requests. A cost no usage explains (code execution, a class with no tokens) stays a row of its
own with no key.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, localcontext
from typing import Final

from hub.reconcile.fleet import RowKey
from hub.reconcile.model import (
    CLASSES,
    WEB_SEARCH,
    CostLine,
    ProviderReport,
    UsageLine,
    billed_tokens,
)
from shared.events import Tokens

NO_KEY: Final = "-"  # usage without a key (Anthropic's Workbench), costs no key explains


@dataclass(slots=True)
class BilledFigure:
    tokens: Tokens = field(default_factory=Tokens)  # reasoning inside output
    by_class: dict[str, Decimal] = field(default_factory=dict)  # CLASSES and WEB_SEARCH
    other: list[str] = field(default_factory=list)  # labels of costs kept on a keyless row
    # what an imported bill charged in another currency, as charged, and the rates that made
    # dollars of it ("CNY 7.2345/USD on 2026-11-30"): never mixed in unsaid
    original: dict[str, Decimal] = field(default_factory=dict)
    rates: set[str] = field(default_factory=set)

    @property
    def usd(self) -> Decimal:
        return sum(self.by_class.values(), Decimal(0))

    def add(self, token_class: str, amount: Decimal) -> None:
        self.by_class[token_class] = self.by_class.get(token_class, Decimal(0)) + amount


def _weight(line: UsageLine, token_class: str) -> int:
    if token_class == WEB_SEARCH:
        return line.tokens.web_search_requests
    return billed_tokens(line.tokens)[token_class]


def billed_figures(report: ProviderReport) -> dict[RowKey, BilledFigure]:
    figures: dict[RowKey, BilledFigure] = {}
    by_scope: dict[tuple[date, str | None], list[UsageLine]] = defaultdict(list)
    for line in report.usage:
        figure = figures.setdefault(
            _key(report.provider, line.day, line.model, line.key), BilledFigure()
        )
        figure.tokens = figure.tokens + line.tokens
        by_scope[(line.day, line.scope)].append(line)
    for cost in report.costs:
        _share(report.provider, cost, by_scope[(cost.day, cost.scope)], figures)
    return figures


def _key(provider: str, day: date, model: str, key: str | None) -> RowKey:
    return (provider, day, model, key or NO_KEY)


def _share(
    provider: str, cost: CostLine, lines: list[UsageLine], figures: dict[RowKey, BilledFigure]
) -> None:
    cls = cost.token_class
    if cls in CLASSES or cls == WEB_SEARCH:
        assert cls is not None
        of_model = [line for line in lines if cost.model in (None, line.model)]
        of_tier = [line for line in of_model if cost.tier in (None, line.tier)]
        # the tier's keys; all the model's when the usage names no such tier
        for sharing in (of_tier, of_model):
            weights = [(line, _weight(line, cls)) for line in sharing]
            if total := sum(w for _, w in weights):
                with localcontext() as ctx:
                    ctx.prec = 40
                    for line, weight in weights:
                        if weight:
                            key = _key(provider, line.day, line.model, line.key)
                            figures[key].add(cls, cost.amount * weight / total)
                return
    keyless = figures.setdefault(
        _key(provider, cost.day, cost.model or cost.label, None), BilledFigure()
    )
    keyless.add(cls or "other", cost.amount)
    keyless.other.append(cost.label)
