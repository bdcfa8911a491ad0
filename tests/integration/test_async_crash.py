"""A node SIGKILLed while 1,000 accepted Event invokes are queued or running loses none of
them: after a restart on the same store every one has run at least once (at-least-once;
the duplicates, events that were running at the kill, are counted and reported)."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from faas_support import FaasServer, ServerFactory, create_function, lambda_client, wait_until

pytestmark = pytest.mark.timeout(180)

EVENTS = 1000
SUBMITTERS = 8
DISPATCH_CONCURRENCY = 32

# Appends "<event id> <request id>" to LOG_FILE (one O_APPEND write: lines never interleave).
RECORD_ID = """
import os
import time

def handler(event, context):
    fd = os.open(os.environ["LOG_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, f"{event['id']} {context.aws_request_id}\\n".encode())
    finally:
        os.close(fd)
    time.sleep(event["seconds"])
"""


def _runs(log: Path) -> list[str]:
    """The event id of every run so far, in order."""
    if not log.exists():
        return []
    return [line.split()[0] for line in log.read_text().splitlines() if line.strip()]


def _queue_depth(server: FaasServer) -> int:
    uri = f"file:{server.data_dir / 'registry.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _submit(server: FaasServer, ids: list[str]) -> list[int]:
    client: Any = lambda_client(server)
    return [
        client.invoke(
            FunctionName="crash-victim",
            InvocationType="Event",
            Payload=json.dumps({"id": event_id, "seconds": 0.25}).encode(),
        )["StatusCode"]
        for event_id in ids
    ]


def test_sigkill_with_a_thousand_events_loses_none(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    log = tmp_path / "runs.log"
    server = make_server(dispatch_concurrency=DISPATCH_CONCURRENCY, throttle_backoff_min_s=0.1,
                         throttle_backoff_max_s=1)  # fmt: skip
    create_function(lambda_client(server), "crash-victim", RECORD_ID, Timeout=10,
                    Environment={"Variables": {"LOG_FILE": str(log)}})  # fmt: skip
    ids = [f"event-{n:04d}" for n in range(EVENTS)]
    with concurrent.futures.ThreadPoolExecutor(SUBMITTERS) as pool:
        statuses = [
            status
            for batch in pool.map(lambda part: _submit(server, part),
                                  [ids[n::SUBMITTERS] for n in range(SUBMITTERS)])
            for status in batch
        ]  # fmt: skip
    assert statuses == [202] * EVENTS  # every event was accepted (durable) before the kill

    wait_until(lambda: len(_runs(log)) >= 50, 30, what="some events to run")
    server.kill()
    ran_before = set(_runs(log))
    assert len(ran_before) < EVENTS, "every event ran before the kill: nothing was tested"

    server.start()
    wait_until(lambda: set(_runs(log)) >= set(ids), 120, interval_s=0.2,
               what="every accepted event to run after the restart")  # fmt: skip
    wait_until(lambda: _queue_depth(server) == 0, 30, what="the queue to drain")
    runs = _runs(log)
    counts = collections.Counter(runs)
    duplicates = {event_id: n for event_id, n in counts.items() if n > 1}
    print(
        f"\n{EVENTS} events: {len(ran_before)} had started before the SIGKILL; "
        f"{len(runs)} runs in all, {len(duplicates)} events ran more than once "
        f"({sum(duplicates.values()) - len(duplicates)} extra runs): {sorted(duplicates)}"
    )
    assert set(counts) == set(ids)  # nothing missing, nothing foreign
    # Only events running when the node died run twice: at most the dispatch concurrency.
    assert len(duplicates) <= DISPATCH_CONCURRENCY
    assert all(n == 2 for n in duplicates.values())
