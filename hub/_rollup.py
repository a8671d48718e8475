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

import hashlib
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, tzinfo
from decimal import Decimal, localcontext
from functools import lru_cache
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
_TOKEN_COLUMNS: Final = Tokens.__struct_fields__  # the columns are named so
_COUNT_COLUMNS: Final = ("calls", *_TOKEN_COLUMNS, "retracted")
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
    return str(MONEY.add(Decimal(a), Decimal(b)))


class StorePricer:
    """Prices calls for the store with `book`; None: the shipped tables, loaded at the first
    call (a reader that stores nothing, such as `fleet-hub report`, never loads them)."""

    def __init__(self, book: PriceBook | None) -> None:
        self._book = book

    @property
    def book(self) -> PriceBook:
        if self._book is None:
            self._book = PriceBook.default()
        return self._book

    def use(self, book: PriceBook) -> None:
        """Price with `book` from now on (tables installed while the hub serves)."""
        self._book = book

    def __call__(self, event: UsageEvent) -> Price:
        priced, _ = safe_price(self.book, event, Billing.API)
        return priced.api_equivalent, priced.estimated

    def fingerprint(self) -> str:
        """Names the book (its kind and its tables' content): stored prices are brought to it
        when it changes."""
        kind = type(self.book)
        named = f"{kind.__module__}.{kind.__qualname__}:{self.book.tables!r}"
        return hashlib.sha256(named.encode()).hexdigest()


def amount_text(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


def stored_price(amount: str | None, estimated: int) -> Price:
    """The price a usage row was stored at (its `amount` and `estimated` columns)."""
    return (None if amount is None else Decimal(amount)), bool(estimated)


# A call's counts in `_TOKEN_COLUMNS` order: summed per cell in C.
_TOKENS: Final = attrgetter(*_TOKEN_COLUMNS)
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
        amount = price[0]
        key = cell_key(event, price)
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


def cell_key(event: UsageEvent, price: Price) -> CellKey:
    """The cell a call priced at `price` is summed in."""
    amount, estimated = price
    counted = event.counts
    return (
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


# What leaves subscription_included in a cell (`pricing.sdk_credit.Moved`): kept apart from the
# cell's sums, since it follows the order of a whole month's calls, not the call alone.
_UPSERT_CREDIT: Final = f"""
INSERT INTO rollup_credit ({", ".join(_KEY_COLUMNS)}, overage, untold)
VALUES ({", ".join("?" * (len(_KEY_COLUMNS) + 2))})
ON CONFLICT ({", ".join(_KEY_COLUMNS)}) DO UPDATE SET
    overage = dec_add(overage, excluded.overage), untold = dec_add(untold, excluded.untold)
"""
_DROP_EMPTY_CREDIT: Final = (
    f"DELETE FROM rollup_credit WHERE {' AND '.join(f'{c} = ?' for c in _KEY_COLUMNS)} "
    "AND dec_zero(overage) AND dec_zero(untold)"
)


def write_credit(db: sqlite3.Connection, moves: dict[CellKey, tuple[Decimal, Decimal]]) -> None:
    """Add each cell's change of (overage, untold) (inside the caller's transaction); drop the
    rows it leaves at zero."""
    rows = [(*key, str(o), str(u)) for key, (o, u) in moves.items() if o or u]
    if rows:
        db.executemany(_UPSERT_CREDIT, rows)
        db.executemany(_DROP_EMPTY_CREDIT, [row[:-2] for row in rows])


class RollupWrites:
    """Which quarters this process's writes to the roll-ups touched, by generation (one per
    written set of deltas), so that a reader who kept older cells can tell whether they are
    still true (`hub.report.ReportCache`). Writes by other processes are not seen: only the
    hub writes its store."""

    KEPT: Final = 4096  # generations remembered; a reader older than that reads afresh

    def __init__(self) -> None:
        self.generation = 0
        self._lowest: deque[tuple[int, int]] = deque(maxlen=self.KEPT)

    def note(self, deltas: RollupDeltas) -> None:
        self.note_cells(deltas.cells)

    def note_cells(self, cells: Iterable[CellKey]) -> None:
        quarters = [key[0] for key in cells]
        if quarters:
            self.generation += 1
            self._lowest.append((self.generation, min(quarters)))

    def touched_before(self, generation: int, quarter: int) -> bool:
        """Whether a write after `generation` touched a quarter before `quarter`."""
        if generation >= self.generation:
            return False
        # a copy first: the receiver thread appends while a report asks (tuple() copies a
        # deque in one step under the GIL; iterating it in Python could see it change)
        lowest = tuple(self._lowest)
        if not lowest or lowest[0][0] > generation + 1:
            return True  # forgotten: assume it did
        return any(q < quarter for g, q in lowest if g > generation)


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
    return (calls, *(tokens or [0] * len(_TOKEN_COLUMNS)), retracted, str(money))


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
    """The sums of the cells that share a local day and the keys read (see `read_cells`);
    a key not read is None, as is '' (no profile, account or project)."""

    day: date
    machine: str
    profile: str | None
    account: str | None
    agent: str | None
    project: str | None
    session_id: str | None
    session_row: str | None
    model: str | None
    role: Role | None
    priced: bool
    estimated: bool
    calls: int
    tokens: Tokens
    retracted: int
    amount: Decimal
    first_ts: float
    last_ts: float
    git_branch: str | None
    # moved out of subscription_included by the Agent SDK credit (`pricing.sdk_credit`): to
    # metered (estimated for an estimated price), and to estimated (the log did not say)
    overage: Decimal = ZERO
    untold: Decimal = ZERO


class MinuteCell(NamedTuple):
    minute: int
    machine: str
    profile: str | None
    priced: bool
    estimated: bool
    calls: int
    tokens: int
    amount: Decimal


# What each key of `Cell` reads; `day` is the cells' local day (`rollup_day`, per call).
READABLE: Final = {
    "day": "rollup_day(quarter)",
    "machine": "machine",
    "profile": "profile",
    "account": "account",
    "agent": "agent",
    "project": "project",
    "session_id": "session_id",
    "session_row": "session_row",
    "model": "model",
    "role": "role",
}
_SUMS: Final = (
    ", ".join(f"sum({c})" for c in _COUNT_COLUMNS)
    + ", dec_sum(amount), min(first_ts), max(last_ts), max(git_branch)"
)


class _DecimalSum:
    """SQL `dec_sum(text)`: the exact sum of decimal texts."""

    def __init__(self) -> None:
        self.total = ZERO

    def step(self, value: str) -> None:
        self.total = MONEY.add(self.total, Decimal(value))

    def finalize(self) -> str:
        return str(self.total)


def dec_zero(a: str) -> bool:
    """SQL `dec_zero(a)`: whether a decimal text is zero ("0", "0.00", "-0E-10")."""
    return not Decimal(a)


def register(db: sqlite3.Connection) -> None:
    """The SQL functions the roll-ups use, on a new connection."""
    db.create_function("dec_add", 2, dec_add, deterministic=True)
    db.create_function("dec_zero", 1, dec_zero, deterministic=True)
    # typeshed's aggregate protocol has finalize return an int; SQLite takes text as well
    db.create_aggregate("dec_sum", 1, _DecimalSum)  # type: ignore[arg-type]


def read_cells(
    db: sqlite3.Connection,
    tz: tzinfo,
    keys: Sequence[str] = tuple(READABLE),
    since: float | None = None,
    until: float | None = None,
) -> Iterator[Cell]:
    """The cells of the quarters from the one holding `since` to the last starting before
    `until`, summed by local day in `tz` and `keys` (names of `READABLE`; machine and
    profile always: they fix the billing), priced and estimated. SQLite sums them, so a
    reader handles one row per day and key, not one per quarter-hour."""
    low = -(2**62) if since is None else int(since // QUARTER_S)
    high = 2**62 if until is None else -(-int(until) // QUARTER_S)  # quarters starting < until

    @lru_cache(maxsize=4096)  # a month has 2,880 quarters; each is asked for once per cell
    def day_of(quarter: int) -> int:
        return datetime.fromtimestamp(quarter * QUARTER_S, tz).date().toordinal()

    # (the connection's owner serialises calls: this day function is the one of this read)
    db.create_function("rollup_day", 1, day_of, deterministic=True)
    names = [
        "day",
        "machine",
        "profile",
        *(k for k in keys if k in READABLE and k not in ("day", "machine", "profile")),
    ]
    if bad := [k for k in keys if k not in READABLE]:
        raise ValueError(f"unknown roll-up keys: {', '.join(bad)}")
    grouped = ", ".join(READABLE[k] for k in names) + ", priced, estimated"
    rows = db.execute(
        f"SELECT {grouped}, {_SUMS} FROM rollup WHERE quarter >= ? AND quarter < ? "
        f"GROUP BY {grouped}",
        (low, high),
    )
    width = len(names)
    moves = _credit_moves(db, grouped, low, high)
    for r in rows:
        found = dict(zip(names, r[:width], strict=True))
        role = found.get("role")
        n = r[width + 2 :]
        overage, untold = moves.get(r[: width + 2], _NO_MOVE) if moves else _NO_MOVE
        yield Cell(
            date.fromordinal(r[0]),
            r[1],
            r[2] or None,
            found.get("account") or None,
            found.get("agent"),
            found.get("project") or None,
            found.get("session_id"),
            found.get("session_row"),
            found.get("model"),
            None if role is None else Role(role),
            bool(r[width]),
            bool(r[width + 1]),
            n[0],
            Tokens(*n[1:8]),
            n[8],
            Decimal(n[9]),
            n[10],
            n[11],
            n[12],
            overage,
            untold,
        )


_NO_MOVE: Final = (ZERO, ZERO)


def _credit_moves(
    db: sqlite3.Connection, grouped: str, low: int, high: int
) -> dict[tuple[object, ...], tuple[Decimal, Decimal]]:
    """The credit's moves (`rollup_credit`) summed by the same groups as the cells: a few rows
    (only Claude subscription calls past the credit or untold), read apart so that the cells'
    own read stays as it was."""
    rows = db.execute(
        f"SELECT {grouped}, dec_sum(overage), dec_sum(untold) FROM rollup_credit "
        f"WHERE quarter >= ? AND quarter < ? GROUP BY {grouped}",
        (low, high),
    )
    return {tuple(r[:-2]): (Decimal(r[-2]), Decimal(r[-1])) for r in rows}


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
    out = Totals(calls, *_TOKENS(tokens))  # Totals' counts follow Tokens' fields
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
    out = totals_of(cell.calls, cell.tokens, cell.amount, cls, unknown_tokens=cell.tokens.total)
    if cls is CostClass.SUBSCRIPTION_INCLUDED and (cell.overage or cell.untold):
        out.move(cell.overage, cell.untold, estimated=cell.estimated)
    return out
