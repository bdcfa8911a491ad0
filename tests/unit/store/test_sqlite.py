from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from faas.errors import PreconditionFailedException, ResourceConflictException
from faas.models import FunctionConfig
from faas.store.base import QueuedEvent
from faas.store.sqlite import SqliteStore


def _config(name: str = "f", revision: str = "r1") -> FunctionConfig:
    return FunctionConfig(
        name=name, runtime="python3.12", role="arn:aws:iam::000000000000:role/r",
        handler="app.handler", code_sha256_hex="ab" * 32, code_size=10, revision_id=revision,
        last_modified="2026-01-01T00:00:00.000+0000", environment={"K": "V"},
    )  # fmt: skip


def _event(request_id: str, at: float = 1.0) -> QueuedEvent:
    return QueuedEvent(request_id, "f", "$LATEST", b'{"n": 1}', enqueued_at=at)


async def test_functions_survive_reopen(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.start()
    await store.insert_function(_config())
    with pytest.raises(ResourceConflictException):
        await store.insert_function(_config())
    await store.replace_function(_config(revision="r2"), expected_revision="r1")
    with pytest.raises(PreconditionFailedException):
        await store.replace_function(_config(revision="r3"), expected_revision="r1")
    await store.stop()
    reopened = SqliteStore(tmp_path / "db.sqlite3")
    await reopened.start()
    (loaded,) = await reopened.load_functions()
    assert loaded == _config(revision="r2")
    await reopened.delete_function("f")
    assert await reopened.load_functions() == []
    await reopened.stop()


async def test_concurrent_enqueues_are_group_committed_and_durable(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite3")
    await store.start()
    await asyncio.gather(*(store.enqueue(_event(f"e{i}")) for i in range(200)))
    assert await store.depth() == 200
    await store.stop()
    reopened = SqliteStore(tmp_path / "db.sqlite3")
    await reopened.start()
    assert await reopened.depth() == 200
    await reopened.stop()


async def test_lease_hides_until_retry_or_release(store: SqliteStore) -> None:
    for i in range(3):
        await store.enqueue(_event(f"e{i}", at=float(i)))
    leased = await store.lease(2, lease_s=1000, now=10.0)
    assert sorted(e.request_id for e in leased) == ["e0", "e1"]
    assert [e.request_id for e in await store.lease(5, 1000, now=11.0)] == ["e2"]
    assert await store.lease(5, 1000, now=12.0) == []
    await store.retry("e0", visible_at=100.0, attempts=1)
    assert await store.lease(5, 1000, now=50.0) == []
    (again,) = await store.lease(5, 1000, now=100.0)
    assert (again.request_id, again.attempts) == ("e0", 1)
    await store.ack("e1")
    await store.release_all_leases()
    assert sorted(e.request_id for e in await store.lease(5, 1000, now=101.0)) == ["e0", "e2"]


async def test_expired_lease_returns_the_event(store: SqliteStore) -> None:
    await store.enqueue(_event("e0"))
    assert len(await store.lease(5, lease_s=10, now=1.0)) == 1
    assert await store.lease(5, lease_s=10, now=5.0) == []
    assert [e.request_id for e in await store.lease(5, lease_s=10, now=12.0)] == ["e0"]
