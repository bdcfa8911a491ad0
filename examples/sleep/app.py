"""Sleeps for ``event["seconds"]`` (default 1), then reports how long it slept.

Useful to see timeouts (Timeout is 900 s here), long sync invokes (raise the
client's read timeout) and graceful shutdown (in-flight invokes are drained).
"""

import time


def handler(event, context):
    seconds = float(event.get("seconds", 1)) if isinstance(event, dict) else 1.0
    started = time.monotonic()
    time.sleep(seconds)
    return {
        "slept_s": round(time.monotonic() - started, 3),
        "remaining_ms": context.get_remaining_time_in_millis(),
    }
