"""Event invoke configs and the store's own dead-letter queues, in the embedded SQLite store.

Design notes: both live beside the registry in the node's SQLite file and share
its one connection (every statement runs on aiosqlite's worker thread). A
statement whose rows are read after it starts takes the store's statement lock,
as ``SqliteStore`` does, so it never interleaves with the event flusher's
transaction. The rows of a function's configs go with the function inside the
store's own delete transaction; dead letters stay until they are redriven or
deleted, like messages of any queue whose producer went away.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from faas.store.base import DeadLetter
from faas.store.sqlite import SqliteStore

_DELETE_BATCH = 500  # bound parameters per statement (SQLite allows 32,766 since 3.32)


class SqliteAsyncInvocationStore:
    """InvokeConfigRegistry and DeadLetterStore over a running SqliteStore."""

    __slots__ = ("_store",)

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    # InvokeConfigRegistry

    async def load_invoke_configs(self) -> list[tuple[str, str, bytes]]:
        query = "SELECT function_name, qualifier, record FROM event_invoke_configs"
        async with self._store._statement_lock, self._store.conn.execute(query) as cursor:
            rows = await cursor.fetchall()
        return [(str(row[0]), str(row[1]), bytes(row[2])) for row in rows]

    async def save_invoke_config(self, function_name: str, qualifier: str, record: bytes) -> None:
        await self._store.write(
            "INSERT INTO event_invoke_configs (function_name, qualifier, record) VALUES (?, ?, ?)"
            " ON CONFLICT (function_name, qualifier) DO UPDATE SET record = excluded.record",
            (function_name, qualifier, record),
        )

    async def delete_invoke_config(self, function_name: str, qualifier: str) -> None:
        await self._store.write(
            "DELETE FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?",
            (function_name, qualifier),
        )

    # DeadLetterStore

    async def put_dead_letter(self, letter: DeadLetter) -> None:
        await self._store.write(
            "INSERT OR IGNORE INTO dead_letters (queue, message_id, body, attributes, sent_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (letter.queue, letter.message_id, letter.body,
             orjson.dumps(dict(letter.attributes)), letter.sent_at),
        )  # fmt: skip

    async def list_dead_letters(self, queue: str, limit: int) -> list[DeadLetter]:
        async with (
            self._store._statement_lock,
            self._store.conn.execute(
                "SELECT message_id, body, attributes, sent_at FROM dead_letters"
                " WHERE queue = ? ORDER BY seq LIMIT ?",
                (queue, limit),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [
            DeadLetter(queue, str(row[0]), bytes(row[1]), orjson.loads(row[2]), float(row[3]))
            for row in rows
        ]

    async def count_dead_letters(self, queue: str) -> int:
        async with (
            self._store._statement_lock,
            self._store.conn.execute(
                "SELECT COUNT(*) FROM dead_letters WHERE queue = ?", (queue,)
            ) as cursor,
        ):
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def delete_dead_letters(self, queue: str, message_ids: Sequence[str]) -> None:
        # One statement per batch, not per message: each autocommitted statement costs an
        # fsync (synchronous=FULL).
        for start in range(0, len(message_ids), _DELETE_BATCH):
            batch = message_ids[start : start + _DELETE_BATCH]
            marks = ", ".join("?" * len(batch))
            await self._store.write(
                f"DELETE FROM dead_letters WHERE queue = ? AND message_id IN ({marks})",
                (queue, *batch),
            )
