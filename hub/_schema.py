"""The hub database's tables, and opening a connection with the settings the store relies on.

No money is stored: a price is a function of the stored token counts, the price tables and the
profile's billing, and tables get corrected (effective-dated, re-checked against invoices).
Storing a figure would freeze a wrong one, so the ledger re-prices from tokens at start-up.
Where money must be kept (budget decisions in the audit trail, say), it goes in as decimal TEXT:
the engine's exact amounts carry arbitrary decimal places (rates like $0.0375/MTok times a 1.1
geography multiplier), which integer nano-dollars would round.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Final, Literal

SCHEMA_VERSION: Final = 2
BUSY_TIMEOUT_MS: Final = 5_000
# The page cache, in KiB: the usage table's indexes take random inserts (event ids are hashes),
# and past ~100k calls they outgrow the 2 MiB default, so batches re-read their pages (4% of a
# batch's cost on the fleet bench).
CACHE_KIB: Final = 64 * 1024
# WAL pages before a commit checkpoints (default 1000, 4 MiB): a batch of 500 calls rewrites
# ~800 index pages (event ids are random), and a checkpoint copies each page once however many
# batches rewrote it, then syncs twice; at the default every batch paid for one. 40k pages
# (160 MiB of WAL at most) measured best on the fleet bench. A crash keeps every committed
# batch either way; a longer WAL only takes longer to replay when the hub opens.
WAL_AUTOCHECKPOINT: Final = 40_000

Synchronous = Literal["NORMAL", "FULL"]

_TABLES: Final = """
CREATE TABLE streams (            -- per node stream: the highest batch seq committed
    node      TEXT NOT NULL,
    stream    TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    committed REAL NOT NULL,
    PRIMARY KEY (node, stream)
) WITHOUT ROWID;

CREATE TABLE usage (              -- the kept (highest) revision of each usage event
    event_id   TEXT PRIMARY KEY,
    revision   INTEGER NOT NULL,
    counted    INTEGER NOT NULL,  -- 0 for a retraction (duplicate_of set)
    ts         REAL NOT NULL,
    machine    TEXT NOT NULL,     -- the authenticated node, whatever the event said
    profile    TEXT,
    account    TEXT,
    session_id TEXT NOT NULL,
    model      TEXT NOT NULL,
    agent      TEXT NOT NULL,
    received   REAL NOT NULL,
    payload    BLOB NOT NULL      -- the event, attribution applied, as shared.codec bytes
);
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_session ON usage (session_id);

CREATE TABLE limits (
    event_id TEXT PRIMARY KEY,
    ts       REAL NOT NULL,
    machine  TEXT NOT NULL,
    profile  TEXT,
    account  TEXT,
    agent    TEXT NOT NULL,
    kind     TEXT NOT NULL,
    received REAL NOT NULL,
    payload  BLOB NOT NULL
);
CREATE INDEX limits_ts ON limits (ts);

CREATE TABLE profile_events (
    event_id TEXT PRIMARY KEY,
    ts       REAL NOT NULL,
    machine  TEXT NOT NULL,
    profile  TEXT NOT NULL,
    agent    TEXT NOT NULL,
    state    TEXT NOT NULL,
    received REAL NOT NULL,
    payload  BLOB NOT NULL
);
CREATE INDEX profile_events_ts ON profile_events (ts);

CREATE TABLE nodes (
    node       TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen  REAL,
    version    TEXT,
    boot_time  REAL,
    os         TEXT,
    cpu_count  INTEGER
) WITHOUT ROWID;

CREATE TABLE profiles (
    node           TEXT NOT NULL,
    name           TEXT NOT NULL,
    agent          TEXT NOT NULL,
    billing        TEXT NOT NULL,
    account        TEXT,
    plan           TEXT,
    first_seen     REAL NOT NULL,
    last_announced REAL NOT NULL,
    PRIMARY KEY (node, name)
) WITHOUT ROWID;

CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts     REAL NOT NULL,
    who    TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    result TEXT NOT NULL
);
"""
# Schema changes from each older version to the next, in order: v1 -> v2, ... (one per
# version after the first, so an old hub's database opens at SCHEMA_VERSION).
_UPGRADES: Final = (
    # v2: no query reads usage by machine, and every index costs each insert a random write
    "DROP INDEX IF EXISTS usage_machine",
)


class StoreError(RuntimeError):
    """A database file the hub cannot use; the message names the file."""


def connect(path: Path, synchronous: Synchronous = "NORMAL") -> sqlite3.Connection:
    """Open (creating if needed) a hub database in WAL mode.

    Autocommit mode: the store opens every write transaction itself (BEGIN IMMEDIATE), so a
    batch is all-or-nothing. WAL makes a committed transaction survive a kill -9 at any moment
    (frames without a commit record are discarded on the next open). `synchronous=NORMAL` does
    not fsync each commit: a power loss or OS crash (not a process crash) may undo the last
    few commits; FULL closes that at the cost of one fsync per batch.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # One connection shared by threads that the owner serialises (the hub service holds a lock).
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path}: cannot use WAL journal mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
        _migrate(db, path)
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.DatabaseError):
            raise StoreError(f"{path}: not a usable hub database: {exc}") from exc
        raise
    return db


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            # executescript would commit our transaction first: run the statements one by one.
            for statement in _TABLES.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif 0 < version < SCHEMA_VERSION:
            for statement in _UPGRADES[version - 1 :]:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        elif version != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: database schema version {version}, this fleet-hub reads "
                f"{SCHEMA_VERSION} (written by a newer fleetmeter)"
            )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
