"""`PriceBook`: the loaded tables, name resolution and the engine behind one small API."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Hashable, Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache, lru_cache
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Final, Generic, TypeVar

import msgspec

from pricing._classes import Billing, CostClass, PricedCall, classify
from pricing._engine import Counts, RatePlan, rate_plan
from pricing._installed import installed_files, overlay, prices_dir, read_installed
from pricing._match import ModelIndex
from pricing._tables import PriceTableError, load_directory, load_package
from pricing._types import TOKEN_CLASSES, ModelEntry, PricePeriod, ProviderTable, Tier
from shared.events import Tokens, UsageEvent

# Distinct price terms a book keeps (a handful in practice; garbage tier names must not grow it).
_MAX_TERMS: Final = 4096
# Epoch seconds that datetime.fromtimestamp takes (years 1 to 9999), kept well inside.
_FIRST_INSTANT: Final = -62_000_000_000.0
_LAST_INSTANT: Final = 253_000_000_000.0
# Closer than this to a period's start, an instant is compared as a datetime, as `at` does.
_NEAR: Final = 0.001


class PriceBook:
    """Effective-dated prices for every model in a set of provider tables."""

    def __init__(self, tables: Sequence[ProviderTable]) -> None:
        self._tables = tuple(tables)
        self._index = ModelIndex(self._tables)
        # A fleet logs a handful of model names millions of times: resolve each name once.
        self._resolve = lru_cache(maxsize=4096)(self._index.resolve)
        # ... and price them under a handful of distinct terms: build each once.
        self._terms: dict[tuple[object, ...], Terms] = {}
        # Each entry's period starts as epoch seconds (entries live as long as the book).
        self._starts: dict[int, tuple[float, ...]] = {}
        # Each kind of call's terms over its latest price period (`CallBatch`): shared by the
        # batches, so that a scan's per-file batches look each kind's period up once.
        self._spans: dict[Kind, _Span] = {}

    @classmethod
    def default(cls) -> PriceBook:
        """The tables shipped in `pricing/tables/` with the user's installed ones over them
        (`fleet-hub prices install`), loaded once per process."""
        return _default_book()

    @classmethod
    def reload_default(cls) -> PriceBook:
        """`default()` read again (after `fleet-hub prices install`, say)."""
        _default_book.cache_clear()
        return _default_book()

    @classmethod
    def load(cls, directory: Path) -> PriceBook:
        """Every `*.toml` in `directory`; raises `PriceTableError` naming the file and key."""
        return cls(load_directory(Path(directory)))

    @property
    def tables(self) -> tuple[ProviderTable, ...]:
        return self._tables

    def models(self) -> list[ModelEntry]:
        return [m for t in self._tables for m in t.models]

    def lookup(self, model: str, at: datetime, provider: str | None = None) -> PricePeriod | None:
        """The price period that applies to `model` at the instant `at` (timezone-aware)."""
        if at.tzinfo is None:
            raise ValueError(
                "lookup needs a timezone-aware instant (e.g. datetime(..., tzinfo=UTC))"
            )
        entry = self._resolve(model, provider).entry
        return entry.at(at.astimezone(UTC)) if entry is not None else None

    def price(self, event: UsageEvent, billing: Billing = Billing.API) -> PricedCall:
        terms = self.terms(event)
        if isinstance(terms, PricedCall):
            return terms
        return terms.price(event, billing)

    def terms(self, event: UsageEvent) -> Terms | PricedCall:
        """What fixes the price of `event` apart from its counts; the (unknown) `PricedCall`
        when there is no price for it."""
        return self.terms_for(
            event.model,
            event.provider,
            event.ts,
            _COUNTS(event.tokens),
            event.service_tier,
            event.speed,
            event.inference_geo,
        )

    def terms_for(
        self,
        model: str,
        provider: str | None,
        ts: float,
        counts: Counts,
        service_tier: str | None = None,
        speed: str | None = None,
        inference_geo: str | None = None,
    ) -> Terms | PricedCall:
        """`terms` of a call given by its fields, `counts` in the order of `Tokens`' fields: a
        reader that has no `UsageEvent` need not build one to price a call."""
        resolution = self._resolve(model, provider)
        entry = resolution.entry
        if entry is None:
            return _unknown(None, resolution.notes)
        problem = _bad_counts(counts)
        if problem:
            return _unknown(entry.id, (problem,))
        period = self._period_at(entry, ts)
        if isinstance(period, str):
            return _unknown(entry.id, (period,))
        if period is None:
            first = entry.periods[0].start
            at = datetime.fromtimestamp(ts, UTC)  # a valid instant: else `period` is why not
            if first <= at:  # after a period that ends (`until`) and before the next
                return _unknown(entry.id, (f"no price for {entry.id} on {at.date()}",))
            return _unknown(
                entry.id, (f"no price for {entry.id} before {first.isoformat()} (its first price)",)
            )
        cliff = (
            period.tier_for(counts[0] + counts[2] + counts[3] + counts[4]) if period.tiers else None
        )
        # Entries, periods and cliffs live as long as the book: their ids are stable keys.
        key = (
            id(entry),
            resolution.ambiguous,
            resolution.notes,
            id(period),
            id(cliff),
            service_tier,
            speed,
            inference_geo,
        )
        terms = self._terms.get(key)
        if terms is None:
            if len(self._terms) >= _MAX_TERMS:
                self._terms.clear()
            plan = rate_plan(
                period,
                cliff,
                service_tier=service_tier,
                speed=speed,
                inference_geo=inference_geo,
            )
            terms = Terms(entry.id, plan, resolution.ambiguous, resolution.notes)
            self._terms[key] = terms
        return terms

    def span_at(
        self, model: str, provider: str | None, ts: float
    ) -> tuple[float, float, PricePeriod] | None:
        """An open interval around `ts` in which every instant finds, by epoch seconds alone,
        the price period `ts` finds (`_period_at`), kept clear of the datetime comparisons near
        a period's start, and that period; None where there is no such interval (no price
        then, a period that ends)."""
        entry = self._resolve(model, provider).entry
        if entry is None or not _FIRST_INSTANT < ts < _LAST_INSTANT:  # False for NaN
            return None
        self._period_at(entry, ts)  # fills `_starts`
        starts = self._starts[id(entry)]
        i = bisect_right(starts, ts)
        if not i:  # no starts (`_period_at` then compares datetimes), or before the first
            return None
        # twice the margin `_period_at` keeps, so that rounding cannot put an instant inside
        low = starts[i - 1] + 2 * _NEAR
        high = starts[i] - 2 * _NEAR if i < len(starts) else _LAST_INSTANT
        return (low, high, entry.periods[i - 1]) if low < ts < high else None

    def _period_at(self, entry: ModelEntry, ts: float) -> PricePeriod | None | str:
        """`entry.at` the instant `ts`, or why `ts` is no instant. Compared as epoch seconds,
        without a datetime per call, unless `ts` lies within a millisecond of a period's start
        (where the microsecond rounding of a datetime could tell otherwise) or out of range."""
        starts = self._starts.get(id(entry))
        if starts is None:
            starts = tuple(p.start.timestamp() for p in entry.periods)
            if list(starts) != sorted(starts) or not _contiguous(entry.periods):
                # a period that ends before the next begins (an installed table may leave such
                # a gap with no price): the datetime path still answers
                starts = ()
            self._starts[id(entry)] = starts
        if starts and _FIRST_INSTANT < ts < _LAST_INSTANT:  # False for NaN
            i = bisect_right(starts, ts)
            near = (i < len(starts) and starts[i] - ts < _NEAR) or (
                i and ts - starts[i - 1] < _NEAR
            )
            if not near:
                return entry.periods[i - 1] if i else None
        try:
            at = datetime.fromtimestamp(ts, UTC)
        except (OverflowError, OSError, ValueError):  # NaN, infinities, years out of range
            return f"the event time {ts!r} is not a valid instant"
        return entry.at(at)


class Terms(msgspec.Struct, frozen=True, eq=False):
    """A call's price terms: its canonical model and rate plan, and how its name resolved."""

    model_id: str
    plan: RatePlan
    ambiguous: bool  # the name matched several providers' models
    notes: tuple[str, ...]  # about the name

    def price(self, event: UsageEvent, billing: Billing) -> PricedCall:
        q = self.plan.quote(event.tokens, event.cache_write_unsplit)
        return self.priced(q.amount, q.estimated, billing, self.notes + q.notes)

    def estimated_for(self, event: UsageEvent) -> bool:
        return self.ambiguous or self.plan.estimated_for(event.tokens, event.cache_write_unsplit)

    def priced(
        self, amount: Decimal, estimated: bool, billing: Billing, notes: tuple[str, ...] = ()
    ) -> PricedCall:
        estimated = estimated or self.ambiguous
        return PricedCall(
            api_equivalent=amount,
            cost_class=classify(priced=True, estimated=estimated, billing=billing),
            model_id=self.model_id,
            estimated=estimated,
            notes=notes,
        )


class _Span:
    """Within one price period (epoch seconds `low` < ts < `high`) of one kind of call: its
    terms per long-context cliff crossed (-1: none), as `terms_for` gave them."""

    __slots__ = ("by_cliff", "high", "low", "thresholds")

    def __init__(self, low: float, high: float, tiers: Sequence[Tier]) -> None:
        self.low = low
        self.high = high
        self.thresholds = tuple(tier.above for tier in tiers)
        self.by_cliff: dict[int, Terms] = {}

    def cliff_of(self, counts: Counts) -> int:
        """The index of the tier `PricePeriod.tier_for` picks for `counts` (-1: none)."""
        crossed = -1
        if self.thresholds:
            prompt = counts[0] + counts[2] + counts[3] + counts[4]
            for i, above in enumerate(self.thresholds):
                if prompt > above:
                    crossed = i
        return crossed

    def terms_of(self, counts: Counts) -> Terms | None:
        return self.by_cliff.get(self.cliff_of(counts))


class _Group(msgspec.Struct):
    calls: int = 0
    counts: list[tuple[int, ...]] = msgspec.field(default_factory=list)


G = TypeVar("G", bound=Hashable)
# What, besides its time and counts, finds a call's terms: model, provider, service tier, speed
# and inference geography.
Kind = tuple[str, str | None, str | None, str | None, str | None]

# A call's counts in the order of Tokens' fields, so that Tokens(*sums) rebuilds them.
_COUNT_FIELDS: Final = Tokens.__struct_fields__
_COUNTS: Final = attrgetter(*_COUNT_FIELDS)
# A call's prompt (what long-context cliffs weigh) as the counts summed: input, cache read and
# both cache writes, as `PricePeriod.tier_for` is given it.
_PROMPT: Final = itemgetter(0, 2, 3, 4)


class CallBatch(Generic[G]):
    """Many calls priced together: the calls that share a group (a report row, say), price terms,
    estimated flag and billing are priced as one sum of their counts. That is exact, since under
    fixed terms an amount is linear in the counts, and it costs a dict lookup per call instead
    of a price computation. Notes are not kept (a report has no use for them)."""

    def __init__(self, book: PriceBook) -> None:
        self._book = book
        self._groups: dict[tuple[G, Terms, bool, Billing], _Group] = {}
        # A log's calls share a handful of (model, provider, tier, speed, geo) and each keeps
        # its terms over a whole price period: once a call's period span is known, a call of
        # the same kind inside it needs only a range check and its long-context cliff.
        self._spans = book._spans

    def add(self, group: G, event: UsageEvent, billing: Billing) -> PricedCall | None:
        """Count `event` into `group`; returns its `PricedCall` at once when no price is known
        for it (such calls have no figure to sum), else None."""
        return self.add_counts(
            group,
            event.model,
            event.provider,
            event.ts,
            _COUNTS(event.tokens),
            billing,
            service_tier=event.service_tier,
            speed=event.speed,
            inference_geo=event.inference_geo,
            cache_write_unsplit=event.cache_write_unsplit,
        )

    def add_counts(
        self,
        group: G,
        model: str,
        provider: str | None,
        ts: float,
        counts: Counts,
        billing: Billing,
        *,
        service_tier: str | None = None,
        speed: str | None = None,
        inference_geo: str | None = None,
        cache_write_unsplit: bool = False,
    ) -> PricedCall | None:
        """`add` for a call given by its fields (`counts` in the order of `Tokens`' fields)."""
        kind = (model, provider, service_tier, speed, inference_geo)
        span = self._spans.get(kind)
        terms: Terms | None = None
        if span is not None and span.low < ts < span.high and _healthy(counts):
            terms = span.terms_of(counts)
        if terms is None:
            found_terms = self._book.terms_for(
                model, provider, ts, counts, service_tier, speed, inference_geo
            )
            if isinstance(found_terms, PricedCall):
                return found_terms
            terms = found_terms
            self._learn(kind, ts, counts, terms)
        estimated = terms.ambiguous or terms.plan.estimated_for_counts(counts, cache_write_unsplit)
        key = (group, terms, estimated, billing)
        found = self._groups.get(key)
        if found is None:
            found = self._groups[key] = _Group()
        found.calls += 1
        found.counts.append(counts)
        return None

    def add_alike(
        self,
        group: G,
        kind: Kind,
        stamps: Sequence[float],
        counts: Sequence[Counts],
        billing: Billing,
        cache_write_unsplit: bool = False,
    ) -> bool:
        """`add_counts` of calls that share `group`, `kind` (model, provider, service tier,
        speed, inference geography) and `cache_write_unsplit`, given by their times and counts:
        where one price period holds them all, each cliff's calls are priced by their summed
        counts, with no per-call lookup. Exact: the same terms and estimated flag per call as
        `add_counts` (a count class is non-zero in some call exactly when its sum is), and so
        the same groups and sums. False, with nothing counted, when a call has no price: the
        caller adds them one by one to get each one's unknown `PricedCall`."""
        if not counts:
            return True
        span = self._span_over(kind, stamps, counts)
        if span is None:
            return self._add_each(group, kind, stamps, counts, billing, cache_write_unsplit)
        by_cliff: dict[int, list[Counts]] = {}
        thresholds = span.thresholds
        if thresholds and max(map(sum, map(_PROMPT, counts))) > min(thresholds):
            cliff_of = span.cliff_of
            for call in counts:
                by_cliff.setdefault(cliff_of(call), []).append(call)
        else:  # no call's prompt above any cliff
            by_cliff[-1] = list(counts)
        priced: list[tuple[Terms, list[Counts]]] = []
        for cliff, calls in by_cliff.items():
            terms = span.by_cliff.get(cliff)
            if terms is None:  # any instant of the span finds its period
                found = self._book.terms_for(kind[0], kind[1], stamps[0], calls[0], *kind[2:])
                if isinstance(found, PricedCall):
                    return False
                terms = span.by_cliff[cliff] = found
            priced.append((terms, calls))
        for terms, calls in priced:
            self._count_alike(group, terms, calls, billing, cache_write_unsplit)
        return True

    def _span_over(
        self, kind: Kind, stamps: Sequence[float], counts: Sequence[Counts]
    ) -> _Span | None:
        """The span of one price period holding every stamp, with healthy counts all (else
        None: the calls are priced one by one)."""
        if not _all_healthy(counts):
            return None
        first, last = min(stamps), max(stamps)
        span = self._spans.get(kind)
        if span is None or not span.low < first or not last < span.high:
            found = self._book.terms_for(kind[0], kind[1], stamps[0], counts[0], *kind[2:])
            if isinstance(found, PricedCall):
                return None
            self._learn(kind, stamps[0], counts[0], found)
            span = self._spans.get(kind)
            if span is None or not span.low < first or not last < span.high:
                return None
        return span

    def _add_each(
        self,
        group: G,
        kind: Kind,
        stamps: Sequence[float],
        counts: Sequence[Counts],
        billing: Billing,
        cache_write_unsplit: bool,
    ) -> bool:
        """`add_alike` one call at a time (calls across price periods, odd counts)."""
        model, provider, service_tier, speed, inference_geo = kind
        terms_of = self._book.terms_for
        found = [
            terms_of(model, provider, ts, call, service_tier, speed, inference_geo)
            for ts, call in zip(stamps, counts, strict=True)
        ]
        if any(isinstance(terms, PricedCall) for terms in found):
            return False
        for terms, call in zip(found, counts, strict=True):
            assert isinstance(terms, Terms)
            self._count_alike(group, terms, [call], billing, cache_write_unsplit)
        return True

    def _count_alike(
        self,
        group: G,
        terms: Terms,
        calls: list[Counts],
        billing: Billing,
        cache_write_unsplit: bool,
    ) -> None:
        """Count calls priced under `terms` into their groups, as their sums where the
        estimated flag is the same for all (it is for nearly every log)."""
        sums = tuple(map(sum, zip(*calls, strict=True)))
        estimated_for = terms.plan.estimated_for_counts
        if terms.ambiguous or not estimated_for(sums, cache_write_unsplit):
            # Ambiguous: every call estimated. Else no call has a count the flag looks at.
            split = {terms.ambiguous: (len(calls), sums)}
        else:
            flagged: dict[bool, list[Counts]] = {}
            for call in calls:
                flagged.setdefault(estimated_for(call, cache_write_unsplit), []).append(call)
            split = {
                estimated: (len(some), tuple(map(sum, zip(*some, strict=True))))
                for estimated, some in flagged.items()
            }
        for estimated, (calls_in, summed) in split.items():
            key = (group, terms, estimated, billing)
            found = self._groups.get(key)
            if found is None:
                found = self._groups[key] = _Group()
            found.calls += calls_in
            found.counts.append(summed)

    def _learn(
        self,
        kind: Kind,
        ts: float,
        counts: Counts,
        terms: Terms,
    ) -> None:
        """Remember the span of the period `terms` came from, and `terms` for the cliff of
        `counts`, so the next calls of this kind in that period skip `terms_for`."""
        span = self._spans.get(kind)
        if span is None or not span.low < ts < span.high:
            bounds = self._book.span_at(kind[0], kind[1], ts)
            if bounds is None:
                return
            if len(self._spans) >= _MAX_TERMS:  # garbage tier names must not grow it
                self._spans.clear()
            low, high, period = bounds
            span = self._spans[kind] = _Span(low, high, period.tiers)
        span.by_cliff[span.cliff_of(counts)] = terms

    def settle(self) -> Iterator[tuple[G, int, Tokens, PricedCall]]:
        """(group, calls, summed tokens, their price) for each priced group; then empty."""
        groups, self._groups = self._groups, {}
        for (group, terms, estimated, billing), found in groups.items():
            tokens = Tokens(*map(sum, zip(*found.counts, strict=True)))
            amount = terms.plan.amount(tokens)
            yield group, found.calls, tokens, terms.priced(amount, estimated, billing)


def _unknown(model_id: str | None, notes: tuple[str, ...]) -> PricedCall:
    return PricedCall(
        api_equivalent=None,
        cost_class=CostClass.UNKNOWN,
        model_id=model_id,
        estimated=False,
        notes=notes,
    )


_COUNTED: Final = (*TOKEN_CLASSES, "web_search_requests")
_COUNTED_AT: Final = tuple(_COUNT_FIELDS.index(name) for name in _COUNTED)
_ALL_INT: Final = (int,) * len(_COUNT_FIELDS)


def _contiguous(periods: Sequence[PricePeriod]) -> bool:
    """Each period ends where the next begins, the last never: `ModelEntry.at` then finds
    the period of the latest start at or before an instant, as a bisection of starts does."""
    ends = [p.end for p in periods]
    return (
        bool(ends)
        and ends[-1] is None
        and all(
            end is None or end == after.start for end, after in zip(ends, periods[1:], strict=False)
        )
    )


def _all_healthy(counts: Sequence[Counts]) -> bool:
    """`_healthy` of every call, checked over all their counts at once."""
    flat = [count for call in counts for count in call]
    return (
        set(map(len, counts)) == {len(_COUNT_FIELDS)}
        and set(map(type, flat)) == {int}
        and min(flat) >= 0
    )


def _healthy(counts: Counts) -> bool:
    """Every count a non-negative int (`_bad_counts` finds nothing)."""
    return tuple(map(type, counts)) == _ALL_INT and min(counts) >= 0


def _bad_counts(counts: Counts) -> str | None:
    # A figure from impossible input would look precise and be wrong: report it as unknown.
    if tuple(map(type, counts)) == _ALL_INT and min(counts) >= 0:
        return None  # every call of a healthy log
    for name, at in zip(_COUNTED, _COUNTED_AT, strict=True):
        value = counts[at]
        if not isinstance(value, int) or value < 0:
            return f"the {name} count {value!r} is not a non-negative whole number"
    return None


@cache
def _default_book() -> PriceBook:
    return PriceBook(default_tables())


def default_tables() -> list[ProviderTable]:
    """The shipped tables with this user's installed ones over them (`pricing._installed`).
    A broken installed folder (a file edited by hand) is logged, named, and left out: the
    shipped prices stand rather than no prices at all."""
    shipped = load_package()
    directory = prices_dir()
    if not installed_files(directory):
        return shipped
    try:
        return overlay(shipped, read_installed(directory))
    except PriceTableError as exc:
        import logging  # only here: logging costs every priced scan ~2 ms to import

        logging.getLogger(__name__).error("installed price tables left out: %s", exc)
        return shipped
