"""Event source mappings in the embedded SQLite store.

Design notes: a mapping is one row holding its JSON record, beside the registry in
the node's SQLite file and on its one connection (every statement runs on
aiosqlite's worker thread). Each statement takes the store's statement lock, as
``SqliteStore`` does for reads, so a mapping write never lands inside the event
flusher's open transaction. Mapping writes are control-plane operations (and
the rare change of a mapping's LastProcessingResult), so the lock costs nothing
that matters.
"""

from __future__ import annotations

from faas.store.sqlite import SqliteStore


class SqliteMappingStore:
    """Stores event source mapping records (JSON bytes) by UUID over a running SqliteStore."""

    __slots__ = ("_store",)

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def load_mappings(self) -> list[bytes]:
        query = "SELECT record FROM event_source_mappings ORDER BY uuid"
        async with self._store._statement_lock, self._store.conn.execute(query) as cursor:
            rows = await cursor.fetchall()
        return [bytes(row[0]) for row in rows]

    async def save_mapping(self, uuid: str, function_name: str, record: bytes) -> None:
        async with self._store._statement_lock:
            await self._store.conn.execute(
                "INSERT INTO event_source_mappings (uuid, function_name, record) VALUES (?, ?, ?)"
                " ON CONFLICT (uuid) DO UPDATE SET function_name = excluded.function_name,"
                " record = excluded.record",
                (uuid, function_name, record),
            )

    async def delete_mapping(self, uuid: str) -> None:
        async with self._store._statement_lock:
            await self._store.conn.execute(
                "DELETE FROM event_source_mappings WHERE uuid = ?", (uuid,)
            )
