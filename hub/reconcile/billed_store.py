"""Imported billed rows in the hub's store, per provider and UTC day.

A file's rows replace what the store held for each (provider, day) the file covers, each day in
one transaction (a kill -9 leaves each day old or new, never a mix; a long file never holds the
store's write lock for long, so the hub's ingest does not wait on it). Importing the same
export again changes nothing (each day's rows are compared by digest); a newer export of the
same days replaces them; a day the export was taken on or before (still open at the provider)
is partial: shown, never alerted on, and never replaces a complete day held already.

The tables are this module's own (CREATE TABLE IF NOT EXISTS on open), on a connection of its
own to the store's file, like the alert outbox.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Final

from hub._transaction import immediate
from hub.reconcile.billed import BilledFigure
from hub.reconcile.fleet import RowKey
from hub.reconcile.imports import BilledRow, Rate
from shared.events import Tokens

BUSY_TIMEOUT_MS: Final = 5_000
_TABLES: Final = (
    """CREATE TABLE IF NOT EXISTS billed_import_days (
        provider TEXT NOT NULL,
        day      TEXT NOT NULL,     -- UTC, ISO
        partial  INTEGER NOT NULL,  -- the export was taken before the day ended
        digest   TEXT NOT NULL,     -- of the day's rows: the same export again changes nothing
        source   TEXT NOT NULL,     -- the file's name as given
        imported REAL NOT NULL,
        PRIMARY KEY (provider, day)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS billed_import_rows (
        provider    TEXT NOT NULL,
        day         TEXT NOT NULL,
        model       TEXT NOT NULL,
        key         TEXT NOT NULL,
        token_class TEXT NOT NULL,
        input       INTEGER NOT NULL,
        output      INTEGER NOT NULL,
        cache_read  INTEGER NOT NULL,
        cache_write INTEGER NOT NULL,
        amount      TEXT NOT NULL,  -- exact, in `currency`
        currency    TEXT NOT NULL,
        per_usd     TEXT,           -- units of `currency` to the dollar (NULL: USD)
        rate_day    TEXT,           -- the day that rate was read
        line        INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS billed_import_rows_day ON billed_import_rows (provider, day)",
)


@dataclass(slots=True)
class Stored:
    """What one import did, per UTC day."""

    added: list[str] = field(default_factory=list)  # "provider day"
    replaced: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # complete days a partial export left alone
    partial: list[str] = field(default_factory=list)
    rows: int = 0  # rows written

    def to_json(self) -> dict[str, object]:
        return {
            "added_days": self.added,
            "replaced_days": self.replaced,
            "unchanged_days": self.unchanged,
            "kept_days": self.kept,
            "partial_days": self.partial,
            "rows_written": self.rows,
        }


@dataclass(slots=True)
class Imported:
    """The imported side of a reconciliation: figures per row key, and per provider the days
    the imports cover (fleet rows of other days are not compared) and those still partial."""

    figures: dict[RowKey, BilledFigure] = field(default_factory=dict)
    covered: dict[str, set[date]] = field(default_factory=dict)
    partial: dict[str, set[date]] = field(default_factory=dict)


def _values(row: BilledRow) -> tuple[object, ...]:
    rate = row.rate
    return (
        row.model,
        row.key,
        row.token_class,
        row.tokens.input,
        row.tokens.output,
        row.tokens.cache_read,
        row.tokens.cache_write_5m,
        str(row.amount),
        row.currency,
        None if rate is None else str(rate.per_usd),
        None if rate is None else rate.day.isoformat(),
    )


def _digest(rows: list[BilledRow], partial: bool) -> str:
    text = repr((partial, sorted(repr(_values(r)) for r in rows)))
    return hashlib.sha256(text.encode()).hexdigest()


class BilledImports:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("BEGIN IMMEDIATE")
            for statement in _TABLES:
                self._db.execute(statement)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> BilledImports:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def store(
        self,
        rows: Iterable[BilledRow],
        exported: date,
        source: str,
        partial_days: Iterable[date] = (),
    ) -> Stored:
        """File `rows` by (provider, day); days on or after `exported` (the UTC day the export
        was taken), and `partial_days`, are partial."""
        cut = set(partial_days)
        by_day: dict[tuple[str, date], list[BilledRow]] = defaultdict(list)
        for row in rows:
            by_day[(row.provider, row.day)].append(row)
        done = Stored()
        now = time.time()
        for (provider, day), day_rows in sorted(by_day.items()):
            partial = day >= exported or day in cut
            if partial:
                done.partial.append(f"{provider} {day}")
            # one transaction a day: each is whole, and the hub's ingest never waits long
            with self._write() as db:
                self._file_day(db, provider, day, day_rows, partial, source, now, done)
        return done

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        return immediate(self._db)

    @staticmethod
    def _file_day(
        db: sqlite3.Connection,
        provider: str,
        day: date,
        rows: list[BilledRow],
        partial: bool,
        source: str,
        now: float,
        done: Stored,
    ) -> None:
        name = f"{provider} {day}"
        digest = _digest(rows, partial)
        held = db.execute(
            "SELECT partial, digest FROM billed_import_days WHERE provider = ? AND day = ?",
            (provider, day.isoformat()),
        ).fetchone()
        if held is not None and held[1] == digest:
            done.unchanged.append(name)
            return
        if held is not None and not held[0] and partial:
            done.kept.append(name)  # a complete day is not replaced by a partial one
            return
        (done.added if held is None else done.replaced).append(name)
        db.execute(
            "DELETE FROM billed_import_rows WHERE provider = ? AND day = ?",
            (provider, day.isoformat()),
        )
        db.executemany(
            "INSERT INTO billed_import_rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(provider, day.isoformat(), *_values(r), r.line) for r in rows],
        )
        db.execute(
            "INSERT OR REPLACE INTO billed_import_days VALUES (?, ?, ?, ?, ?, ?)",
            (provider, day.isoformat(), int(partial), digest, source, now),
        )
        done.rows += len(rows)

    def providers(self) -> set[str]:
        return {p for (p,) in self._db.execute("SELECT DISTINCT provider FROM billed_import_days")}

    def imported(self, first: date, last: date, providers: Iterable[str] | None) -> Imported:
        """The imported figures of UTC days `first` to `last`."""
        wanted = None if providers is None else set(providers)
        out = Imported()
        span = (first.isoformat(), last.isoformat())
        for provider, day, partial in self._db.execute(
            "SELECT provider, day, partial FROM billed_import_days WHERE day BETWEEN ? AND ?", span
        ):
            if wanted is None or provider in wanted:
                out.covered.setdefault(provider, set()).add(date.fromisoformat(day))
                if partial:
                    out.partial.setdefault(provider, set()).add(date.fromisoformat(day))
        for (
            provider,
            day,
            model,
            key,
            token_class,
            inp,
            outp,
            read,
            write,
            amount,
            currency,
            per_usd,
            rate_day,
        ) in self._db.execute(
            "SELECT provider, day, model, key, token_class, input, output, cache_read, "
            "cache_write, amount, currency, per_usd, rate_day FROM billed_import_rows "
            "WHERE day BETWEEN ? AND ? ORDER BY provider, day, line",
            span,
        ):
            if wanted is not None and provider not in wanted:
                continue
            rate = (
                None
                if per_usd is None
                else Rate(currency, Decimal(per_usd), date.fromisoformat(rate_day))
            )
            row = BilledRow(
                provider,
                date.fromisoformat(day),
                model,
                key,
                token_class,
                Tokens(input=inp, output=outp, cache_read=read, cache_write_5m=write),
                Decimal(amount),
                currency,
                rate,
                0,
            )
            figure = out.figures.setdefault((provider, row.day, model, key), BilledFigure())
            add_row(figure, row)
        return out


def add_row(figure: BilledFigure, row: BilledRow) -> None:
    figure.tokens = figure.tokens + row.tokens
    figure.add(row.token_class, row.usd)
    if row.token_class.startswith("other:"):
        figure.other.append(row.token_class.removeprefix("other:"))
    if row.rate is not None:
        figure.original[row.currency] = figure.original.get(row.currency, Decimal(0)) + row.amount
        figure.rates.add(f"{row.currency} {row.rate.per_usd}/USD on {row.rate.day}")
