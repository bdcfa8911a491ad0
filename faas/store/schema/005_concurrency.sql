-- Reserved concurrency per function, and provisioned concurrency per version or alias.
CREATE TABLE function_concurrency (
    function_name TEXT PRIMARY KEY,
    reserved      INTEGER NOT NULL
);
CREATE TABLE provisioned_concurrency (
    function_name TEXT NOT NULL,
    qualifier     TEXT NOT NULL,
    requested     INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    PRIMARY KEY (function_name, qualifier)
);
