"""The embedded store backend: SQLite in WAL mode through aiosqlite's own thread.

Design notes: one connection serves the registry, so every statement runs on
aiosqlite's single worker thread and never blocks the event loop. The event queue
(the ``events`` table) has a connection and a thread of its own
(``SqliteEventQueue``): enqueues are group-committed there, so durability
(synchronous=FULL) costs one fsync per batch rather than one per event, and acks
and leases share those transactions.
"""

from __future__ import annotations

import asyncio
import enum
import sqlite3
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from faas.errors import PreconditionFailedException, ResourceConflictException
from faas.models import AliasConfig, FunctionConfig, LayerVersion, LayerVersionState
from faas.store.base import ProvisionedConfig, QueuedEvent
from faas.store.sqlite_queue import SqliteEventQueue


class StoreState(enum.Enum):
    NEW = "new"  # constructed, no connection yet
    RUNNING = "running"  # connection open, event queue running
    STOPPED = "stopped"  # closed; cannot be started again


def _migrations() -> list[tuple[int, str]]:
    schema = resources.files("faas.store").joinpath("schema")
    steps = []
    for entry in schema.iterdir():
        if entry.name.endswith(".sql"):
            steps.append((int(entry.name.split("_", 1)[0]), entry.read_text()))
    return sorted(steps)


class SqliteStore:
    """FunctionRegistry, LayerRegistry and EventQueue over one SQLite file."""

    __slots__ = (
        "_conn",
        "_events",
        "_path",
        "_state",
        "_statement_lock",
    )

    def __init__(self, path: Path) -> None:
        self._path = path
        self._conn: aiosqlite.Connection | None = None
        self._state = StoreState.NEW
        self._events = SqliteEventQueue(path)
        # One connection serves the registry: a transaction (BEGIN..COMMIT) or a statement
        # whose rows are still being read (UPDATE..RETURNING) must not interleave with
        # another one, or COMMIT fails with "SQL statements in progress".
        self._statement_lock = asyncio.Lock()

    async def start(self) -> None:
        if self._state is not StoreState.NEW:
            raise RuntimeError(f"store cannot start from {self._state.value}")
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        self._conn = conn
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA busy_timeout=5000")
        await self._migrate(conn)
        try:
            await self._events.start()
        except BaseException:
            await conn.close()
            self._state = StoreState.STOPPED
            raise
        self._state = StoreState.RUNNING

    async def stop(self) -> None:
        if self._state is not StoreState.RUNNING:
            self._state = StoreState.STOPPED
            return
        self._state = StoreState.STOPPED
        await self._events.stop()  # writes the queue requests already made
        if self._conn is not None:
            await self._conn.close()

    @property
    def events(self) -> SqliteEventQueue:
        """The event queue over this store's ``events`` table (running while the store is)."""
        return self._events

    @property
    def conn(self) -> aiosqlite.Connection:
        if self._conn is None or self._state is not StoreState.RUNNING:
            raise RuntimeError("store is not running")
        return self._conn

    async def write(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run one write statement on the registry connection; returns its row count.

        Every statement on that connection holds the statement lock, writes included:
        a write that ran while another coroutine's read cursor was still open would find
        the connection inside a read transaction, and if the event queue's connection
        committed since that read began, SQLite refuses the write at once ("database is
        locked", without waiting out ``busy_timeout``).
        """
        async with self._statement_lock:
            cursor = await self.conn.execute(sql, parameters)
            rowcount = cursor.rowcount
            await cursor.close()
        return rowcount

    async def _migrate(self, conn: aiosqlite.Connection) -> None:
        async with conn.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for number, script in _migrations():
            if number <= current:
                continue
            await conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")

    # FunctionRegistry

    async def load_functions(self) -> list[FunctionConfig]:
        async with (
            self._statement_lock,
            self.conn.execute("SELECT config FROM functions ORDER BY name") as cursor,
        ):
            rows = await cursor.fetchall()
        return [FunctionConfig.from_record(orjson.loads(row[0])) for row in rows]

    async def insert_function(self, config: FunctionConfig) -> None:
        try:
            await self.write(
                "INSERT INTO functions (name, version, revision_id, code_sha256, config)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    config.name,
                    config.version,
                    config.revision_id,
                    config.code_sha256_hex,
                    orjson.dumps(config.to_record()),
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ResourceConflictException(f"Function already exist: {config.name}") from exc

    async def replace_function(self, config: FunctionConfig, expected_revision: str) -> None:
        rowcount = await self.write(
            "UPDATE functions SET revision_id = ?, code_sha256 = ?, config = ?"
            " WHERE name = ? AND version = ? AND revision_id = ?",
            (
                config.revision_id,
                config.code_sha256_hex,
                orjson.dumps(config.to_record()),
                config.name,
                config.version,
                expected_revision,
            ),
        )
        if rowcount != 1:
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. "
                "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
            )

    async def delete_function(self, name: str) -> None:
        async with self._statement_lock:
            await self._delete_function_locked(name)

    async def _delete_function_locked(self, name: str) -> None:
        conn = self.conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await conn.execute("DELETE FROM functions WHERE name = ?", (name,))
            await conn.execute("DELETE FROM aliases WHERE function_name = ?", (name,))
            await conn.execute("DELETE FROM function_version_counters WHERE name = ?", (name,))
            await conn.execute("DELETE FROM function_concurrency WHERE function_name = ?", (name,))
            await conn.execute(
                "DELETE FROM provisioned_concurrency WHERE function_name = ?", (name,)
            )
            await conn.execute("DELETE FROM event_invoke_configs WHERE function_name = ?", (name,))
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise

    # DeploymentRegistry

    async def save_deployment(self, deployment_id: str, function_name: str, alias: str,
                              state: str, created_at: float, record: bytes) -> None:  # fmt: skip
        await self.write(
            "INSERT INTO deployments (id, function_name, alias, state, created_at, record)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET state = excluded.state,"
            " record = excluded.record",
            (deployment_id, function_name, alias, state, created_at, record),
        )

    async def load_deployments(self) -> list[bytes]:
        async with (
            self._statement_lock,
            self.conn.execute("SELECT record FROM deployments ORDER BY created_at") as cursor,
        ):
            rows = await cursor.fetchall()
        return [bytes(row[0]) for row in rows]

    # ConcurrencyRegistry

    async def load_reserved(self) -> dict[str, int]:
        async with (
            self._statement_lock,
            self.conn.execute("SELECT function_name, reserved FROM function_concurrency") as cur,
        ):
            rows = await cur.fetchall()
        return {str(row[0]): int(row[1]) for row in rows}

    async def save_reserved(self, function_name: str, reserved: int | None) -> None:
        if reserved is None:
            await self.write(
                "DELETE FROM function_concurrency WHERE function_name = ?", (function_name,)
            )
            return
        await self.write(
            "INSERT INTO function_concurrency (function_name, reserved) VALUES (?, ?)"
            " ON CONFLICT (function_name) DO UPDATE SET reserved = excluded.reserved",
            (function_name, reserved),
        )

    async def load_provisioned(self) -> list[ProvisionedConfig]:
        async with (
            self._statement_lock,
            self.conn.execute(
                "SELECT function_name, qualifier, requested, last_modified"
                " FROM provisioned_concurrency"
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return [ProvisionedConfig(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]

    async def save_provisioned(self, config: ProvisionedConfig) -> None:
        await self.write(
            "INSERT INTO provisioned_concurrency (function_name, qualifier, requested,"
            " last_modified) VALUES (?, ?, ?, ?) ON CONFLICT (function_name, qualifier)"
            " DO UPDATE SET requested = excluded.requested, last_modified = excluded.last_modified",
            (config.function_name, config.qualifier, config.requested, config.last_modified),
        )

    async def delete_provisioned(self, function_name: str, qualifier: str) -> None:
        await self.write(
            "DELETE FROM provisioned_concurrency WHERE function_name = ? AND qualifier = ?",
            (function_name, qualifier),
        )

    # AliasRegistry

    async def next_version_number(self, function_name: str) -> int:
        async with (
            self._statement_lock,
            self.conn.execute(
                "INSERT INTO function_version_counters (name, last_version) VALUES (?, 1)"
                " ON CONFLICT (name) DO UPDATE SET last_version = last_version + 1"
                " RETURNING last_version",
                (function_name,),
            ) as cursor,
        ):
            row = await cursor.fetchone()
        assert row is not None
        return int(row[0])

    async def delete_version(self, function_name: str, version: str) -> None:
        await self.write(
            "DELETE FROM functions WHERE name = ? AND version = ?", (function_name, version)
        )
        await self.write(
            "DELETE FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?",
            (function_name, version),
        )

    async def load_aliases(self) -> list[AliasConfig]:
        query = "SELECT config FROM aliases"
        async with self._statement_lock, self.conn.execute(query) as cursor:
            rows = await cursor.fetchall()
        return [AliasConfig.from_record(orjson.loads(row[0])) for row in rows]

    async def insert_alias(self, alias: AliasConfig) -> None:
        try:
            await self.write(
                "INSERT INTO aliases (function_name, name, revision_id, config)"
                " VALUES (?, ?, ?, ?)",
                (alias.function_name, alias.name, alias.revision_id,
                 orjson.dumps(alias.to_record())),
            )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            raise ResourceConflictException(
                f"Alias already exists: {alias.function_name}:{alias.name}"
            ) from exc

    async def replace_alias(self, alias: AliasConfig, expected_revision: str) -> None:
        rowcount = await self.write(
            "UPDATE aliases SET revision_id = ?, config = ?"
            " WHERE function_name = ? AND name = ? AND revision_id = ?",
            (alias.revision_id, orjson.dumps(alias.to_record()), alias.function_name, alias.name,
             expected_revision),
        )  # fmt: skip
        if rowcount != 1:
            raise PreconditionFailedException(
                "The Revision Id provided does not match the latest Revision Id. "
                "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
            )

    async def delete_alias(self, function_name: str, name: str) -> None:
        await self.write(
            "DELETE FROM aliases WHERE function_name = ? AND name = ?", (function_name, name)
        )
        await self.write(
            "DELETE FROM event_invoke_configs WHERE function_name = ? AND qualifier = ?",
            (function_name, name),
        )

    async def code_hashes_in_use(self) -> set[str]:
        """Code of every function version and of every layer version not yet purged."""
        async with (
            self._statement_lock,
            self.conn.execute(
                "SELECT code_sha256 FROM functions UNION"
                " SELECT code_sha256 FROM layer_versions WHERE state != ?",
                (LayerVersionState.PURGED.value,),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return {str(row[0]) for row in rows}

    # LayerRegistry

    async def load_layer_versions(self) -> list[LayerVersion]:
        async with (
            self._statement_lock,
            self.conn.execute("SELECT record FROM layer_versions ORDER BY name, version") as cursor,
        ):
            rows = await cursor.fetchall()
        return [LayerVersion.from_record(orjson.loads(row[0])) for row in rows]

    async def insert_layer_version(self, layer: LayerVersion) -> None:
        try:
            await self.write(
                "INSERT INTO layer_versions (name, version, state, code_sha256, record)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    layer.name,
                    layer.version,
                    layer.state.value,
                    layer.code_sha256_hex,
                    orjson.dumps(layer.to_record()),
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise ResourceConflictException(
                f"Layer version already exists: {layer.name}:{layer.version}"
            ) from exc

    async def set_layer_version_state(
        self, name: str, version: int, state: LayerVersionState
    ) -> None:
        # One statement, so it never interleaves with the event flusher's transaction.
        await self.write(
            "UPDATE layer_versions SET state = ?,"
            " record = json_set(CAST(record AS TEXT), '$.state', ?)"
            " WHERE name = ? AND version = ?",
            (state.value, state.value, name, version),
        )

    # EventQueue: the events table, through the queue's own connection and thread

    async def enqueue(self, event: QueuedEvent) -> None:
        await self._events.enqueue(event)

    async def lease(self, limit: int, lease_s: float, now: float) -> list[QueuedEvent]:
        return await self._events.lease(limit, lease_s, now)

    async def ack(self, request_id: str) -> None:
        await self._events.ack(request_id)

    async def retry(
        self, request_id: str, visible_at: float, attempts: int, throttles: int = 0
    ) -> None:
        await self._events.retry(request_id, visible_at, attempts, throttles)

    async def release_all_leases(self) -> None:
        await self._events.release_all_leases()

    async def depth(self) -> int:
        return await self._events.depth()
