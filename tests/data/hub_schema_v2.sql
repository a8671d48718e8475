-- The hub store as schema version 2 made it (fleetmeter before the roll-ups), for the
-- migration test.
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
