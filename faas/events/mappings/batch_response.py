"""Partial batch responses: which records a handler reported as failed.

Design notes: with ``FunctionResponseTypes: ["ReportBatchItemFailures"]`` a handler
returns ``{"batchItemFailures": [{"itemIdentifier": "<id>"}, ...]}``. As on Lambda,
an empty body, ``null``, an object without the key, a null or empty list all mean
the whole batch succeeded; invalid JSON, any other JSON value, an entry without a
non-empty string ``itemIdentifier`` (a wrong key name included), or an identifier
that is not in the batch mean the whole batch failed.
"""

from __future__ import annotations

from collections.abc import Collection

import orjson

BATCH_ITEM_FAILURES = "batchItemFailures"
ITEM_IDENTIFIER = "itemIdentifier"


def reported_failures(payload: bytes, batch_ids: Collection[str]) -> set[str] | None:
    """The item ids reported as failed (empty: all succeeded); None: the whole batch failed."""
    if not payload.strip():
        return set()
    try:
        response = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if response is None:
        return set()
    if not isinstance(response, dict):
        return None
    entries = response.get(BATCH_ITEM_FAILURES)
    if entries is None:
        return set()
    if not isinstance(entries, list):
        return None
    failed: set[str] = set()
    for entry in entries:
        if not isinstance(entry, dict):
            return None
        item_id = entry.get(ITEM_IDENTIFIER)
        if not isinstance(item_id, str) or not item_id or item_id not in batch_ids:
            return None
        failed.add(item_id)
    return failed
