-- Event source mappings: one row per mapping; record is the JSON of EventSourceMapping.
CREATE TABLE event_source_mappings (
    uuid          TEXT PRIMARY KEY,
    function_name TEXT NOT NULL,
    record        BLOB NOT NULL
);
CREATE INDEX event_source_mappings_function ON event_source_mappings (function_name);
