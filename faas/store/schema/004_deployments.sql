-- Traffic-shifting deployments of aliases; a running one is resumed after a restart.
CREATE TABLE deployments (
    id            TEXT PRIMARY KEY,
    function_name TEXT NOT NULL,
    alias         TEXT NOT NULL,
    state         TEXT NOT NULL,
    created_at    REAL NOT NULL,
    record        BLOB NOT NULL
);
CREATE INDEX deployments_state ON deployments (state);
