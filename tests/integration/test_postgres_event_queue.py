"""Event invokes through the PostgreSQL event queue: they run, and a SIGKILL loses none."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from broker_support import POSTGRES_URL, require_postgres
from faas_support import FaasServer, ServerFactory, create_function, lambda_client, wait_until

pytestmark = pytest.mark.timeout(120)

# Appends "<request id>" to a file per event id as it starts, then sleeps if asked to.
RECORD = """
import os
import time
from pathlib import Path

def handler(event, context):
    with open(Path(os.environ["WORK_DIR"], event["id"]), "a") as attempts:
        attempts.write(context.aws_request_id + "\\n")
    time.sleep(event.get("seconds", 0))
    return {"ok": True}
"""


def _query(query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on a connection of the test's own (outside any server)."""

    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


@pytest.fixture
def queue_table() -> Iterator[str]:
    """A table of this test's own in the test database, dropped afterwards."""
    require_postgres()
    name = f"faas_events_it_{uuid.uuid4().hex[:12]}"
    yield name
    _query(f'DROP TABLE IF EXISTS "{name}"')


def _rows(table: str) -> list[asyncpg.Record]:
    return _query(f'SELECT request_id, lease_owner FROM "{table}"')


def _embedded_queue_depth(server: FaasServer) -> int:
    uri = f"file:{server.data_dir / 'registry.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _attempts(work: Path, event_id: str) -> list[str]:
    path = work / event_id
    return path.read_text().splitlines() if path.exists() else []


def _node_id(server: FaasServer) -> str:
    return (server.data_dir / "node-id").read_text().strip()


def _send(server: FaasServer, event_ids: list[str], seconds: float) -> dict[str, str]:
    """Event-invoke ``record`` once per id; returns request id by event id."""
    client = lambda_client(server)
    request_ids = {}
    for event_id in event_ids:
        response = client.invoke(
            FunctionName="record",
            InvocationType="Event",
            Payload=json.dumps({"id": event_id, "seconds": seconds}).encode(),
        )
        assert response["StatusCode"] == 202
        request_ids[event_id] = response["ResponseMetadata"]["RequestId"]
    return request_ids


def _start(make_server: ServerFactory, table: str, work: Path, **settings: Any) -> FaasServer:
    server = make_server(event_queue_url=f"{POSTGRES_URL}?table={table}", **settings)
    create_function(
        lambda_client(server),
        "record",
        RECORD,
        Timeout=30,
        Environment={"Variables": {"WORK_DIR": str(work)}},
    )
    return server


def test_event_invokes_run_through_the_postgres_queue(
    make_server: ServerFactory, queue_table: str, tmp_path: Path
) -> None:
    # One event at a time, each 0.3 s: the later ones are still waiting in PostgreSQL
    # when the last 202 arrives.
    server = _start(make_server, queue_table, tmp_path, dispatch_concurrency=1)
    event_ids = [f"e{i}" for i in range(5)]
    request_ids = _send(server, event_ids, seconds=0.3)
    waiting = {row["request_id"] for row in _rows(queue_table)}
    assert request_ids["e4"] in waiting, "the last event is not in the PostgreSQL queue"
    assert _embedded_queue_depth(server) == 0, "events went to the embedded queue"
    wait_until(lambda: not _rows(queue_table), 30, what="every event to leave the queue")
    for event_id in event_ids:
        assert _attempts(tmp_path, event_id) == [request_ids[event_id]]


def test_a_sigkilled_node_loses_no_event(
    make_server: ServerFactory, queue_table: str, tmp_path: Path
) -> None:
    server = _start(make_server, queue_table, tmp_path)
    event_ids = [f"e{i}" for i in range(10)]
    request_ids = _send(server, event_ids, seconds=1.5)
    wait_until(lambda: _attempts(tmp_path, "e0"), 30, what="the first event to start running")
    node_id = _node_id(server)
    server.kill()

    # Every accepted event is still there; those that were running are leased to the dead
    # incarnation (for 16 minutes), so only its own restart can hand them back quickly.
    rows = _rows(queue_table)
    assert {row["request_id"] for row in rows} == set(request_ids.values())
    leased = {row["request_id"] for row in rows if row["lease_owner"] == node_id}
    assert request_ids["e0"] in leased

    server.start()
    assert _node_id(server) == node_id
    wait_until(lambda: not _rows(queue_table), 60, what="every event to finish after the restart")
    for event_id in event_ids:
        attempts = _attempts(tmp_path, event_id)
        assert attempts and set(attempts) == {request_ids[event_id]}, (event_id, attempts)
    # The event cut short by the SIGKILL ran again, well before its old lease ran out.
    assert len(_attempts(tmp_path, "e0")) >= 2
