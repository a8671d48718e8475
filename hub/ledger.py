"""The ledger: prices each usage event, gives it one cost class, keeps running totals in memory.

Totals are kept per calendar day (in the ledger's time zone) and per scope: the fleet, each
machine, profile ("machine/profile"), account, agent, project, session and model. "This week"
(ISO) and "this month" are the sums of their days, so a call costs one update per scope, and a
midnight needs no restart: "today" is always the day of `now()`, and days that no current
period covers are dropped as the clock moves on. A per-minute series for the last few hours
(fleet, machines, profiles) gives sparklines and the $/h burn rate. `apply_all` takes a batch:
its calls are summed by the scopes they share first, so each scope is updated once per batch
(an ingested batch of 500 calls touches a few dozen), with the same exact sums.

The class comes from the profile's billing (`billing_of(machine, profile)`); a call with no
profile, or one `billing_of` does not know, is API (metered). `billing_of` and the price book
must stay fixed between `apply` calls: figures are subtracted as they were added, so when
either changes (a hello changes a profile's billing, a new price table), call `rebuild`.

A price-table problem never stops the ledger: a call that cannot be priced stays unknown.
Not thread-safe: one owner (the hub service) calls it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import Decimal, localcontext
from enum import StrEnum
from typing import Final, TypeVar

from hub._pricing import safe_price
from hub._rollup import Cell, MinuteCell, cell_totals, cost_class, totals_of
from hub._runrate import FLEET, MinutePoint, RunRate, Scope
from hub._sessions import SessionBook, SessionFigures, session_key
from hub._totals import MONEY, Basis, Totals
from hub.model import Change, Price, Redraw
from pricing import PriceBook, PricedCall
from pricing.sdk_credit import Moved
from shared.config import Billing
from shared.events import Role, Tokens, UsageEvent
from shared.session_rates import RUN_RATE_WINDOW, run_rate_per_hour

__all__ = [
    "FLEET",
    "Basis",
    "Dimension",
    "Ledger",
    "MinutePoint",
    "Period",
    "Scope",
    "SessionFigures",
    "Totals",
    "profile_key",
]

BillingOf = Callable[[str, str], Billing]
# what the Agent SDK credit moved of a call in a minute: (minute, machine, profile, whether its
# price is estimated, the move), for the run rate at start-up (`Store.credit_minute_moves`)
MinuteMove = tuple[int, str, str, bool, Moved]
MIN_COVERED_S: Final = 60  # a rate is never taken over less time than this


class Period(StrEnum):
    TODAY = "today"
    WEEK = "week"  # ISO week, Monday first
    MONTH = "month"


class Dimension(StrEnum):
    """Scopes the ledger totals by; the names are `pricing.rollup.GROUP_KEYS` names."""

    MACHINE = "machine"
    PROFILE = "profile"  # key: "machine/profile", a profile name is unique on its machine only
    ACCOUNT = "account"
    AGENT = "agent"
    PROJECT = "project"
    SESSION = "session"
    MODEL = "model"


def profile_key(machine: str, profile: str) -> str:
    return f"{machine}/{profile}"


_DIMENSIONS = tuple(Dimension)  # the order of `_Day.tables` and of `_keys`


@dataclass(slots=True)
class _Day:
    fleet: Totals = field(default_factory=Totals)
    # one table per dimension, in `_DIMENSIONS` order: a tuple indexes faster than an enum dict
    tables: tuple[dict[str | None, Totals], ...] = field(
        default_factory=lambda: tuple({} for _ in _DIMENSIONS)
    )

    def table(self, dimension: Dimension) -> dict[str | None, Totals]:
        return self.tables[_DIMENSIONS.index(dimension)]


# A call's scope keys in `_DIMENSIONS` order: machine, profile key, account, agent, project,
# session and model.
_Keys = tuple[str, str | None, str | None, str, str | None, str, str]
# Where a call counts: its day (None: before the kept days), its minute (None: outside the
# run-rate window), its session row (None: none to count in) and whether it is the row's main
# thread, and its scope keys.
_Place = tuple[date | None, int | None, str | None, bool, _Keys]
# Calls summed by place, so that a batch adds to each of its scopes once rather than once per
# call (exact sums: the totals come out the same).
_Sums = dict[_Place, Totals]

_K = TypeVar("_K")
# The scope keys past machine and profile, where only those two count (a run-rate minute).
_NO_KEYS: Final = (None, "", None, "", "")


def _add_to(table: dict[_K, Totals], key: _K, calls: Totals) -> Totals:
    """Add to `table[key]`, creating it; returns it."""
    totals = table.get(key)
    if totals is None:
        totals = table[key] = Totals()
    totals.add(calls)
    return totals


class Ledger:
    def __init__(
        self,
        book: PriceBook,
        billing_of: BillingOf,
        tz: tzinfo = UTC,
        now: Callable[[], float] = time.time,
        *,
        run_rate_hours: float = 6.0,
    ) -> None:
        self._book = book
        self._billing_of = billing_of
        self.tz = tz
        self._now = now
        self._rate = RunRate(run_rate_hours)
        # each session's spend by minute over the last hour: its run-rate (kept apart from the
        # fleet's scopes, which the dashboard lists)
        self._session_rate = RunRate(RUN_RATE_WINDOW / 3600)
        self._days: dict[date, _Day] = {}
        self.sessions = SessionBook()  # lifetime figures of sessions with calls in kept days
        self.price_errors = 0  # calls the price book failed on (counted as unknown)
        self.unplaceable = 0  # calls whose time is not a valid instant (counted nowhere)
        # The earliest call it was given: before it the fleet's figures cover nothing, so a rate
        # is taken over the time since (see `covered`), not over a window of invented silence.
        self.first_call: float | None = None
        now_ts = now()
        self._minute = int(now_ts // 60)
        self._today = self._date(now_ts)
        self._keep_from = _keep_from(self._today)
        self._last_day = (0.0, 0.0, self._today)  # (start, end, day) for `_day_of`

    # ---- updating -----------------------------------------------------------------------

    def apply(self, old: UsageEvent | None, new: UsageEvent) -> None:
        """`new` replaced `old` in the store (old None: a new call). A retraction (new with
        `duplicate_of` set) withdraws the old figures and adds nothing."""
        self.apply_all(((old, new),))

    def apply_all(
        self,
        changes: Sequence[Change],
        prices: Sequence[tuple[Price | None, Price]] | None = None,
        redraws: Sequence[Redraw] = (),
    ) -> None:
        """`apply` each (old, new) in turn: a batch's changes in one go, cheaper per call.
        `prices`: what the store priced each (old, new) at (`IngestResult.prices`), so that
        nothing is priced twice and a call is withdrawn at the price it was added at.
        `redraws`: what the Agent SDK credit moved out of subscription_included (or back) in
        the batch (`IngestResult.redraws`), as the store's roll-ups took it."""
        self._tick()
        sums: _Sums = {}
        with localcontext(MONEY):
            for i, (old, new) in enumerate(changes):
                old_price, new_price = (None, None) if prices is None else prices[i]
                if old is not None and old.counts:
                    self._add(old, sums, negate=True, price=old_price)
                if new.counts:
                    self._add(new, sums, negate=False, price=new_price)
            for redraw in redraws:
                self._move(redraw, sums)
            self._post(sums)

    def _move(self, redraw: Redraw, sums: _Sums) -> None:
        """Move a call's part between classes where it counts (only a subscription's calls
        have such parts: the ledger classes the rest by billing alone)."""
        event, (amount, estimated) = redraw.event, redraw.price
        if amount is None or event.profile is None:
            return
        if self._billing_of(event.machine, event.profile) is not Billing.SUBSCRIPTION:
            return
        place = self._place(event, session=self.sessions.get(session_key(event)) is not None)
        if place is None:
            return
        totals = sums.get(place)
        if totals is None:
            totals = sums[place] = Totals()
        totals.move(redraw.moved.overage, redraw.moved.untold, estimated=estimated)

    def _place(self, event: UsageEvent, *, session: bool) -> _Place | None:
        """Where a call counts (`session`: in its session row), None: nowhere kept."""
        try:
            minute = int(event.ts // 60)
            day = self._day_of(event.ts)
        except (OverflowError, OSError, ValueError):
            return None
        in_days = day >= self._keep_from
        in_window = minute > self._minute - self._rate.minutes
        if not (in_days or in_window):
            return None
        return (
            day if in_days else None,
            minute if in_window else None,
            session_key(event) if session and in_days else None,
            event.role is Role.MAIN,
            self._keys(event),
        )

    @staticmethod
    def _keys(event: UsageEvent) -> _Keys:
        machine, profile = event.machine, event.profile
        return (
            machine,
            profile_key(machine, profile) if profile is not None else None,
            event.account,
            event.agent,  # a StrEnum: equal to, and hashed as, its value
            event.project,
            event.session_id,
            event.model,
        )

    def rebuild(self, events: Iterable[UsageEvent], moves: Mapping[str, Moved] = {}) -> None:
        """Start over from the store's kept events (pass those since `horizon()`), with what
        the Agent SDK credit moved of each (`Store.credit_moves`, by event id)."""
        self._clear()
        sums: _Sums = {}
        with localcontext(MONEY):
            for event in events:
                if event.counts:
                    self._add(event, sums, negate=False)
                    if (moved := moves.get(event.event_id)) is not None:
                        priced = self.price(event)
                        price = (priced.api_equivalent, priced.estimated)
                        self._move(Redraw(event, price, moved), sums)
            self._post(sums)

    def load(
        self,
        cells: Iterable[Cell],
        minutes: Iterable[MinuteCell],
        recent: Iterable[UsageEvent],
        session_spend: Iterable[tuple[float, str, Decimal | None]] = (),
        minute_moves: Iterable[MinuteMove] = (),
    ) -> None:
        """Start over from the store's roll-ups: the cells since `horizon()` summed by day in
        the ledger's zone and every key, the minutes since then, and the calls of the last few
        minutes (for the sessions' current token rates). Reads sums, not events: this is what
        a hub does at start-up and when a profile's billing changes. `session_spend`: each
        call of the last hour's (ts, session id, API-equivalent amount), for the sessions'
        run-rates (a subagent filed under a session id of its own counts in that one)."""
        self._clear()
        sums: _Sums = {}
        window_start = self._minute - self._rate.minutes
        with localcontext(MONEY):
            for cell in cells:
                if not cell.calls:
                    continue  # retractions only: they count nothing
                day = cell.day
                if day < self._keep_from:
                    continue
                # every key was read (the default of `Store.rollup`)
                agent, session, model = cell.agent, cell.session_id, cell.model
                assert agent is not None and session is not None and model is not None
                if self.first_call is None or cell.first_ts < self.first_call:
                    self.first_call = cell.first_ts
                billing = (
                    Billing.API
                    if cell.profile is None
                    else self._billing_of(cell.machine, cell.profile)
                )
                pkey = profile_key(cell.machine, cell.profile) if cell.profile else None
                keys = (
                    cell.machine,
                    pkey,
                    cell.account,
                    agent,
                    cell.project,
                    session,
                    model,
                )
                place = (day, None, self.sessions.restore(cell), cell.role is Role.MAIN, keys)
                _add_to(sums, place, cell_totals(cell, billing))
            for m in minutes:
                if m.minute <= window_start or not m.calls:
                    continue
                billing = (
                    Billing.API if m.profile is None else self._billing_of(m.machine, m.profile)
                )
                # a minute keeps only its token total: the run rate needs no more
                calls = totals_of(
                    m.calls,
                    Tokens(input=m.tokens),
                    m.amount,
                    cost_class(m.priced, m.estimated, billing),
                    unknown_tokens=m.tokens,
                )
                pkey = profile_key(m.machine, m.profile) if m.profile else None
                _add_to(sums, (None, m.minute, None, True, (m.machine, pkey, *_NO_KEYS)), calls)
            for minute, machine, profile, estimated, moved in minute_moves:
                if minute <= window_start:
                    continue
                if self._billing_of(machine, profile) is not Billing.SUBSCRIPTION:
                    continue
                pkey = profile_key(machine, profile)
                at: _Place = (None, minute, None, True, (machine, pkey, *_NO_KEYS))
                _add_to(sums, at, Totals()).move(moved.overage, moved.untold, estimated=estimated)
            self._post(sums)
        for event in recent:
            self.sessions.note_recent(event, self._minute)
        with localcontext(MONEY):
            for ts, session, amount in session_spend:
                minute = int(ts // 60)
                if amount is None or minute <= self._minute - self._session_rate.minutes:
                    continue
                spent = Totals()
                spent.api_equivalent = amount  # the one figure the session's rate reads
                self._session_rate.add((("session", session),), minute, self._minute, spent)

    def session_run_rate(self, key: str, now: float) -> Decimal | None:
        """Session `key`'s API-equivalent dollars an hour over the last hour (as the node's
        MCP tells it: `shared.session_rates`); None for a session not kept."""
        self._tick()
        row = self.sessions.get(key)
        if row is None:
            return None
        scope = ("session", key)
        window = self._session_rate.minutes
        with localcontext(MONEY):
            recent = self._session_rate.total(scope, self._minute, window, Basis.API_EQUIVALENT)
            return run_rate_per_hour(recent, row.first_ts, now)

    def _clear(self) -> None:
        self._days.clear()
        self._rate.clear()
        self._session_rate.clear()
        self.sessions.clear()
        self.price_errors = self.unplaceable = 0
        self.first_call = None
        self._tick()

    def horizon(self) -> float:
        """The earliest call time any current total or series covers: what `rebuild` needs."""
        self._tick()
        start = self._start_of(self._keep_from)
        return min(start, (self._minute - self._rate.minutes + 1) * 60.0)

    def _start_of(self, day: date) -> float:
        return datetime.combine(day, datetime.min.time(), self.tz).timestamp()

    def _tick(self) -> None:
        """Follow the clock: prune the minute series, and at a new day drop uncovered days."""
        now = self._now()
        minute = int(now // 60)
        if minute == self._minute:
            return
        self._minute = minute
        self._rate.prune(minute)
        self._session_rate.prune(minute)
        self.sessions.prune(minute)
        today = self._date(now)
        if today != self._today:
            self._today = today
            self._keep_from = _keep_from(today)
            for day in [d for d in self._days if d < self._keep_from]:
                del self._days[day]
            self.sessions.drop_before(self._start_of(self._keep_from))

    def _add(
        self, event: UsageEvent, sums: _Sums, *, negate: bool, price: Price | None = None
    ) -> None:
        try:
            minute = int(event.ts // 60)
            day = self._day_of(event.ts)
        except (OverflowError, OSError, ValueError):  # NaN, infinities, years out of range
            if not negate:
                self.unplaceable += 1
            return
        if not negate and (self.first_call is None or event.ts < self.first_call):
            self.first_call = event.ts
        in_days = day >= self._keep_from
        in_window = minute > self._minute - self._rate.minutes
        if not (in_days or in_window):
            return
        if price is None:
            priced, failed = self._priced(event)
            self.price_errors += failed
        else:
            priced = self._stored(event, price)
        sign = -1 if negate else 1
        session = None
        if in_days:
            session = self.sessions.note(
                event, sign * event.tokens.total, negate=negate, now_minute=self._minute
            )
        keys = self._keys(event)
        place = (
            day if in_days else None,
            minute if in_window else None,
            session,
            event.role is Role.MAIN,
            keys,
        )
        totals = sums.get(place)
        if totals is None:
            totals = sums[place] = Totals()
        totals.add_call(event.tokens, priced, sign)

    def _post(self, sums: _Sums) -> None:
        """Add the calls summed by place to the day cells, the session rows and the run rate."""
        for (day, minute, session, main, keys), calls in sums.items():
            if day is not None:
                cell = self._days.get(day)
                if cell is None:
                    cell = self._days[day] = _Day()
                cell.fleet.add(calls)
                for table, key in zip(cell.tables, keys, strict=True):
                    if _add_to(table, key, calls).calls == 0:
                        del table[key]  # a withdrawn scope leaves no empty row behind
            if session is not None:
                self.sessions.add(session, calls, main=main)
            if minute is not None:
                machine, pkey = keys[0], keys[1]
                scopes: tuple[Scope, ...] = (
                    (FLEET, ("machine", machine), ("profile", pkey))
                    if pkey is not None
                    else (FLEET, ("machine", machine))
                )
                self._rate.add(scopes, minute, self._minute, calls)
                if session is not None:
                    self._session_rate.add((("session", session),), minute, self._minute, calls)

    def _day_of(self, ts: float) -> date:
        """`ts`'s day in the ledger's zone; the last day's bounds are kept, as a batch's calls
        mostly fall on one day (a zoned `fromtimestamp` is the dearer part of placing a call)."""
        start, end, day = self._last_day
        if start <= ts < end:
            return day
        day = self._date(ts)
        self._last_day = (self._start_of(day), self._start_of(day + timedelta(days=1)), day)
        return day

    def price(self, event: UsageEvent) -> PricedCall:
        """The call priced and classified as the totals count it (a failure: unknown)."""
        return self._priced(event)[0]

    def _stored(self, event: UsageEvent, price: Price) -> PricedCall:
        """The call at the price the store gave it, classified by its profile's billing."""
        amount, estimated = price
        profile = event.profile
        billing = Billing.API if profile is None else self._billing_of(event.machine, profile)
        cls = cost_class(amount is not None, estimated, billing)
        return PricedCall(amount, cls, None, estimated)

    def _priced(self, event: UsageEvent) -> tuple[PricedCall, bool]:
        profile = event.profile
        billing = Billing.API if profile is None else self._billing_of(event.machine, profile)
        return safe_price(self._book, event, billing)

    def use_prices(self, book: PriceBook) -> None:
        """Price the calls that arrive from now on with `book` (a reload re-reads the rest)."""
        self._book = book

    # ---- reading ------------------------------------------------------------------------

    def labels(self) -> dict[Period, str]:
        """The current periods' labels, as report rows name them (day, week, month keys)."""
        self._tick()
        year, week, _ = self._today.isocalendar()
        return {
            Period.TODAY: self._today.isoformat(),
            Period.WEEK: f"{year}-W{week:02d}",
            Period.MONTH: self._today.strftime("%Y-%m"),
        }

    def fleet(self, period: Period) -> Totals:
        out = Totals()
        with localcontext(MONEY):
            for day in self._days_in(period):
                out.add(day.fleet)
        return out

    def totals(self, dimension: Dimension, period: Period) -> dict[str | None, Totals]:
        """Every key of `dimension` with calls in `period` (None: calls that do not say)."""
        out: dict[str | None, Totals] = {}
        with localcontext(MONEY):
            for day in self._days_in(period):
                for key, totals in day.table(dimension).items():
                    mine = out.get(key)
                    if mine is None:
                        out[key] = totals.copy()
                    else:
                        mine.add(totals)
        return out

    def total(self, dimension: Dimension, key: str | None, period: Period) -> Totals:
        """One scope's totals (a budget's figure): zero when it has no calls in `period`."""
        out = Totals()
        with localcontext(MONEY):
            for day in self._days_in(period):
                totals = day.table(dimension).get(key)
                if totals is not None:
                    out.add(totals)
        return out

    def run_rate(self, scope: Scope = FLEET) -> list[MinutePoint]:
        """Per-minute points over the run-rate window, oldest first, the current minute last."""
        self._tick()
        return self._rate.points(scope, self._minute)

    def run_rate_bins(
        self, scope: Scope, bins: int, basis: Basis = Basis.API_EQUIVALENT
    ) -> list[Decimal]:
        """The run-rate window's spend in `bins` equal bins, oldest first: a sparkline."""
        self._tick()
        with localcontext(MONEY):
            return self._rate.binned(scope, self._minute, bins, basis)

    def burn_rate_per_hour(
        self, scope: Scope = FLEET, minutes: int = 15, basis: Basis = Basis.API_EQUIVALENT
    ) -> Decimal:
        """$/h over the last `minutes` minutes (the current, partial one included), divided by
        the part of them the figures cover (`covered`)."""
        if not 0 < minutes <= self._rate.minutes:
            raise ValueError(f"minutes must be in 1..{self._rate.minutes}, got {minutes}")
        self._tick()
        with localcontext(MONEY):
            total = self._rate.total(scope, self._minute, minutes, basis)
            return total * 3600 / Decimal(self.covered(minutes * 60))

    def covered(self, seconds: int) -> int:
        """How many of the last `seconds` the figures cover: all of them once the first call is
        that old, else the time since it (at least `MIN_COVERED_S`: one call is not a rate)."""
        return covered(seconds, self.first_call, self._now())

    def kept_days(self) -> list[str]:
        """The days whose totals are held (those a current period covers), oldest first."""
        self._tick()
        return [d.isoformat() for d in sorted(self._days)]

    def scopes(self) -> list[Scope]:
        """Scopes with calls in the run-rate window."""
        self._tick()
        return self._rate.scopes()

    def _days_in(self, period: Period) -> list[_Day]:
        self._tick()
        today = self._today
        if period is Period.TODAY:
            cell = self._days.get(today)
            return [cell] if cell is not None else []
        if period is Period.WEEK:
            week = today.isocalendar()[:2]
            return [c for d, c in self._days.items() if d.isocalendar()[:2] == week]
        return [c for d, c in self._days.items() if (d.year, d.month) == (today.year, today.month)]

    def _date(self, ts: float) -> date:
        return datetime.fromtimestamp(ts, self.tz).date()


def covered(seconds: int, first_call: float | None, now: float) -> int:
    """How many of the last `seconds` before `now` figures from `first_call` on cover (see
    `Ledger.covered`)."""
    if first_call is None:
        return seconds
    return max(MIN_COVERED_S, min(seconds, round(now - first_call)))


def _keep_from(today: date) -> date:
    """The first day a current period covers: this month's first or this week's Monday."""
    return min(today.replace(day=1), today - timedelta(days=today.weekday()))
