"""Registry writes while the event queue's own connection commits and a read is open.

A write on the registry connection that ran while another coroutine's read cursor was
open found the connection inside a read transaction; once the queue's connection had
committed since that read began, SQLite refused the write at once ("database is
locked", without waiting out busy_timeout). Every statement on the registry connection
holds the statement lock, so a write waits for the read to finish instead.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from faas.store.async_configs import SqliteAsyncInvocationStore
from faas.store.base import DeadLetter, QueuedEvent
from faas.store.sqlite import SqliteStore


async def _until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.001)


def _letter() -> DeadLetter:
    return DeadLetter("q", str(uuid.uuid4()), b"x", {}, time.time())


async def test_a_write_waits_for_an_open_read_across_a_queue_commit(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "registry.sqlite3")
    await store.start()
    dead_letters = SqliteAsyncInvocationStore(store)
    try:
        for _ in range(3):
            await dead_letters.put_dead_letter(_letter())
        async with store._statement_lock:  # a read in progress, as every reader holds it
            cursor = await store.conn.execute("SELECT message_id FROM dead_letters")
            assert await cursor.fetchone() is not None  # the read transaction is open
            # The queue's connection commits: the open read's snapshot is now stale.
            await store.enqueue(QueuedEvent(str(uuid.uuid4()), "f", "$LATEST", b"{}", time.time()))
            write = asyncio.create_task(dead_letters.put_dead_letter(_letter()))
            lock = store._statement_lock
            await _until(lambda: write.done() or bool(lock._waiters), 10, "the write to wait")
            assert not write.done(), write.exception() if write.done() else None
            await cursor.close()
        await asyncio.wait_for(write, 10)
        assert await dead_letters.count_dead_letters("q") == 4
    finally:
        await store.stop()
