-- Asynchronous invocation settings (PutFunctionEventInvokeConfig) per function, version or
-- alias; qualifier is '$LATEST' for the unqualified function. record is the JSON config.
CREATE TABLE event_invoke_configs (
    function_name TEXT NOT NULL,
    qualifier     TEXT NOT NULL,
    record        BLOB NOT NULL,
    PRIMARY KEY (function_name, qualifier)
);

-- The store's own dead-letter queues (arn:aws:faas:<region>:<account>:dlq:<queue>), read
-- and redriven with `faas dlq`. attributes is a JSON object of strings.
CREATE TABLE dead_letters (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    queue      TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    body       BLOB NOT NULL,
    attributes BLOB NOT NULL,
    sent_at    REAL NOT NULL
);
CREATE INDEX dead_letters_queue ON dead_letters (queue, seq);

-- Throttles and node-side faults an event met since it last ran (its backoff grows with them).
ALTER TABLE events ADD COLUMN throttles INTEGER NOT NULL DEFAULT 0;
