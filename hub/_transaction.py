"""One SQLite write transaction on a connection in autocommit mode (`isolation_level=None`)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Committed on exit, rolled back on any error. IMMEDIATE takes the write lock up front, so
    a busy database waits (busy_timeout) at BEGIN rather than failing halfway through."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
