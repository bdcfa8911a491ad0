"""Event invocations: retries of function errors, throttles, and the account concurrency limit."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sqlite3
import threading
import urllib.request
from pathlib import Path

import pytest
from faas_support import (
    FaasServer,
    ServerFactory,
    create_function,
    invoke_json,
    lambda_client,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

# Appends "<request id> <attempt time>" to a file per event id, then fails or succeeds.
ATTEMPTS = """
import os
import time
from pathlib import Path

def handler(event, context):
    path = Path(os.environ["WORK_DIR"], event["id"])
    with open(path, "a") as attempts:
        attempts.write(f"{context.aws_request_id} {time.time()}\\n")
    time.sleep(event.get("seconds", 0))
    if event.get("fail"):
        raise RuntimeError("failing on purpose")
    return {"ok": True}
"""


def _metric(server: FaasServer, metric: str, function: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = rf'{metric}\{{[^}}]*function="{re.escape(function)}"[^}}]*\}} (\S+)'
    values = [float(value) for value in re.findall(pattern, text)]
    return sum(values)


def _queue_depth(server: FaasServer) -> int:
    """Events still in the node's durable queue, read from its store (read-only)."""
    uri = f"file:{server.data_dir / 'registry.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _attempts(work: Path, event_id: str) -> list[str]:
    path = work / event_id
    return path.read_text().splitlines() if path.exists() else []


def test_failed_event_is_retried_twice_then_dropped(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(retry_delays_s="0.2,0.2")
    client = lambda_client(server)
    create_function(
        client, "async-fails", ATTEMPTS, Environment={"Variables": {"WORK_DIR": str(tmp_path)}}
    )
    response = client.invoke(
        FunctionName="async-fails",
        InvocationType="Event",
        Payload=json.dumps({"id": "doomed", "fail": True}).encode(),
    )
    assert response["StatusCode"] == 202
    request_id = response["ResponseMetadata"]["RequestId"]
    wait_until(
        lambda: _metric(server, "faas_async_events_dropped_total", "async-fails") == 1,
        30,
        what="the event to be dropped after its retries",
    )
    attempts = _attempts(tmp_path, "doomed")
    assert len(attempts) == 3, attempts  # the first attempt and MaximumRetryAttempts (2)
    assert {line.split()[0] for line in attempts} == {request_id}
    times = [float(line.split()[1]) for line in attempts]
    assert all(later - earlier >= 0.2 for earlier, later in itertools.pairwise(times))
    assert _metric(server, "faas_async_events_received_total", "async-fails") == 1
    # Once the event has left the durable queue, nothing can run it again.
    wait_until(lambda: _queue_depth(server) == 0, 10, what="the dropped event to leave the queue")
    assert len(_attempts(tmp_path, "doomed")) == 3, "a dropped event ran again"


def test_successful_event_runs_once(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(retry_delays_s="0.2,0.2")
    client = lambda_client(server)
    create_function(
        client, "async-ok", ATTEMPTS, Environment={"Variables": {"WORK_DIR": str(tmp_path)}}
    )
    response = client.invoke(
        FunctionName="async-ok", InvocationType="Event", Payload=b'{"id": "fine"}'
    )
    wait_until(lambda: _attempts(tmp_path, "fine"), 20, what="the event to run")
    wait_until(lambda: _queue_depth(server) == 0, 10, what="the event to be acknowledged")
    attempts = _attempts(tmp_path, "fine")
    assert len(attempts) == 1, attempts
    assert attempts[0].split()[0] == response["ResponseMetadata"]["RequestId"]
    assert _metric(server, "faas_async_events_dropped_total", "async-ok") == 0


def test_account_concurrency_throttles(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(account_concurrency=1)
    client = lambda_client(server)
    create_function(
        client,
        "async-busy",
        ATTEMPTS,
        Timeout=30,
        Environment={"Variables": {"WORK_DIR": str(tmp_path)}},
    )
    holder = threading.Thread(
        target=invoke_json,
        args=(lambda_client(server), "async-busy", {"id": "holder", "seconds": 3}),
        daemon=True,
    )
    holder.start()
    wait_until(lambda: _attempts(tmp_path, "holder"), 15, what="the slot to be taken")

    with pytest.raises(client.exceptions.TooManyRequestsException) as excinfo:
        client.invoke(FunctionName="async-busy", Payload=b'{"id": "refused"}')
    error = excinfo.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert not _attempts(tmp_path, "refused")

    # An Event that finds no free slot waits and runs later, without using a retry.
    response = client.invoke(
        FunctionName="async-busy", InvocationType="Event", Payload=b'{"id": "deferred"}'
    )
    assert response["StatusCode"] == 202
    holder.join(30)
    wait_until(lambda: _attempts(tmp_path, "deferred"), 30, what="the deferred event to run")
    assert _metric(server, "faas_throttles_total", "async-busy") >= 1
    assert invoke_json(client, "async-busy", {"id": "after"})[1] == {"ok": True}


def test_event_for_a_deleted_function_is_dropped(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    server = make_server(account_concurrency=1)
    client = lambda_client(server)
    environment = {"Variables": {"WORK_DIR": str(tmp_path)}}
    create_function(client, "async-hold", ATTEMPTS, Timeout=30, Environment=environment)
    create_function(client, "async-gone", ATTEMPTS, Environment=environment)
    holder = threading.Thread(
        target=invoke_json,
        args=(lambda_client(server), "async-hold", {"id": "holder", "seconds": 2}),
        daemon=True,
    )
    holder.start()
    wait_until(lambda: _attempts(tmp_path, "holder"), 15, what="the slot to be taken")
    client.invoke(FunctionName="async-gone", InvocationType="Event", Payload=b'{"id": "orphan"}')
    client.delete_function(FunctionName="async-gone")
    holder.join(30)
    wait_until(
        lambda: _metric(server, "faas_async_events_dropped_total", "async-gone") == 1,
        30,
        what="the orphaned event to be dropped",
    )
    assert not _attempts(tmp_path, "orphan")
