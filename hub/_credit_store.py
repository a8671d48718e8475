"""Each Claude subscription's Agent SDK credit, kept in the store call by call.

The class of an SDK call depends on every call of its profile's month before it (the credit is
drawn in (time, event id) order), so it cannot be summed into a roll-up cell once and for all.
The store keeps, per profile with credit terms, each of its SDK calls and untold calls with the
credit left before it and what the rule (`pricing.sdk_credit`) moves out of
subscription_included (`credit_calls`), and those moves summed per roll-up cell
(`rollup_credit`), in the transaction of the batch that changed them:

- calls that arrive in order are drawn where the month stands (one read of the last call
  before them);
- a call that arrives late, is re-delivered at a new revision, retracted or re-priced re-draws
  its month from its place on, and stops at the first later call whose credit left before it
  is unchanged (every call after it is then unchanged too);
- a change of a profile's terms (the plan a hello announces, `[[subscriptions]]`) re-draws its
  months whole, from the kept raw calls. Calls whose raw rows were pruned keep their place in
  `credit_calls`, so their months still draw in full.

So the figures are the same whatever order and however often the calls arrived, across a hub
restart (they are in the store) and a re-pricing; and a read costs a few rows, never a month of
decoded calls. The moves come back to the caller (`Redraw`) so the ledger follows at once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, localcontext
from typing import Final, NamedTuple

from hub._rollup import CellKey, cell_key, write_credit
from hub._totals import MONEY, ZERO
from hub.credit import CreditMonth
from hub.credit_settings import SubscriptionSettings, credit_terms
from hub.model import Change, Price, ProfileRecord, Redraw
from pricing.sdk_credit import (
    CREDIT_SINCE,
    CreditTerms,
    Draw,
    Moved,
    draw_under,
    month_of,
    moved,
    split,
)
from shared.config import Billing
from shared.events import Agent, UsageEvent

TABLES: Final = """
CREATE TABLE IF NOT EXISTS credit_calls (  -- SDK and untold calls of profiles with a credit
    machine     TEXT NOT NULL,
    profile     TEXT NOT NULL,
    month       TEXT NOT NULL,     -- YYYY-MM in the terms' zone
    ts          REAL NOT NULL,
    event_id    TEXT NOT NULL,
    kind        TEXT NOT NULL,     -- 'credit' (an SDK call) or 'untold'
    amount      TEXT,              -- API-equivalent as stored (NULL: unknown)
    model       TEXT NOT NULL,
    cell        TEXT NOT NULL,     -- its roll-up cell's key, as JSON
    left_before TEXT,              -- credit left before it (NULL: not drawn yet)
    past        TEXT NOT NULL,     -- an SDK call's part past the credit
    overage     TEXT NOT NULL,     -- moved to metered
    untold      TEXT NOT NULL,     -- moved to estimated
    PRIMARY KEY (machine, profile, month, ts, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS credit_calls_id ON credit_calls (event_id);
CREATE TABLE IF NOT EXISTS credit_terms (  -- the terms each profile's rows were drawn under
    machine TEXT NOT NULL,
    profile TEXT NOT NULL,
    terms   TEXT NOT NULL,
    PRIMARY KEY (machine, profile)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_credit (  -- the moves summed per roll-up cell
    quarter INTEGER NOT NULL, machine TEXT NOT NULL, profile TEXT NOT NULL,
    account TEXT NOT NULL, agent TEXT NOT NULL, project TEXT NOT NULL,
    session_id TEXT NOT NULL, session_row TEXT NOT NULL, model TEXT NOT NULL,
    role TEXT NOT NULL, priced INTEGER NOT NULL, estimated INTEGER NOT NULL,
    overage TEXT NOT NULL,
    untold  TEXT NOT NULL,
    PRIMARY KEY (quarter, machine, profile, account, agent, project, session_id, session_row,
                 model, role, priced, estimated)
) WITHOUT ROWID
"""
_KIND: Final = {Draw.CREDIT: "credit", Draw.UNTOLD: "untold"}
_Key = tuple[float, str]  # (ts, event id): the order calls draw the credit in
_Month = tuple[str, str, str]  # machine, profile, month


def create_tables(db: sqlite3.Connection) -> None:
    for statement in TABLES.split(";"):  # (no ';' in the comments)
        db.execute(statement)


@dataclass(slots=True)
class _Work:
    """One batch's (or re-draw's) changes, gathered before they are written."""

    cells: dict[CellKey, tuple[Decimal, Decimal]] = field(default_factory=dict)
    redraws: list[Redraw] = field(default_factory=list)
    dirty: dict[_Month, tuple[_Key, _Key]] = field(default_factory=dict)  # first, last place
    known: dict[str, tuple[UsageEvent, Price]] = field(default_factory=dict)  # by event id
    # rows to insert (`_insert`), in the table's column order; the SDK calls' by month
    rows: list[list[object]] = field(default_factory=list)
    filed: dict[_Month, list[int]] = field(default_factory=dict)
    withdrawn: set[_Month] = field(default_factory=set)  # months a stored call left
    live: bool = True  # tell the ledger (not when every figure is reloaded anyway)
    stale: bool = False  # a move the ledger could not be told: reload its figures

    def move(self, cell: CellKey, change: Moved) -> None:
        overage, untold = self.cells.get(cell, (ZERO, ZERO))
        self.cells[cell] = (overage + change.overage, untold + change.untold)

    def mark(self, month: _Month, key: _Key) -> None:
        first, last = self.dirty.get(month, (key, key))
        self.dirty[month] = (min(first, key), max(last, key))


Decode = Callable[[str], tuple[UsageEvent, Price] | None]
ReadMachine = Callable[[str, str, float], Iterable[tuple[UsageEvent, Price]]]


class CreditStore:
    """The store's part that keeps the credit: called inside the store's transactions."""

    def __init__(self) -> None:
        self.settings: tuple[SubscriptionSettings, ...] = ()
        # the roll-up cells moves were written to since the owner last took them (its report
        # cache must read them again)
        self.touched: list[CellKey] = []

    # ---- terms ------------------------------------------------------------------------------

    def terms(self, db: sqlite3.Connection, machine: str, profile: str) -> CreditTerms | None:
        row = db.execute(
            "SELECT agent, billing, account, plan, first_seen, last_announced FROM profiles "
            "WHERE node = ? AND name = ?",
            (machine, profile),
        ).fetchone()
        if row is None:
            return None
        agent, billing, account, plan, first, last = row
        record = ProfileRecord(
            machine, profile, Agent(agent), Billing(billing), account, plan, first, last
        )
        return credit_terms(record, self.settings)

    def settle(
        self,
        db: sqlite3.Connection,
        profiles: Iterable[tuple[str, str]],
        read_machine: ReadMachine,
        pruned_before: float,
    ) -> set[tuple[str, str]]:
        """Re-draw each of `profiles` whose terms are not those its calls were drawn under
        (its first sight too); returns those re-drawn."""
        changed: set[tuple[str, str]] = set()
        for machine, profile in profiles:
            terms = self.terms(db, machine, profile)
            row = db.execute(
                "SELECT terms FROM credit_terms WHERE machine = ? AND profile = ?",
                (machine, profile),
            ).fetchone()
            now = None if terms is None else terms.fingerprint()
            if (row[0] if row else None) == now:
                continue
            self._redraw_profile(db, machine, profile, terms, read_machine, pruned_before)
            changed.add((machine, profile))
        return changed

    def all_profiles(self, db: sqlite3.Connection) -> list[tuple[str, str]]:
        """Every profile the store knows and every one with credit rows."""
        rows = db.execute(
            "SELECT node, name FROM profiles UNION SELECT machine, profile FROM credit_terms"
        )
        return [(machine, profile) for machine, profile in rows]

    def _redraw_profile(
        self,
        db: sqlite3.Connection,
        machine: str,
        profile: str,
        terms: CreditTerms | None,
        read_machine: ReadMachine,
        pruned_before: float,
    ) -> None:
        work = _Work(live=False)  # the caller reloads the figures
        where = "machine = ? AND profile = ?"
        for overage, untold, cell in db.execute(
            f"SELECT overage, untold, cell FROM credit_calls WHERE {where}", (machine, profile)
        ).fetchall():
            work.move(_cell(cell), Moved(-Decimal(overage), -Decimal(untold)))
        if terms is None:
            db.execute(f"DELETE FROM credit_calls WHERE {where}", (machine, profile))
            db.execute(f"DELETE FROM credit_terms WHERE {where}", (machine, profile))
        else:
            # calls whose raw rows are pruned keep their rows, to be drawn again
            kept = max(pruned_before, CREDIT_SINCE)
            pruned = db.execute(
                f"SELECT ts, event_id, kind, amount, model, cell FROM credit_calls WHERE {where} "
                "AND ts < ?",
                (machine, profile, kept),
            ).fetchall()
            db.execute(f"DELETE FROM credit_calls WHERE {where}", (machine, profile))
            for ts, event_id, kind, amount, model, cell in pruned:
                self._refile(
                    db, (machine, profile), terms, work, ts, event_id, kind, amount, model, cell
                )
            for event, price in read_machine(machine, profile, kept):
                if event.profile == profile and event.counts:
                    self._file(db, event, price, terms, work)
            db.execute(
                "INSERT INTO credit_terms VALUES (?, ?, ?) ON CONFLICT (machine, profile) DO "
                "UPDATE SET terms = excluded.terms",
                (machine, profile, terms.fingerprint()),
            )
            _insert(db, work)
            months = db.execute(
                f"SELECT DISTINCT month FROM credit_calls WHERE {where}", (machine, profile)
            ).fetchall()
            for (month,) in months:
                work.mark((machine, profile, month), (-1.0, ""))
            self._draw(db, work, lambda _m, _p: terms, _no_decode)
        self._write(db, work)

    def _refile(
        self,
        db: sqlite3.Connection,
        who: tuple[str, str],
        terms: CreditTerms,
        work: _Work,
        *row: object,
    ) -> None:
        """File again a row whose raw call was pruned (its month under the new terms)."""
        ts, event_id, kind, amount, model, cell = row
        assert isinstance(ts, float) and isinstance(cell, str)
        untold = _amount(amount) if kind == "untold" and isinstance(amount, str) else None
        month = month_of(ts, terms.tz)
        work.rows.append(
            [
                *who,
                month,
                ts,
                event_id,
                kind,
                amount,
                model,
                cell,
                None,
                "0",
                "0",
                str(untold or ZERO),
            ]
        )
        if untold:
            work.move(_cell(cell), Moved(untold=untold))

    # ---- batches ----------------------------------------------------------------------------

    def on_changes(
        self,
        db: sqlite3.Connection,
        changes: Sequence[Change],
        prices: Sequence[tuple[Price | None, Price]],
        decode: Decode,
        skip: set[tuple[str, str]],
    ) -> tuple[list[Redraw], bool]:
        """File a batch's calls (inside its transaction; `skip`: profiles re-drawn whole in
        it), re-draw the months they touch, and return what moved (and whether some move could
        not be placed: the ledger then reloads)."""
        work = _Work()
        terms_of = _TermsCache(self, db)
        for (old, new), (old_price, new_price) in zip(changes, prices, strict=True):
            if old is not None and old.profile is not None and old_price is not None:
                self._unfile(db, old, old_price, work)
            if not new.counts or new.profile is None or (new.machine, new.profile) in skip:
                continue
            terms = terms_of(new.machine, new.profile)
            if terms is not None:
                self._file(db, new, new_price, terms, work)
        self._draw(db, work, terms_of, decode)
        self._write(db, work)
        return work.redraws, work.stale

    def on_reprice(
        self,
        db: sqlite3.Connection,
        repriced: Sequence[tuple[UsageEvent, Price, Price]],
        decode: Decode,
    ) -> None:
        """Kept calls were re-priced (in the caller's transaction): their rows take the new
        amount and cell, and their months are drawn again from them."""
        work = _Work(live=False)  # the figures reload once every call is re-priced
        terms_of = _TermsCache(self, db)
        for event, old, new in repriced:
            if event.profile is None or not event.counts:
                continue
            if self._unfile(db, event, old, work):
                terms = terms_of(event.machine, event.profile)
                if terms is not None:
                    self._file(db, event, new, terms, work)
        self._draw(db, work, terms_of, decode)
        self._write(db, work)

    def _file(
        self,
        db: sqlite3.Connection,
        event: UsageEvent,
        price: Price,
        terms: CreditTerms,
        work: _Work,
    ) -> None:
        """Add a counted call of a profile with a credit: its row, not yet drawn."""
        draw = draw_under(event.entrypoint, event.ts, terms)
        if draw is Draw.INTERACTIVE or event.profile is None:
            return
        month = month_of(event.ts, terms.tz)
        amount = price[0]
        cell = cell_key(event, price)
        untold = moved(draw, amount, ZERO, terms.extra_usage).untold
        where = (event.machine, event.profile, month)
        if draw is Draw.CREDIT:
            work.filed.setdefault(where, []).append(len(work.rows))
        work.rows.append(
            [
                *where,
                event.ts,
                event.event_id,
                _KIND[draw],
                None if amount is None else str(amount),
                event.model,
                json.dumps(cell),
                None,
                "0",
                "0",
                str(untold),
            ]
        )
        if draw is Draw.UNTOLD:  # untold calls never draw: moved at once
            if untold:
                self._moved(work, cell, event, price, Moved(untold=untold))
            return
        work.known[event.event_id] = (event, price)
        work.mark((event.machine, event.profile, month), (event.ts, event.event_id))

    def _unfile(self, db: sqlite3.Connection, event: UsageEvent, price: Price, work: _Work) -> bool:
        """Withdraw a stored call's row and its moves; False when it had none."""
        row = db.execute(
            "SELECT machine, profile, month, ts, kind, overage, untold, cell FROM credit_calls "
            "WHERE event_id = ?",
            (event.event_id,),
        ).fetchone()
        if row is None:
            return False
        machine, profile, month, ts, kind, overage, untold, cell = row
        db.execute(
            "DELETE FROM credit_calls WHERE machine = ? AND profile = ? AND month = ? AND ts = ? "
            "AND event_id = ?",
            (machine, profile, month, ts, event.event_id),
        )
        change = Moved(-Decimal(overage), -Decimal(untold))
        if change:
            self._moved(work, _cell(cell), event, price, change)
        if kind == "credit":
            work.mark((machine, profile, month), (ts, event.event_id))
            work.withdrawn.add((machine, profile, month))
        return True

    def _moved(
        self, work: _Work, cell: CellKey, event: UsageEvent, price: Price, change: Moved
    ) -> None:
        work.move(cell, change)
        if work.live:
            work.redraws.append(Redraw(event, price, change))

    def _draw(
        self,
        db: sqlite3.Connection,
        work: _Work,
        terms_of: Callable[[str, str], CreditTerms | None],
        decode: Decode,
    ) -> None:
        """Draw each marked month again from its first marked place: until the first call past
        its last marked place whose credit left before it is unchanged. Calls that come after
        every stored one of their month (nearly every batch) are drawn before they are
        inserted: no row is read back or updated."""
        with localcontext(MONEY):
            appended = [
                (where, terms)
                for where in work.dirty
                if where not in work.withdrawn and (terms := terms_of(where[0], where[1]))
            ]
            for where, terms in appended:
                if self._append(db, work, where, terms):
                    del work.dirty[where]
            _insert(db, work)
            for (machine, profile, month), (first, last) in work.dirty.items():
                terms = terms_of(machine, profile)
                if terms is None:
                    continue
                self._draw_month(db, work, (machine, profile, month), first, last, terms, decode)

    def _append(
        self, db: sqlite3.Connection, work: _Work, where: _Month, terms: CreditTerms
    ) -> bool:
        """Draw a month's new calls where it stands when they all come after its stored ones;
        False when some do not."""
        rows = sorted((work.rows[i] for i in work.filed.get(where, ())), key=_place)
        if not rows:
            return False
        stored = db.execute(
            "SELECT ts, event_id, amount, left_before FROM credit_calls WHERE machine = ? "
            "AND profile = ? AND month = ? AND kind = 'credit' ORDER BY ts DESC, event_id DESC "
            "LIMIT 1",
            where,
        ).fetchone()
        left = terms.credit_usd
        if stored is not None:
            if (stored[0], stored[1]) >= _place(rows[0]) or stored[3] is None:
                return False
            left = split(_amount(stored[2]), Decimal(stored[3]))[1]
        for row in rows:
            text = row[6]
            amount = None if text is None else Decimal(str(text))
            past, after = split(amount, left)
            overage = moved(Draw.CREDIT, amount, past, terms.extra_usage).overage
            row[9], row[10], row[11] = str(left), str(past), str(overage)
            if overage:
                event, price = work.known[str(row[4])]
                self._moved(work, _cell(str(row[8])), event, price, Moved(overage=overage))
            left = after
        return True

    def _draw_month(
        self,
        db: sqlite3.Connection,
        work: _Work,
        where: _Month,
        first: _Key,
        last: _Key,
        terms: CreditTerms,
        decode: Decode,
    ) -> None:
        before = db.execute(
            "SELECT amount, left_before FROM credit_calls WHERE machine = ? AND profile = ? "
            "AND month = ? AND kind = 'credit' AND (ts < ? OR (ts = ? AND event_id < ?)) "
            "ORDER BY ts DESC, event_id DESC LIMIT 1",
            (*where, first[0], first[0], first[1]),
        ).fetchone()
        left = terms.credit_usd
        if before is not None and before[1] is not None:
            left = split(_amount(before[0]), Decimal(before[1]))[1]
        rows = db.execute(
            "SELECT ts, event_id, amount, left_before, past, overage, cell FROM credit_calls "
            "WHERE machine = ? AND profile = ? AND month = ? AND kind = 'credit' "
            "AND (ts > ? OR (ts = ? AND event_id >= ?)) ORDER BY ts, event_id",
            (*where, first[0], first[0], first[1]),
        )
        updates = []
        for ts, event_id, amount_text, left_text, past_text, overage_text, cell in rows:
            if (ts, event_id) > last and left_text is not None and Decimal(left_text) == left:
                break  # drawn as before from here on
            amount = _amount(amount_text)
            past, after = split(amount, left)
            overage = moved(Draw.CREDIT, amount, past, terms.extra_usage).overage
            change = overage - Decimal(overage_text)
            if (
                change
                or left_text is None
                or Decimal(left_text) != left
                or Decimal(past_text) != past
            ):
                updates.append((str(left), str(past), str(overage), *where, ts, event_id))
            if change:
                work.move(_cell(cell), Moved(overage=change))
                if work.live:
                    found = work.known.get(event_id) or decode(event_id)
                    if found is None:  # no raw row to place it by: the ledger reloads
                        work.stale = True
                    else:
                        work.redraws.append(Redraw(found[0], found[1], Moved(overage=change)))
            left = after
        db.executemany(
            "UPDATE credit_calls SET left_before = ?, past = ?, overage = ? WHERE machine = ? "
            "AND profile = ? AND month = ? AND ts = ? AND event_id = ?",
            updates,
        )

    def _write(self, db: sqlite3.Connection, work: _Work) -> None:
        _insert(db, work)
        write_credit(db, work.cells)
        self.touched.extend(work.cells)

    # ---- reading ----------------------------------------------------------------------------

    def month(
        self, db: sqlite3.Connection, machine: str, profile: str, month: str, terms: CreditTerms
    ) -> CreditMonth:
        """A profile's month as drawn (the same figures as `hub.credit.meter_month` of its
        calls, but a read of its few stored rows)."""
        out = CreditMonth(month, terms)
        rows = db.execute(
            "SELECT kind, amount, past, overage, ts, model FROM credit_calls "
            "WHERE machine = ? AND profile = ? AND month = ?",
            (machine, profile, month),
        )
        with localcontext(MONEY):
            for kind, amount_text, past_text, overage_text, ts, model in rows:
                amount = _amount(amount_text)
                if kind == "untold":
                    out.untold_calls += 1
                    out.untold_usd += amount or ZERO
                    if amount is not None:
                        key = (datetime.fromtimestamp(ts, UTC).date(), model)
                        out.untold_by_day[key] = out.untold_by_day.get(key, ZERO) + amount
                    continue
                out.sdk_calls += 1
                if amount is None:
                    out.unpriced_sdk_calls += 1
                    continue
                past = Decimal(past_text)
                out.used_usd += amount - past
                if not past:
                    continue
                out.overage_calls += 1
                if terms.extra_usage:
                    overage = Decimal(overage_text)
                    out.overage_usd += overage
                    key = (datetime.fromtimestamp(ts, UTC).date(), model)
                    out.overage_by_day[key] = out.overage_by_day.get(key, ZERO) + overage
                else:
                    out.refused_usd += past
        return out

    def moves(self, db: sqlite3.Connection) -> dict[str, Moved]:
        rows = db.execute(
            "SELECT event_id, overage, untold FROM credit_calls "
            "WHERE NOT (dec_zero(overage) AND dec_zero(untold))"
        )
        return {event_id: Moved(Decimal(o), Decimal(u)) for event_id, o, u in rows}

    def minute_moves(
        self, db: sqlite3.Connection, since: float
    ) -> list[tuple[int, str, str, bool, Moved]]:
        rows = db.execute(
            "SELECT ts, machine, profile, cell, overage, untold FROM credit_calls WHERE ts >= ? "
            "AND NOT (dec_zero(overage) AND dec_zero(untold))",
            (since,),
        )
        return [
            (int(ts // 60), machine, profile, bool(_cell(cell)[11]), Moved(Decimal(o), Decimal(u)))
            for ts, machine, profile, cell, o, u in rows
        ]

    def call_moves(self, db: sqlite3.Connection, since: float, until: float) -> list[CallMove]:
        """Each call with since <= ts < until that the credit moved something of."""
        rows = db.execute(
            "SELECT event_id, ts, machine, cell, overage, untold FROM credit_calls "
            "WHERE ts >= ? AND ts < ? AND NOT (dec_zero(overage) AND dec_zero(untold))",
            (since, until),
        )
        out = []
        for event_id, ts, machine, cell, overage, untold in rows:
            key = _cell(cell)
            out.append(
                CallMove(
                    event_id,
                    ts,
                    machine,
                    key[7],
                    key[9],
                    key[4],
                    bool(key[11]),
                    Moved(Decimal(overage), Decimal(untold)),
                )  # fmt: skip
            )
        return out

    def months_between(
        self, db: sqlite3.Connection, machine: str, profile: str, first: date, last: date
    ) -> list[str]:
        """The months with rows holding calls on UTC days `first` to `last`."""
        since = datetime.combine(first, datetime.min.time(), UTC).timestamp()
        until = datetime.combine(last, datetime.max.time(), UTC).timestamp()
        rows = db.execute(
            "SELECT DISTINCT month FROM credit_calls WHERE machine = ? AND profile = ? "
            "AND ts >= ? AND ts <= ?",
            (machine, profile, since, until),
        )
        return [month for (month,) in rows]


class CallMove(NamedTuple):
    """What the credit moved of one call, and where an outcome view files the call."""

    event_id: str
    ts: float
    machine: str
    session: str  # its root session (a subagent's parent)
    role: str
    agent: str
    estimated: bool  # its price is an estimate
    moved: Moved


class _TermsCache:
    """Each profile's terms, read once per batch."""

    def __init__(self, owner: CreditStore, db: sqlite3.Connection) -> None:
        self._owner, self._db = owner, db
        self._found: dict[tuple[str, str], CreditTerms | None] = {}

    def __call__(self, machine: str, profile: str) -> CreditTerms | None:
        key = (machine, profile)
        if key not in self._found:
            self._found[key] = self._owner.terms(self._db, machine, profile)
        return self._found[key]


def _insert(db: sqlite3.Connection, work: _Work) -> None:
    """Insert the rows filed so far (not drawn yet)."""
    if work.rows:
        db.executemany(f"INSERT INTO credit_calls VALUES ({', '.join('?' * 13)})", work.rows)
        work.rows.clear()
        work.filed.clear()


def _place(row: list[object]) -> tuple[float, str]:
    ts = row[3]
    assert isinstance(ts, (float, int))
    return float(ts), str(row[4])


def _amount(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


def _cell(text: str) -> CellKey:
    key = json.loads(text)
    return (
        key[0], key[1], key[2], key[3], key[4], key[5],
        key[6], key[7], key[8], key[9], key[10], key[11],
    )  # fmt: skip


def _no_decode(_event_id: str) -> tuple[UsageEvent, Price] | None:
    return None
