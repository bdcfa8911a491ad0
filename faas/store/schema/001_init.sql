-- Function versions: one row per (name, version); config is the JSON record.
CREATE TABLE functions (
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    config      BLOB NOT NULL,
    PRIMARY KEY (name, version)
);

-- Accepted Event invocations waiting to run, or leased by the dispatcher.
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id    TEXT NOT NULL UNIQUE,
    function_name TEXT NOT NULL,
    qualifier     TEXT NOT NULL,
    payload       BLOB NOT NULL,
    trace_id      TEXT NOT NULL DEFAULT '',
    enqueued_at   REAL NOT NULL,
    visible_at    REAL NOT NULL,
    lease_until   REAL,
    attempts      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_visible ON events (visible_at, seq);
