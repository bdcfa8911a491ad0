"""The embedded event queue's own thread: requests made together share a transaction, stop
writes what was asked for, and a failed batch fails only its own requests."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from faas.store.base import QueuedEvent
from faas.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(30)


def _event(request_id: str, at: float = 1.0) -> QueuedEvent:
    return QueuedEvent(request_id, "f", "$LATEST", b'{"n": 1}', enqueued_at=at, trace_id="t",
                       attempts=1, throttles=2)  # fmt: skip


async def test_requests_made_together_see_each_other(store: SqliteStore) -> None:
    queue = store.events
    await asyncio.gather(*(queue.enqueue(_event(f"e{i}", at=float(i))) for i in range(300)))
    first = await queue.lease(10, lease_s=100, now=1000.0)
    # Acks, a lease and a count made in one turn of the loop: the writes come first.
    acked = [queue.ack(event.request_id) for event in first]
    leased, depth, *_ = await asyncio.gather(
        queue.lease(500, lease_s=100, now=1000.0), queue.depth(), *acked
    )
    assert sorted(first, key=lambda e: e.enqueued_at) == [
        _event(f"e{i}", at=float(i))
        for i in range(10)  # the oldest, every column back
    ]
    assert {e.request_id for e in leased} == {f"e{i}" for i in range(10, 300)}
    assert depth == 290


async def test_stop_writes_what_was_asked_for(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.start()
    pending = [asyncio.create_task(store.enqueue(_event(f"e{i}"))) for i in range(100)]
    await asyncio.sleep(0)  # every enqueue is made, none answered yet
    await store.stop()
    await asyncio.gather(*pending)
    with pytest.raises(RuntimeError, match="not running"):
        await store.events.enqueue(_event("late"))
    reopened = SqliteStore(tmp_path / "db.sqlite3")
    await reopened.start()
    assert await reopened.depth() == 100
    await reopened.stop()


async def test_a_failed_batch_fails_its_requests_only(store: SqliteStore, tmp_path: Path) -> None:
    await store.enqueue(_event("before"))
    with contextlib.closing(sqlite3.connect(tmp_path / "db.sqlite3", isolation_level=None)) as conn:
        conn.execute("ALTER TABLE events RENAME TO events_away")  # a real fault under the queue
        failures = await asyncio.gather(
            store.enqueue(_event("lost")), store.lease(5, 10, now=5.0), return_exceptions=True
        )
        assert [type(failure) for failure in failures] == [sqlite3.OperationalError] * 2
        assert all("no such table" in str(failure) for failure in failures)
        conn.execute("ALTER TABLE events_away RENAME TO events")
    await store.enqueue(_event("after"))
    assert sorted(e.request_id for e in await store.lease(5, 10, now=5.0)) == ["after", "before"]
