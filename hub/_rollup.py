"""Usage roll-ups: what every stored call adds to its quarter-hour cell and its minute, so that
start-up and reports read a few thousand sums instead of every event.

A cell is one quarter-hour × machine × profile × account × agent × project × session × model ×
role × (priced, estimated): every key a report groups by, and every zone's days are whole
quarter-hours, so a day in any zone is a sum of cells. Cells hold the API-equivalent amount and
the estimated flag, not the cost class: the class follows the profile's billing, which readers
apply as they know it now (`cell_totals`). A minute row (machine × profile) feeds the run rate.

The store writes the deltas of a batch in the batch's transaction: a new call adds its counts
and amount, a superseded one withdraws what its row was priced at (kept in the usage row), so
the roll-ups always equal a recount of the stored events, however the price tables changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from decimal import Decimal, localcontext
from operator import attrgetter
from typing import Final, NamedTuple

from hub._pricing import safe_price
from hub._sessions import session_key
from hub._totals import MONEY, ZERO, Totals
from hub.model import Price
from pricing import Billing, CostClass, PriceBook, classify
from shared.events import Role, Tokens, UsageEvent

QUARTER_S: Final = 900
MINUTE_KEEP_S: Final = 86400.0  # minute rows kept a day: the run rate looks back a few hours

Pricer = Callable[[UsageEvent], Price]

_KEY_COLUMNS: Final = (
    "quarter",
    "machine",
    "profile",
    "account",
    "agent",
    "project",
    "session_id",
    "session_row",
    "model",
    "role",
    "priced",
    "estimated",
)
_COUNT_COLUMNS: Final = (
    "calls",
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
    "web_search_requests",
    "retracted",
)
_CELL_COLUMNS: Final = (*_KEY_COLUMNS, *_COUNT_COLUMNS, "amount", "first_ts", "last_ts")

_UPSERT_CELL: Final = f"""
INSERT INTO rollup ({", ".join(_CELL_COLUMNS)}, git_branch)
VALUES ({", ".join("?" * (len(_CELL_COLUMNS) + 1))})
ON CONFLICT ({", ".join(_KEY_COLUMNS)}) DO UPDATE SET
    {", ".join(f"{c} = {c} + excluded.{c}" for c in _COUNT_COLUMNS)},
    amount = dec_add(amount, excluded.amount),
    first_ts = min(first_ts, excluded.first_ts), last_ts = max(last_ts, excluded.last_ts),
    git_branch = coalesce(excluded.git_branch, git_branch)
"""
_DROP_EMPTY_CELL: Final = (
    f"DELETE FROM rollup WHERE {' AND '.join(f'{c} = ?' for c in _KEY_COLUMNS)} "
    "AND calls = 0 AND retracted = 0"
)
_UPSERT_MINUTE: Final = """
INSERT INTO rollup_minute (minute, machine, profile, priced, estimated, calls, tokens, amount)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (minute, machine, profile, priced, estimated) DO UPDATE SET
    calls = calls + excluded.calls, tokens = tokens + excluded.tokens,
    amount = dec_add(amount, excluded.amount)
"""
_DROP_EMPTY_MINUTE: Final = (
    "DELETE FROM rollup_minute WHERE minute = ? AND machine = ? AND profile = ? AND priced = ? "
    "AND estimated = ? AND calls = 0"
)

CellKey = tuple[int, str, str, str, str, str, str, str, str, str, int, int]
MinuteKey = tuple[int, str, str, int, int]


def dec_add(a: str, b: str) -> str:
    """SQL `dec_add(a, b)`: the exact sum of two decimal texts (registered on each connection)."""
    with localcontext(MONEY):
        return str(Decimal(a) + Decimal(b))


def book_pricer(book: PriceBook | None) -> Pricer:
    """Prices with `book`; None: the shipped tables, loaded at the first call (a reader that
    stores nothing, such as `fleet-hub report`, never loads them)."""
    books = [book] if book is not None else []

    def price(event: UsageEvent) -> Price:
        if not books:
            books.append(PriceBook.default())
        priced, _ = safe_price(books[0], event, Billing.API)
        return priced.api_equivalent, priced.estimated

    return price


def amount_text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def stored_price(amount: str | None, estimated: int) -> Price:
    """The price a usage row was stored at (its `amount` and `estimated` columns)."""
    return (None if amount is None else Decimal(amount)), bool(estimated)


# A call's counts in `_COUNT_COLUMNS` order but `calls` and `retracted`: summed per cell in C.
_TOKENS: Final = attrgetter(
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
    "web_search_requests",
)
# (sign, event, amount) of each call a cell or minute gains (+1) or loses (-1)
_Entry = tuple[int, UsageEvent, Decimal | None]


class RollupDeltas:
    """What a set of changes adds to the cells and minutes; `write` applies it. `add` only
    files each call under its cell; the sums are taken per cell at `write` (in C, mostly)."""

    def __init__(self, minutes_since: float) -> None:
        self._minutes_since = minutes_since  # calls before it get no minute row
        self.cells: dict[CellKey, list[_Entry]] = {}

    def add(self, event: UsageEvent, price: Price, sign: int) -> None:
        """Add `event` priced at `price` (`sign` -1: withdraw it)."""
        amount, estimated = price
        counted = event.counts
        key: CellKey = (
            int(event.ts // QUARTER_S),
            event.machine,
            event.profile or "",
            event.account or "",
            event.agent.value,
            event.project or "",
            event.session_id,
            session_key(event),
            event.model,
            event.role.value,
            # a retraction counts nothing: it is only told in `retracted`, in a plain cell
            int(amount is not None) if counted else 1,
            int(estimated) if counted else 0,
        )
        entries = self.cells.get(key)
        if entries is None:
            entries = self.cells[key] = []
        entries.append((sign, event, amount))

    def write(self, db: sqlite3.Connection) -> None:
        """Apply the deltas (inside the caller's transaction) and drop what they left empty."""
        cells: list[tuple[object, ...]] = []
        emptied: list[CellKey] = []
        minutes: dict[MinuteKey, list[_Entry]] = {}
        with localcontext(MONEY):
            for key, entries in self.cells.items():
                cells.append((*key, *_sums(entries), *_times(entries)))
                if any(sign < 0 for sign, _, _ in entries):
                    emptied.append(key)
                for entry in entries:
                    event = entry[1]
                    if event.counts and event.ts >= self._minutes_since:
                        mkey = (int(event.ts // 60), key[1], key[2], key[10], key[11])
                        minutes.setdefault(mkey, []).append(entry)
            db.executemany(_UPSERT_CELL, cells)
            db.executemany(
                _UPSERT_MINUTE,
                [(*mkey, *_minute_sums(entries)) for mkey, entries in minutes.items()],
            )
        db.executemany(_DROP_EMPTY_CELL, emptied)
        db.executemany(
            _DROP_EMPTY_MINUTE,
            [k for k, entries in minutes.items() if any(e[0] < 0 for e in entries)],
        )


def _sums(entries: list[_Entry]) -> tuple[object, ...]:
    """calls, the token columns, retracted and the amount of a cell's entries."""
    counted = [(sign, e, amount) for sign, e, amount in entries if e.counts]
    retracted = sum(sign for sign, e, _ in entries if not e.counts)
    if all(sign > 0 for sign, _, _ in counted):  # nearly every batch: new calls only
        tokens = [
            sum(column) for column in zip(*(_TOKENS(e.tokens) for _, e, _ in counted), strict=True)
        ]
        money = sum((a for _, _, a in counted if a is not None), ZERO)
    else:
        signed = [tuple(sign * n for n in _TOKENS(e.tokens)) for sign, e, _ in counted]
        tokens = [sum(column) for column in zip(*signed, strict=True)]
        money = sum((sign * a for sign, _, a in counted if a is not None), ZERO)
    calls = sum(sign for sign, _, _ in counted)
    return (calls, *(tokens or [0] * 7), retracted, str(money))


def _times(entries: list[_Entry]) -> tuple[float, float, str | None]:
    """first_ts, last_ts and the git branch the cell's newest added call names."""
    times = [e.ts for _, e, _ in entries]
    branches = [e.git_branch for sign, e, _ in entries if sign > 0 and e.git_branch is not None]
    return min(times), max(times), branches[-1] if branches else None


def _minute_sums(entries: list[_Entry]) -> tuple[int, int, str]:
    calls = sum(sign for sign, _, _ in entries)
    tokens = sum(sign * e.tokens.total for sign, e, _ in entries)
    money = sum((sign * a for sign, _, a in entries if a is not None), ZERO)
    return calls, tokens, str(money)


class Cell(NamedTuple):
    """One roll-up cell as read back ('' keys are None again)."""

    quarter: int
    machine: str
    profile: str | None
    account: str | None
    agent: str
    project: str | None
    session_id: str
    session_row: str
    model: str
    role: Role
    priced: bool
    estimated: bool
    calls: int
    tokens: Tokens
    retracted: int
    amount: Decimal
    first_ts: float
    last_ts: float
    git_branch: str | None

    @property
    def start(self) -> float:
        return float(self.quarter * QUARTER_S)


class MinuteCell(NamedTuple):
    minute: int
    machine: str
    profile: str | None
    priced: bool
    estimated: bool
    calls: int
    tokens: int
    amount: Decimal


def read_cells(
    db: sqlite3.Connection, since: float | None = None, until: float | None = None
) -> Iterator[Cell]:
    """Cells of the quarters from the one holding `since` to the one before `until`'s."""
    low = -(2**62) if since is None else int(since // QUARTER_S)
    high = 2**62 if until is None else -(-int(until) // QUARTER_S)  # quarters starting < until
    rows = db.execute(
        f"SELECT {', '.join(_CELL_COLUMNS)}, git_branch FROM rollup "
        "WHERE quarter >= ? AND quarter < ?",
        (low, high),
    )
    for r in rows:
        yield Cell(
            r[0],
            r[1],
            r[2] or None,
            r[3] or None,
            r[4],
            r[5] or None,
            r[6],
            r[7],
            r[8],
            Role(r[9]),
            bool(r[10]),
            bool(r[11]),
            r[12],
            Tokens(*r[13:20]),
            r[20],
            Decimal(r[21]),
            r[22],
            r[23],
            r[24],
        )


def read_minutes(db: sqlite3.Connection, since: float) -> Iterator[MinuteCell]:
    rows = db.execute(
        "SELECT minute, machine, profile, priced, estimated, calls, tokens, amount "
        "FROM rollup_minute WHERE minute >= ?",
        (int(since // 60),),
    )
    for minute, machine, profile, priced, estimated, calls, tokens, amount in rows:
        yield MinuteCell(
            minute,
            machine,
            profile or None,
            bool(priced),
            bool(estimated),
            calls,
            tokens,
            Decimal(amount),
        )


def cost_class(priced: bool, estimated: bool, billing: Billing) -> CostClass:
    return classify(priced=priced, estimated=estimated, billing=billing)


def totals_of(
    calls: int, tokens: Tokens, amount: Decimal, cls: CostClass, *, unknown_tokens: int
) -> Totals:
    """The `Totals` of `calls` summed calls of one class (call under `localcontext(MONEY)`)."""
    out = Totals(
        calls=calls,
        input=tokens.input,
        output=tokens.output,
        cache_read=tokens.cache_read,
        cache_write_5m=tokens.cache_write_5m,
        cache_write_1h=tokens.cache_write_1h,
        reasoning=tokens.reasoning,
        web_search_requests=tokens.web_search_requests,
    )
    if cls is CostClass.UNKNOWN:
        out.unknown_calls = calls
        out.unknown_tokens = unknown_tokens
        return out
    out.api_equivalent = amount
    if cls is CostClass.METERED:
        out.metered = amount
    elif cls is CostClass.SUBSCRIPTION_INCLUDED:
        out.subscription_included = amount
    else:
        out.estimated = amount
    return out


def cell_totals(cell: Cell, billing: Billing) -> Totals:
    cls = cost_class(cell.priced, cell.estimated, billing)
    return totals_of(cell.calls, cell.tokens, cell.amount, cls, unknown_tokens=cell.tokens.total)
