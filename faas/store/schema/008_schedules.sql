-- Scheduled rules: a rate()/cron() expression that enqueues Event invokes of a function.
-- anchor_at: when the rule's schedule started (created, expression changed, re-enabled);
-- rate() ticks count from it and no tick at or before it is owed.
-- last_fired_at: the tick (epoch seconds) most recently enqueued; NULL before the first.
CREATE TABLE schedules (
    name          TEXT PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    expression    TEXT NOT NULL,
    function_name TEXT NOT NULL,
    qualifier     TEXT NOT NULL DEFAULT '',
    input         TEXT,
    description   TEXT NOT NULL DEFAULT '',
    enabled       INTEGER NOT NULL,
    created_at    REAL NOT NULL,
    anchor_at     REAL NOT NULL,
    last_fired_at REAL
);
