"""Rows of the dashboard's view model, read without a screen: what a cell says and flags."""

from __future__ import annotations

from hub._sessions import SessionFigures
from hub._totals import Totals
from hub.dashboard import COLUMNS, Table, session_row
from shared.events import Agent

NOW = 1_800_000_000.0
CACHE = [c.key for c in COLUMNS[Table.SESSIONS]].index("cache")


def session(main: Totals) -> SessionFigures:
    return SessionFigures("s1", "spark02", Agent.CLAUDE_CODE, main=main, last_ts=NOW - 5)


def test_a_session_that_writes_the_cache_and_never_reads_it_is_flagged() -> None:
    thrash = session_row("s1", session(Totals(input=300, cache_write_5m=90_000)), None, NOW)
    # marked, not only coloured: it reads so on a terminal without colour (NO_COLOR)
    assert (thrash.cells[CACHE].text, thrash.cells[CACHE].tone) == ("0% ▼", "bad")


def test_last_call_sorts_newest_first_on_the_first_press() -> None:
    """A numeric column sorts largest first on its first press (↓): for `last call` that is
    the latest call, not the oldest."""
    last = [c.key for c in COLUMNS[Table.SESSIONS]].index("last")
    assert COLUMNS[Table.SESSIONS][last].numeric
    recent = SessionFigures("s1", "spark02", Agent.CLAUDE_CODE, main=Totals(), last_ts=NOW - 5)
    old = SessionFigures("s2", "spark02", Agent.CLAUDE_CODE, main=Totals(), last_ts=NOW - 500)
    rows = [session_row(f.key, f, None, NOW) for f in (old, recent)]
    newest_first = sorted(rows, key=lambda r: r.cells[last].sort, reverse=True)
    assert [r.key for r in newest_first] == ["s1", "s2"]
    assert [r.cells[last].text for r in newest_first] == ["5s", "8m"]


def test_a_session_that_reads_its_cache_back_is_not() -> None:
    fine = Totals(input=300, cache_write_5m=90_000, cache_read=900_000)
    row = session_row("s1", session(fine), None, NOW)
    assert (row.cells[CACHE].text, row.cells[CACHE].tone) == ("91%", "")


def test_small_writes_without_reads_are_not_thrash_yet() -> None:
    start = session_row("s1", session(Totals(input=300, cache_write_5m=4_000)), None, NOW)
    assert start.cells[CACHE].tone == ""
