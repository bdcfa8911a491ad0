"""The PostgreSQL event queue: accepted Event invocations in one table several nodes share.

Design notes: the table (``faas_events`` unless the URL says ``?table=NAME``) has
the columns of the embedded store's ``events`` table plus ``lease_owner``, and is
created idempotently at start under an advisory lock, so nodes starting together
do not race. Enqueues and acks are group-committed (``GroupCommitter``): one
round trip inserts a whole batch (``INSERT ... SELECT FROM unnest(...) ON
CONFLICT (request_id) DO NOTHING``) or deletes one (``request_id = ANY(...)``), and
each caller returns only after its batch committed (``synchronous_commit=on``
unless the URL sets it). ``lease`` claims rows with ``FOR UPDATE SKIP LOCKED``, so
concurrent nodes never take the same event, and stamps them with this node's id.
``release_all_leases`` frees only rows stamped with this node's id: a node that
restarts on the same data directory gets its own events back at once, while the
leases of another node run on, and a node that never returns leaves its events
to come back when their ``lease_until`` passes. Times are the callers' epoch
seconds, so the nodes' clocks must agree (NTP) for leases to expire on time.
Every write is idempotent, so one whose pooled connection broke (a killed
backend, a restarted server) is sent again on another; ``lease`` is not, and
while the database is unreachable it logs and returns nothing, so the
dispatcher's poll loop outlives an outage.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from faas.store.base import QueuedEvent
from faas.store.group_commit import GroupCommitter

log = logging.getLogger(__name__)

Result = TypeVar("Result")

DEFAULT_TABLE = "faas_events"
APPLICATION_NAME = "faas-event-queue"
TABLE_PARAMETER = "table"
NODE_ID_FILE = "node-id"
_SCHEMES = ("postgresql", "postgres")
# A plain lower-case identifier, short enough for the "_visible" index name (63 bytes).
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,54}")
# A pooled connection that broke under us (killed backend, server restart): another
# connection may work at once. InternalClientError is what asyncpg raises when the
# server's goodbye arrived while the connection sat idle in the pool.
_BROKEN_CONNECTION = (asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                      asyncpg.InternalClientError, asyncpg.AdminShutdownError,
                      asyncpg.CrashShutdownError)  # fmt: skip
# The database cannot be reached right now (as opposed to "the query is wrong").
_UNREACHABLE = (*_BROKEN_CONNECTION, OSError, TimeoutError, asyncpg.CannotConnectNowError)
_CONNECT_TIMEOUT_S = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS "{table}" (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id    TEXT NOT NULL UNIQUE,
    function_name TEXT NOT NULL,
    qualifier     TEXT NOT NULL,
    payload       BYTEA NOT NULL,
    trace_id      TEXT NOT NULL DEFAULT '',
    enqueued_at   DOUBLE PRECISION NOT NULL,
    visible_at    DOUBLE PRECISION NOT NULL,
    lease_until   DOUBLE PRECISION,
    lease_owner   TEXT,
    attempts      INTEGER NOT NULL DEFAULT 0,
    throttles     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS "{table}_visible" ON "{table}" (visible_at, seq);
"""


@dataclass(frozen=True, slots=True)
class QueueLocation:
    """Where the queue lives: a DSN for asyncpg and the table's name."""

    dsn: str
    table: str
    sets_synchronous_commit: bool  # the URL chose its own synchronous_commit


def parse_queue_url(url: str) -> QueueLocation:
    """Split ``postgresql://...[?table=NAME]`` into the DSN asyncpg takes and the table.

    Raises:
        ValueError: not a postgresql:// URL, or the table name is not a plain identifier.
    """
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise ValueError(f"the event queue URL must start with postgresql://, not {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    tables = [value for key, value in query if key == TABLE_PARAMETER]
    table = tables[-1] if tables else DEFAULT_TABLE
    if not _TABLE_NAME.fullmatch(table):
        raise ValueError(
            f"the event queue table {table!r} must be a lower-case identifier"
            " (letters, digits, underscores; at most 55 characters)"
        )
    rest = [(key, value) for key, value in query if key != TABLE_PARAMETER]
    dsn = urlunsplit(parts._replace(query=urlencode(rest)))
    return QueueLocation(dsn, table, any(key == "synchronous_commit" for key, _ in rest))


async def load_node_id(data_dir: Path) -> str:
    """This node's lease owner id: made once, then kept in ``data_dir/node-id``.

    It lives with the data directory, so a node restarted on the same directory
    (after a crash, too) recognises its own leases and no other node shares it.
    """
    return await asyncio.to_thread(_read_or_create_node_id, data_dir / NODE_ID_FILE)


def _read_or_create_node_id(path: Path) -> str:
    try:
        existing = path.read_text().strip()
    except FileNotFoundError:
        existing = ""
    if existing:
        return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    node_id = uuid.uuid4().hex
    staging = path.with_name(f".{path.name}.{node_id}")
    staging.write_text(node_id + "\n")
    staging.replace(path)
    return node_id


class QueueState(enum.Enum):
    NEW = "new"  # constructed, no connection yet
    RUNNING = "running"  # pool open, committers running
    STOPPED = "stopped"  # closed; cannot be started again


class PostgresEventQueue:
    """EventQueue over one PostgreSQL table, safe for several nodes at once."""

    __slots__ = ("_acks", "_enqueues", "_location", "_node_id", "_pool", "_pool_size", "_sql",
                 "_state")  # fmt: skip

    def __init__(self, url: str, node_id: str, *, pool_size: int = 10) -> None:
        """Raises ValueError if ``url`` is not a usable queue URL (see ``parse_queue_url``)."""
        if not node_id:
            raise ValueError("the event queue needs a node id to stamp its leases with")
        self._location = parse_queue_url(url)
        self._node_id = node_id
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._sql = _statements(self._location.table)
        self._enqueues = GroupCommitter("event-enqueue", self._insert, flushers=3)
        self._acks = GroupCommitter("event-ack", self._delete, flushers=2)
        self._state = QueueState.NEW

    @property
    def table(self) -> str:
        return self._location.table

    @property
    def node_id(self) -> str:
        return self._node_id

    async def start(self) -> None:
        if self._state is not QueueState.NEW:
            raise RuntimeError(f"event queue cannot start from {self._state.value}")
        # Named by node, so pg_stat_activity shows which node holds which connection.
        settings = {"application_name": f"{APPLICATION_NAME} {self._node_id}"[:63]}
        if not self._location.sets_synchronous_commit:
            settings["synchronous_commit"] = "on"  # durable before the 202, whatever the default
        pool = await asyncpg.create_pool(
            self._location.dsn,
            min_size=2,
            max_size=self._pool_size,
            timeout=_CONNECT_TIMEOUT_S,
            server_settings=settings,
            reset=_keep_session,
        )
        try:
            await self._create_table(pool)
            await self._enqueues.start()
            await self._acks.start()
        except BaseException:
            await self._enqueues.stop()
            await pool.close()
            self._state = QueueState.STOPPED
            raise
        self._pool = pool
        self._state = QueueState.RUNNING

    async def stop(self) -> None:
        if self._state is not QueueState.RUNNING:
            self._state = QueueState.STOPPED
            return
        # Pending enqueues and acks are still written (bounded) before the pool closes.
        await self._enqueues.stop()
        await self._acks.stop()
        self._state = QueueState.STOPPED
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("event queue is not running")
        return self._pool

    async def _create_table(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext($1))", f"faas-event-queue:{self.table}"
            )
            await conn.execute(_SCHEMA.format(table=self.table))

    # EventQueue

    async def enqueue(self, event: QueuedEvent) -> None:
        await self._enqueues.submit(event)

    async def _write(self, statement: str, *args: object) -> None:
        """Run an idempotent write, again on another connection if its connection broke.

        Every write of the queue may safely run twice (the insert skips existing
        request ids; deletes and updates set absolute values), so a write whose
        commit was lost with its connection is simply written again.
        """
        await self._with_retries(lambda: self.pool.execute(statement, *args))

    async def _with_retries(self, call: Callable[[], Awaitable[Result]]) -> Result:
        # Every pooled connection may be broken (the server restarted), so one try more
        # than the pool holds reaches a fresh connection; failing to connect is final.
        for tries_left in range(self._pool_size, -1, -1):
            try:
                return await call()
            except _BROKEN_CONNECTION as exc:
                if tries_left == 0:
                    raise
                log.info("event queue connection lost, trying again: %s", exc)
        raise AssertionError("unreachable: the last try returns or raises")

    async def _insert(self, events: list[QueuedEvent]) -> None:
        await self._write(
            self._sql.insert,
            [e.request_id for e in events],
            [e.function_name for e in events],
            [e.qualifier for e in events],
            [e.payload for e in events],
            [e.trace_id for e in events],
            [e.enqueued_at for e in events],
            [e.attempts for e in events],
            [e.throttles for e in events],
        )

    async def lease(self, limit: int, lease_s: float, now: float) -> list[QueuedEvent]:
        """Claim up to ``limit`` visible events for this node.

        While the database is unreachable this logs and returns nothing, so the
        caller's poll loop carries on and picks events up once it is back.
        """
        try:
            rows = await self.pool.fetch(self._sql.lease, now + lease_s, self._node_id, now, limit)
        except _UNREACHABLE as exc:
            log.warning("event queue unreachable, nothing leased: %s", exc)
            return []
        return [
            QueuedEvent(
                request_id=row["request_id"],
                function_name=row["function_name"],
                qualifier=row["qualifier"],
                payload=bytes(row["payload"]),
                enqueued_at=float(row["enqueued_at"]),
                attempts=int(row["attempts"]),
                trace_id=str(row["trace_id"]),
                throttles=int(row["throttles"]),
            )
            for row in rows
        ]

    async def ack(self, request_id: str) -> None:
        await self._acks.submit(request_id)

    async def _delete(self, request_ids: list[str]) -> None:
        await self._write(self._sql.delete, request_ids)

    async def retry(
        self, request_id: str, visible_at: float, attempts: int, throttles: int = 0
    ) -> None:
        """Put back an event this node holds (one another node took over is left alone)."""
        await self._write(
            self._sql.retry, visible_at, attempts, throttles, request_id, self._node_id
        )

    async def release_all_leases(self) -> None:
        """Make this node's leased events visible again; other nodes' leases stay."""
        await self._write(self._sql.release, self._node_id)

    async def depth(self) -> int:
        return int(await self._with_retries(lambda: self.pool.fetchval(self._sql.depth)))


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset of a returned connection: nothing beyond asyncpg's own rollback of an
    open transaction. The queue sets no session state (no SET, LISTEN or session advisory
    lock; the table's creation lock is a transaction's), so the default reset, a round trip
    of RESET ALL and more on every release, would only cost a query per statement."""
    del conn


@dataclass(frozen=True, slots=True)
class _Statements:
    """The queue's SQL for one table."""

    insert: str
    lease: str
    delete: str
    retry: str
    release: str
    depth: str


def _statements(table: str) -> _Statements:
    """The SQL for ``table``, a name ``parse_queue_url`` already checked."""
    t = f'"{table}"'
    return _Statements(
        insert=f"INSERT INTO {t} (request_id, function_name, qualifier, payload, trace_id,"
        " enqueued_at, visible_at, attempts, throttles)"
        " SELECT r, f, q, p, tr, e, e, a, th FROM unnest($1::text[], $2::text[], $3::text[],"
        " $4::bytea[], $5::text[], $6::float8[], $7::int4[], $8::int4[])"
        " AS u(r, f, q, p, tr, e, a, th)"
        " ON CONFLICT (request_id) DO NOTHING",
        lease=f"UPDATE {t} SET lease_until = $1, lease_owner = $2 WHERE seq IN ("
        f" SELECT seq FROM {t} WHERE visible_at <= $3"
        " AND (lease_until IS NULL OR lease_until <= $3)"
        " ORDER BY visible_at, seq LIMIT $4 FOR UPDATE SKIP LOCKED)"
        " RETURNING request_id, function_name, qualifier, payload, enqueued_at, attempts,"
        " trace_id, throttles",
        delete=f"DELETE FROM {t} WHERE request_id = ANY($1::text[])",
        retry=f"UPDATE {t} SET visible_at = $1, attempts = $2, throttles = $3,"
        " lease_until = NULL, lease_owner = NULL WHERE request_id = $4 AND lease_owner = $5",
        release=f"UPDATE {t} SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = $1",
        depth=f"SELECT count(*) FROM {t}",
    )
