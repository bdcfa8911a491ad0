-- The last version number published per function: numbers are never reused.
CREATE TABLE function_version_counters (
    name         TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);

-- Aliases: a name pointing at a version, with optional weighted routing to another.
CREATE TABLE aliases (
    function_name TEXT NOT NULL,
    name          TEXT NOT NULL,
    revision_id   TEXT NOT NULL,
    config        BLOB NOT NULL,
    PRIMARY KEY (function_name, name)
);
