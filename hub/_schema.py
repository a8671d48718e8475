"""The hub database's tables, and opening a connection with the settings the store relies on.

Money is stored as decimal TEXT, never as a float or integer units: the engine's exact amounts
carry arbitrary decimal places (rates like $0.0375/MTok times a 1.1 geography multiplier), which
integer nano-dollars would round. What is stored is the API-equivalent amount and whether it is
an estimate, never the cost class: the class follows the profile's billing, which a hello may
change, so readers classify with the billing they know now (`pricing.classify`).

Each usage row keeps the amount it was priced at when stored, so that a later revision
withdraws from the roll-ups exactly what the row added, whatever the price tables say by then.
The roll-ups (`hub._rollup`) are kept for good; raw rows older than the retention are pruned.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Final, Literal, NoReturn

from hub import _credit_store as credit_store
from hub import _outcome_rollup as outcome_rollup
from hub._rollup import MINUTE_KEEP_S, RollupDeltas, StorePricer, amount_text, register
from shared.codec import unpack
from shared.events import UsageEvent

SCHEMA_VERSION: Final = 5
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
    session_id TEXT NOT NULL,
    amount     TEXT,              -- API-equivalent USD as priced when stored (NULL: unknown)
    estimated  INTEGER NOT NULL,
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

CREATE TABLE rollup (             -- usage summed per quarter-hour and scope, kept for good
    quarter     INTEGER NOT NULL,  -- epoch seconds // 900: a day in any zone is whole quarters
    machine     TEXT NOT NULL,
    profile     TEXT NOT NULL,     -- '' where the call names none (so too account, project)
    account     TEXT NOT NULL,
    agent       TEXT NOT NULL,
    project     TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    session_row TEXT NOT NULL,     -- the root session a subagent's calls are shown under
    model       TEXT NOT NULL,
    role        TEXT NOT NULL,
    priced      INTEGER NOT NULL,  -- 0: no price known (the calls and tokens are unknown)
    estimated   INTEGER NOT NULL,
    calls       INTEGER NOT NULL,
    input       INTEGER NOT NULL,
    output      INTEGER NOT NULL,
    cache_read  INTEGER NOT NULL,
    cache_write_5m INTEGER NOT NULL,
    cache_write_1h INTEGER NOT NULL,
    reasoning   INTEGER NOT NULL,
    web_search_requests INTEGER NOT NULL,
    retracted   INTEGER NOT NULL,  -- calls found to copy another one (they count nothing)
    amount      TEXT NOT NULL,     -- API-equivalent USD, exact
    first_ts    REAL NOT NULL,
    last_ts     REAL NOT NULL,
    git_branch  TEXT,
    PRIMARY KEY (quarter, machine, profile, account, agent, project, session_id, session_row,
                 model, role, priced, estimated)
) WITHOUT ROWID;

CREATE TABLE rollup_minute (      -- the last day's usage per minute: the run rate at start-up
    minute    INTEGER NOT NULL,   -- epoch seconds // 60
    machine   TEXT NOT NULL,
    profile   TEXT NOT NULL,
    priced    INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    calls     INTEGER NOT NULL,
    tokens    INTEGER NOT NULL,
    amount    TEXT NOT NULL,
    PRIMARY KEY (minute, machine, profile, priced, estimated)
) WITHOUT ROWID;

CREATE TABLE meta (               -- the store's own facts (pruned_before: raw events pruned)
    key   TEXT PRIMARY KEY,
    value ANY
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
# version after the first, so an old hub's database opens at SCHEMA_VERSION). A step is SQL,
# or a function of the connection and the pricer (v3 prices every kept call into the roll-ups).
_V2_TO_V3: Final = "v3"
_V3_TO_V4: Final = "v4"
_V4_TO_V5: Final = "v5"
_UPGRADES: Final = (
    # v2: no query reads usage by machine, and every index costs each insert a random write
    "DROP INDEX IF EXISTS usage_machine",
    _V2_TO_V3,
    # v4: the outcome roll-up (`hub._outcome_rollup`), filled from the kept calls
    _V3_TO_V4,
    # v5: the Agent SDK credit's draws (`hub._credit_store`), filled when the hub first
    # settles its subscriptions (`Store.use_subscriptions`)
    _V4_TO_V5,
)
_MIGRATE_BATCH: Final = 20_000  # usage rows re-filed per step of the v3 migration


class StoreError(RuntimeError):
    """A database file the hub cannot use; the message names the file."""


def connect(
    path: Path,
    synchronous: Synchronous = "NORMAL",
    pricer: StorePricer | None = None,
    cache_kib: int = CACHE_KIB,
) -> sqlite3.Connection:
    """Open (creating if needed) a hub database in WAL mode, migrating an older one (`pricer`
    prices the calls an old store holds into the roll-ups; needed only for a v2 store).

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
        register(db)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Before the first table (a new file): pruned pages can then be handed back in steps.
        db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path}: cannot use WAL journal mode (got {mode!r})")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute(f"PRAGMA cache_size = -{cache_kib}")
        db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT}")
        if _migrate(db, path, pricer):
            # auto_vacuum of a file made before v3 only changes with a VACUUM (once).
            db.execute("VACUUM")
    except BaseException as exc:
        db.close()
        if isinstance(exc, sqlite3.DatabaseError):
            raise StoreError(f"{path}: not a usable hub database: {exc}") from exc
        raise
    return db


def _migrate(db: sqlite3.Connection, path: Path, pricer: StorePricer | None) -> bool:
    """Create or upgrade the tables; True when an older version was upgraded."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:
            _run(db, _TABLES)
            outcome_rollup.create_tables(db)
            credit_store.create_tables(db)
            if pricer is not None:  # the tables its calls will be priced under
                db.execute("INSERT INTO meta VALUES ('prices', ?)", (pricer.fingerprint(),))
        elif 0 < version < SCHEMA_VERSION:
            for step in _UPGRADES[version - 1 :]:
                if step is _V2_TO_V3:
                    _to_v3(db, pricer or _no_pricer(path))
                elif step is _V3_TO_V4:
                    outcome_rollup.create_tables(db)
                    outcome_rollup.rebuild(db)
                elif step is _V4_TO_V5:
                    credit_store.create_tables(db)
                else:
                    db.execute(step)
        elif version != SCHEMA_VERSION:
            raise StoreError(
                f"{path}: database schema version {version}, this fleet-hub reads "
                f"{SCHEMA_VERSION} (written by a newer fleetmeter)"
            )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return 0 < version < SCHEMA_VERSION


def _run(db: sqlite3.Connection, script: str) -> None:
    # executescript would commit our transaction first: run the statements one by one.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _no_pricer(path: Path) -> NoReturn:
    raise StoreError(f"{path}: an older store needs pricing to migrate; open it with a price book")


def _to_v3(db: sqlite3.Connection, pricer: StorePricer) -> None:
    """v3: usage rows keep their price and drop the columns their payload repeats; every kept
    call is summed into the roll-ups."""
    db.execute("ALTER TABLE usage RENAME TO usage_v2")
    db.execute("DROP INDEX IF EXISTS usage_ts")
    db.execute("DROP INDEX IF EXISTS usage_session")
    tables = _TABLES[_TABLES.index("CREATE TABLE usage (") : _TABLES.index("CREATE TABLE limits")]
    rollups = _TABLES[_TABLES.index("CREATE TABLE rollup (") : _TABLES.index("CREATE TABLE audit")]
    # (and the meta table, which comes with them)
    _run(db, tables + rollups)
    deltas = RollupDeltas(minutes_since=time.time() - MINUTE_KEEP_S)
    rows = db.execute(
        "SELECT event_id, revision, counted, ts, machine, session_id, payload FROM usage_v2"
    )
    while batch := rows.fetchmany(_MIGRATE_BATCH):
        filed = []
        for event_id, revision, counted, ts, machine, session_id, payload in batch:
            event = unpack(payload)
            assert isinstance(event, UsageEvent), "the usage table holds usage events only"
            amount, estimated = pricer(event)
            deltas.add(event, (amount, estimated), 1)
            filed.append(
                (
                    event_id,
                    revision,
                    counted,
                    ts,
                    machine,
                    session_id,
                    amount_text(amount),
                    int(estimated),
                    payload,
                )
            )
        db.executemany("INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", filed)
    deltas.write(db)
    db.execute("INSERT INTO meta (key, value) VALUES ('prices', ?)", (pricer.fingerprint(),))
    db.execute("DROP TABLE usage_v2")
