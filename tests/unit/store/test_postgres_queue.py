"""The PostgreSQL event queue against the machine's real PostgreSQL, one table per test."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest
from broker_support import POSTGRES_URL, require_postgres

from faas.store.base import QueuedEvent
from faas.store.postgres_queue import (
    APPLICATION_NAME,
    DEFAULT_TABLE,
    PostgresEventQueue,
    load_node_id,
    parse_queue_url,
)

pytestmark = pytest.mark.timeout(60)

LEASE_S = 960.0
MakeQueue = Callable[[str], Awaitable[PostgresEventQueue]]


def _event(
    request_id: str, at: float = 1.0, trace_id: str = "", attempts: int = 0, throttles: int = 0
) -> QueuedEvent:
    return QueuedEvent(
        request_id, "f", "$LATEST", b'{"n": 1}', enqueued_at=at, attempts=attempts,
        trace_id=trace_id, throttles=throttles,
    )  # fmt: skip


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    """A plain connection of the test's own, to look at the table from outside the queue."""
    require_postgres()
    conn = await asyncpg.connect(POSTGRES_URL)
    yield conn
    await conn.close()


@pytest.fixture
async def table(admin: asyncpg.Connection) -> AsyncIterator[str]:
    name = f"faas_events_test_{uuid.uuid4().hex[:12]}"
    yield name
    await admin.execute(f'DROP TABLE IF EXISTS "{name}"')


@pytest.fixture
async def make_queue(table: str) -> AsyncIterator[MakeQueue]:
    """Started queues on the test's table, as nodes with the given ids; stopped at teardown."""
    started: list[PostgresEventQueue] = []

    async def make(node_id: str) -> PostgresEventQueue:
        queue = PostgresEventQueue(f"{POSTGRES_URL}?table={table}", node_id)
        await queue.start()
        started.append(queue)
        return queue

    yield make
    for queue in reversed(started):
        await queue.stop()


async def _lease_all(queue: PostgresEventQueue, now: float, limit: int = 100) -> set[str]:
    return {event.request_id for event in await queue.lease(limit, LEASE_S, now)}


async def test_an_enqueued_event_is_committed_when_enqueue_returns(
    make_queue: MakeQueue, admin: asyncpg.Connection, table: str
) -> None:
    queue = await make_queue("node-a")
    await queue.enqueue(_event("e1", at=5.0, trace_id="Root=1-abc", attempts=1, throttles=2))
    # Another session sees it at once: it is committed, not parked in a buffer.
    row = await admin.fetchrow(f'SELECT * FROM "{table}" WHERE request_id = $1', "e1")
    assert row is not None
    assert (row["payload"], row["visible_at"], row["lease_owner"]) == (b'{"n": 1}', 5.0, None)
    await queue.stop()
    reopened = await make_queue("node-b")
    assert await reopened.depth() == 1
    (event,) = await reopened.lease(10, LEASE_S, now=10.0)
    assert event == _event("e1", at=5.0, trace_id="Root=1-abc", attempts=1, throttles=2)


async def test_concurrent_enqueues_share_transactions(
    make_queue: MakeQueue, admin: asyncpg.Connection, table: str
) -> None:
    queue = await make_queue("node-a")
    ids = [f"e{i}" for i in range(1000)]
    # Each id twice: an enqueue repeated with the same request id is stored once.
    await asyncio.gather(*(queue.enqueue(_event(request_id)) for request_id in ids + ids[:100]))
    assert await queue.depth() == 1000
    # xmin names the transaction that inserted the row: far fewer than one per event.
    transactions = await admin.fetchval(f'SELECT count(DISTINCT xmin::text) FROM "{table}"')
    assert transactions <= 20, transactions


async def test_two_nodes_never_lease_the_same_event(make_queue: MakeQueue) -> None:
    node_a, node_b = await make_queue("node-a"), await make_queue("node-b")
    ids = {f"e{i}" for i in range(400)}
    await asyncio.gather(*(node_a.enqueue(_event(request_id)) for request_id in ids))
    taken: dict[str, list[str]] = {"node-a": [], "node-b": []}

    async def drain(queue: PostgresEventQueue) -> None:
        while events := await queue.lease(5, LEASE_S, now=10.0):
            taken[queue.node_id].extend(event.request_id for event in events)

    # Two leasing loops per node, all at once, as two busy nodes would run them.
    await asyncio.gather(drain(node_a), drain(node_b), drain(node_a), drain(node_b))
    leased = taken["node-a"] + taken["node-b"]
    assert len(leased) == len(set(leased)) == 400, "an event was leased twice"
    assert set(leased) == ids
    assert taken["node-a"] and taken["node-b"], "one node never got to lease"


async def test_lease_skips_an_event_locked_by_another_transaction(
    make_queue: MakeQueue, admin: asyncpg.Connection, table: str
) -> None:
    queue = await make_queue("node-a")
    await asyncio.gather(*(queue.enqueue(_event(f"e{i}")) for i in range(5)))
    transaction = admin.transaction()
    await transaction.start()
    await admin.execute(f'SELECT 1 FROM "{table}" WHERE request_id = $1 FOR UPDATE', "e0")
    async with asyncio.timeout(5):  # skipped, not waited for
        assert await _lease_all(queue, now=10.0) == {"e1", "e2", "e3", "e4"}
    await transaction.rollback()
    assert await _lease_all(queue, now=10.0) == {"e0"}


async def test_a_retried_event_is_hidden_until_it_is_due(make_queue: MakeQueue) -> None:
    node_a, node_b = await make_queue("node-a"), await make_queue("node-b")
    await node_a.enqueue(_event("e1"))
    assert await _lease_all(node_a, now=10.0) == {"e1"}
    # Only the node holding the lease puts the event back.
    await node_b.retry("e1", visible_at=11.0, attempts=5)
    assert await _lease_all(node_b, now=12.0) == set()
    await node_a.retry("e1", visible_at=20.0, attempts=1, throttles=3)
    assert await _lease_all(node_b, now=19.9) == set()
    (event,) = await node_b.lease(10, LEASE_S, now=20.0)
    assert (event.request_id, event.attempts, event.throttles) == ("e1", 1, 3)


async def test_a_node_releases_only_its_own_leases(make_queue: MakeQueue) -> None:
    node_a, node_b = await make_queue("node-a"), await make_queue("node-b")
    await asyncio.gather(*(node_a.enqueue(_event(f"e{i}")) for i in range(6)))
    held_by_a = {event.request_id for event in await node_a.lease(3, LEASE_S, now=10.0)}
    held_by_b = await _lease_all(node_b, now=10.0)
    assert len(held_by_a) == 3 and held_by_a.isdisjoint(held_by_b) and len(held_by_b) == 3
    # node-a restarts (a new incarnation with the same node id) and takes its events back;
    # node-b's leases are untouched.
    await node_a.stop()
    restarted_a = await make_queue("node-a")
    await restarted_a.release_all_leases()
    assert await _lease_all(restarted_a, now=11.0) == held_by_a
    # node-b never comes back: its events return once their leases run out.
    assert await _lease_all(restarted_a, now=10.0 + LEASE_S - 1) == set()
    assert await _lease_all(restarted_a, now=10.0 + LEASE_S) == held_by_b


async def test_depth_counts_waiting_and_running_events_until_acked(
    make_queue: MakeQueue,
) -> None:
    queue = await make_queue("node-a")
    await asyncio.gather(*(queue.enqueue(_event(f"e{i}")) for i in range(5)))
    leased = await queue.lease(2, LEASE_S, now=10.0)
    assert await queue.depth() == 5
    await asyncio.gather(*(queue.ack(event.request_id) for event in leased), queue.ack("nope"))
    assert await queue.depth() == 3
    assert await _lease_all(queue, now=10.0) == {f"e{i}" for i in range(5)} - {
        event.request_id for event in leased
    }


async def test_the_queue_reconnects_after_its_connections_are_killed(
    make_queue: MakeQueue, admin: asyncpg.Connection
) -> None:
    queue = await make_queue(f"node-{uuid.uuid4().hex}")
    await queue.enqueue(_event("before"))
    # Kill this queue's own connections (its application_name names its node), none other.
    killed = await admin.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        f"{APPLICATION_NAME} {queue.node_id}",
    )
    assert killed and all(row[0] for row in killed)
    # A lease on a dead connection finds nothing rather than failing the caller's loop.
    assert await _lease_all(queue, now=10.0) in (set(), {"before"})
    await queue.enqueue(_event("after"))  # written again on a fresh connection
    assert await queue.depth() == 2


async def test_table_name_and_settings_come_from_the_url() -> None:
    location = parse_queue_url("postgresql://u@db:5432/q?sslmode=disable&table=events_x")
    assert (location.dsn, location.table) == (
        "postgresql://u@db:5432/q?sslmode=disable",
        "events_x",
    )
    assert not location.sets_synchronous_commit
    assert parse_queue_url("postgres://db/q").table == DEFAULT_TABLE
    assert parse_queue_url(
        "postgresql://db/q?synchronous_commit=remote_apply"
    ).sets_synchronous_commit
    for bad in ("postgresql://db/q?table=Events", "postgresql://db/q?table=a;drop", "mysql://db/q"):
        with pytest.raises(ValueError):
            parse_queue_url(bad)


async def test_the_node_id_is_kept_with_the_data_dir(tmp_path: Path) -> None:
    first = await load_node_id(tmp_path / "one")
    assert first and await load_node_id(tmp_path / "one") == first
    assert await load_node_id(tmp_path / "two") != first


async def test_lifecycle_is_enforced(make_queue: MakeQueue) -> None:
    queue = await make_queue("node-a")
    with pytest.raises(RuntimeError):
        await queue.start()
    await queue.stop()
    with pytest.raises(RuntimeError):
        await queue.enqueue(_event("late"))
    with pytest.raises(RuntimeError):
        await queue.lease(1, LEASE_S, now=time.time())
