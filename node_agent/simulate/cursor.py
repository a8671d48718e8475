"""Cursor's dashboard usage export (research/log-formats.md §5.2), 2025-11 header variant.

The four token columns are disjoint: `Input (w/ Cache Write)` is the cache-write count (no TTL
split: truth's cache_write_5m), `Input (w/o Cache Write)` plain input, then `Cache Read` and
`Output Tokens`; `Total Tokens` is their sum. `Cost` is Cursor's own figure or a label
(`Included`): never the price. Rows carry no session; truth files them under session_id "".
"""

from __future__ import annotations

import csv
import io
import random
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

from shared.events import Agent, Role, Tokens

from . import prices
from .common import LineSink, after, iso_ms
from .env import SessionEnv

HEADER = (
    "Date",
    "Kind",
    "Model",
    "Max Mode",
    "Input (w/ Cache Write)",
    "Input (w/o Cache Write)",
    "Cache Read",
    "Output Tokens",
    "Total Tokens",
    "Cost",
)
CURSOR_SONNET = "claude-4.5-sonnet"


@dataclass(frozen=True, slots=True)
class CursorRow:
    at: datetime
    kind: str  # "Included" or "On-Demand"
    model: str
    cache_write: int
    input: int
    cache_read: int
    output: int
    cost: str  # "0.20" or a label such as "Included"

    def tokens(self) -> Tokens:
        return Tokens(
            input=self.input,
            output=self.output,
            cache_read=self.cache_read,
            cache_write_5m=self.cache_write,
        )


class CursorUsageCsv:
    """Appends rows to a usage export, writing the header first when the file is new."""

    def __init__(self, sink: LineSink) -> None:
        self.sink = sink
        if sink.path.stat().st_size == 0:
            self._write(HEADER)

    @classmethod
    def open(cls, path: Path, *, flush_each: bool = True) -> CursorUsageCsv:
        return cls(LineSink(path, flush_each=flush_each))

    def _write(self, fields: tuple[str, ...]) -> None:
        buf = io.StringIO()
        # The export leaves the header bare and quotes every value.
        if fields is HEADER:
            csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n").writerow(fields)
        else:
            csv.writer(buf, quoting=csv.QUOTE_ALL, lineterminator="\n").writerow(fields)
        self.sink.raw(buf.getvalue().encode())

    def write_row(self, row: CursorRow) -> None:
        total = row.cache_write + row.input + row.cache_read + row.output
        self._write(
            (
                iso_ms(row.at),
                row.kind,
                row.model,
                "No",
                str(row.cache_write),
                str(row.input),
                str(row.cache_read),
                str(row.output),
                str(total),
                row.cost,
            )
        )

    def close(self) -> None:
        self.sink.close()


def write_rows(env: SessionEnv, start: datetime, days: int, per_day: float) -> int:
    """A machine's export for the window, oldest first; returns the rows written."""
    rng: random.Random = env.rng
    path = env.home / "usage.csv"
    out = CursorUsageCsv(LineSink(path, counter=env.counter, flush_each=env.flush_each))
    rows = 0
    for day in range(days):
        t = after(start, day * 86400 + rng.uniform(7, 10) * 3600)
        for _ in range(max(1, round(per_day * rng.uniform(0.5, 1.5)))):
            t = after(t, rng.uniform(30, 2400))
            row = _row(rng, t)
            out.write_row(row)
            env.truth.call(
                machine=env.machine,
                profile=env.profile,
                agent=Agent.CURSOR.value,
                session_id="",
                model=row.model,
                role=Role.MAIN.value,
                at=row.at,
                tokens=row.tokens(),
            )
            if row.cost == "Included":
                env.truth.example("cursor.cost_label_included", path, date=iso_ms(row.at))
            rows += 1
    out.close()
    env.truth.example("cursor.csv_2025_11_header", path, rows=rows)
    return rows


def _row(rng: random.Random, at: datetime) -> CursorRow:
    # Prompts stay well under 200K: rows may be aggregates, so no long-context tier applies.
    write = rng.randrange(0, 20_000)
    inp = rng.randrange(50, 6_000)
    read = rng.randrange(0, 120_000)
    out = rng.randrange(100, 6_000)
    included = rng.random() < 0.75
    tokens = Tokens(input=inp, output=out, cache_read=read, cache_write_5m=write)
    cost = prices.call_cost(CURSOR_SONNET, tokens, at)
    assert cost is not None
    label = "Included" if included and rng.random() < 0.5 else None
    shown = str(cost.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    return CursorRow(
        at,
        "Included" if included else "On-Demand",
        CURSOR_SONNET,
        write,
        inp,
        read,
        out,
        label or shown,
    )
