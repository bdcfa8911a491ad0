-- Layer versions: one row per (name, version); record is the JSON LayerVersion.
-- Rows are never removed: a purged version keeps its row (state 'purged') so that
-- its number is never handed out again, as on Lambda.
CREATE TABLE layer_versions (
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    state       TEXT NOT NULL,
    code_sha256 TEXT NOT NULL,
    record      BLOB NOT NULL,
    PRIMARY KEY (name, version)
);
