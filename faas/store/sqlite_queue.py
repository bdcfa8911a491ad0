"""The embedded event queue: the store's ``events`` table through a connection and a thread
of its own.

Design notes: every queue operation (enqueue, lease, ack, retry, ...) is a request
handed to one writer thread that owns a ``sqlite3`` connection to the store's file
(WAL, ``synchronous=FULL``). When the thread wakes it takes every request waiting
and runs them all in one transaction, then answers the whole batch with one
callback into the event loop. So a batch of any size costs one fsync, one wake of
the thread and one wake of the loop, and the thread starts on the requests that
arrived meanwhile as soon as the batch committed, without waiting for the loop
(group commit, pipelined). An enqueue returns only after the transaction holding
it committed: with ``synchronous=FULL`` the WAL was fsynced, so the event survives
a crash of the process or of the machine. A batch of enqueues alone is a single
multi-row ``INSERT`` in autocommit mode, one ``sqlite3_step`` in all; the thread
gives up the GIL only there and while it waits. Leases are written too (they
keep their meaning for ``lease_s``), but a fresh node releases them all at start,
so they could not outlive the process anyway. A failed batch fails every request
in it and nothing else. ``stop`` writes the requests already handed over, then
closes the connection. The store's other tables stay on the aiosqlite
connection; the two connections take turns as SQLite's single writer
(``busy_timeout``).
"""

from __future__ import annotations

import asyncio
import enum
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from faas.store.base import QueuedEvent

# At most this many requests share one transaction; more wait for the next one.
_MAX_BATCH: Final = 2048
# Rows per multi-row INSERT or DELETE statement (bounded: one prepared statement per size).
_MAX_ROWS_PER_STATEMENT: Final = 256
_BUSY_TIMEOUT_MS: Final = 5000
_INSERT_COLUMNS: Final = (
    "request_id, function_name, qualifier, payload, trace_id, enqueued_at, visible_at,"
    " attempts, throttles"
)
_INSERT_ROW: Final = "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
_LEASE: Final = (
    "UPDATE events SET lease_until = ? WHERE seq IN ("
    " SELECT seq FROM events WHERE visible_at <= ?"
    " AND (lease_until IS NULL OR lease_until <= ?) ORDER BY visible_at, seq LIMIT ?)"
    " RETURNING request_id, function_name, qualifier, payload, enqueued_at, attempts,"
    " trace_id, throttles"
)
_RETRY: Final = (
    "UPDATE events SET visible_at = ?, attempts = ?, throttles = ?, lease_until = NULL"
    " WHERE request_id = ?"
)


class _Op(enum.Enum):
    INSERT = "insert"  # argument: the QueuedEvent
    ACK = "ack"  # argument: the request id
    RETRY = "retry"  # argument: (visible_at, attempts, throttles, request id)
    LEASE = "lease"  # argument: (lease_until, now, limit); result: list[QueuedEvent]
    RELEASE_ALL = "release_all"  # argument: None
    DEPTH = "depth"  # argument: None; result: int
    STOP = "stop"  # argument: None; the thread closes the connection and ends


_Request = tuple[_Op, object, "asyncio.Future[object] | None"]
Item = TypeVar("Item")


class QueueState(enum.Enum):
    NEW = "new"  # constructed, no thread yet
    RUNNING = "running"  # the writer thread serves requests
    STOPPED = "stopped"  # the thread ended; cannot be started again


class SqliteEventQueue:
    """EventQueue over the ``events`` table of an SQLite file, written by one thread."""

    __slots__ = ("_delete_sql", "_insert_sql", "_loop", "_path", "_requests", "_state",
                 "_stopped", "_thread")  # fmt: skip

    def __init__(self, path: Path) -> None:
        """``path`` is the store's file; its schema must already hold the ``events`` table."""
        self._path = path
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        # SQL text by row count, built once each (the connection caches the prepared ones).
        self._insert_sql: dict[int, str] = {}
        self._delete_sql: dict[int, str] = {}
        self._state = QueueState.NEW

    async def start(self) -> None:
        """Open the connection on the writer thread; raises what opening it raised."""
        if self._state is not QueueState.NEW:
            raise RuntimeError(f"event queue cannot start from {self._state.value}")
        loop = asyncio.get_running_loop()
        self._loop = loop
        opened: asyncio.Future[None] = loop.create_future()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(
            target=self._serve, args=(opened,), name="event-queue-writer", daemon=True
        )
        self._thread.start()
        try:
            await opened
        except BaseException:
            self._state = QueueState.STOPPED
            raise
        self._state = QueueState.RUNNING

    async def stop(self) -> None:
        """Write what was already handed over, then close the connection."""
        if self._state is not QueueState.RUNNING:
            self._state = QueueState.STOPPED
            return
        self._state = QueueState.STOPPED
        self._requests.put((_Op.STOP, None, None))
        assert self._stopped is not None
        await self._stopped

    # EventQueue

    async def enqueue(self, event: QueuedEvent) -> None:
        """Return once the event is committed (durable)."""
        await self._submit(_Op.INSERT, event)

    async def lease(self, limit: int, lease_s: float, now: float) -> list[QueuedEvent]:
        leased = await self._submit(_Op.LEASE, (now + lease_s, now, limit))
        assert isinstance(leased, list)
        return leased

    async def ack(self, request_id: str) -> None:
        await self._submit(_Op.ACK, request_id)

    async def retry(
        self, request_id: str, visible_at: float, attempts: int, throttles: int = 0
    ) -> None:
        await self._submit(_Op.RETRY, (visible_at, attempts, throttles, request_id))

    async def release_all_leases(self) -> None:
        await self._submit(_Op.RELEASE_ALL, None)

    async def depth(self) -> int:
        count = await self._submit(_Op.DEPTH, None)
        assert isinstance(count, int)
        return count

    def _submit(self, op: _Op, argument: object) -> asyncio.Future[object]:
        if self._state is not QueueState.RUNNING:
            raise RuntimeError("the event queue is not running")
        assert self._loop is not None
        answer: asyncio.Future[object] = self._loop.create_future()
        self._requests.put((op, argument, answer))
        return answer

    # The writer thread

    def _serve(self, opened: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None and self._stopped is not None
        try:
            conn = self._connect()
        except BaseException as exc:  # thread boundary: start() raises it
            _post(loop, _settle_one, opened, exc)
            _post(loop, _settle_one, self._stopped, None)
            return
        _post(loop, _settle_one, opened, None)
        try:
            while self._serve_batch(conn, loop):
                pass
        finally:
            conn.close()
            _post(loop, _settle_one, self._stopped, None)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            isolation_level=None,  # autocommit; transactions are explicit
            check_same_thread=True,
            cached_statements=2 * _MAX_ROWS_PER_STATEMENT + 16,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _serve_batch(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> bool:
        """Take the waiting requests, run them in one transaction, answer them; False at STOP."""
        batch = [self._requests.get()]
        for _ in range(min(self._requests.qsize(), _MAX_BATCH - 1)):
            batch.append(self._requests.get_nowait())
        is_stopping = any(op is _Op.STOP for op, _, _ in batch)
        work = [request for request in batch if request[0] is not _Op.STOP]
        if work:
            try:
                results: Sequence[object] | BaseException = self._run(conn, work)
            except Exception as exc:  # thread boundary: every request of the batch gets it
                results = exc
            _post(loop, _answer, work, results)
        return not is_stopping

    def _run(self, conn: sqlite3.Connection, batch: list[_Request]) -> list[object]:
        """Every request of ``batch`` in one transaction; the results in the batch's order."""
        events = [argument for op, argument, _ in batch if op is _Op.INSERT]
        if len(events) == len(batch) and len(events) <= _MAX_ROWS_PER_STATEMENT:
            # Enqueues alone, the accept path: one autocommit statement, one step.
            self._insert(conn, events)  # type: ignore[arg-type]
            return [None] * len(batch)
        conn.execute("BEGIN IMMEDIATE")
        try:
            results = self._run_in_transaction(conn, batch, events)  # type: ignore[arg-type]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _run_in_transaction(
        self, conn: sqlite3.Connection, batch: list[_Request], events: list[QueuedEvent]
    ) -> list[object]:
        # Writes first, then reads, so a lease or a count sees the batch's own writes.
        for chunk in _chunks(events):
            self._insert(conn, chunk)
        acked = [argument for op, argument, _ in batch if op is _Op.ACK]
        for chunk in _chunks(acked):
            conn.execute(self._delete_statement(len(chunk)), chunk)
        retries = [argument for op, argument, _ in batch if op is _Op.RETRY]
        if retries:
            conn.executemany(_RETRY, retries)  # type: ignore[arg-type]
        if any(op is _Op.RELEASE_ALL for op, _, _ in batch):
            conn.execute("UPDATE events SET lease_until = NULL")
        results: list[object] = []
        for op, argument, _ in batch:
            if op is _Op.LEASE:
                results.append(_lease(conn, argument))  # type: ignore[arg-type]
            elif op is _Op.DEPTH:
                results.append(int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]))
            else:
                results.append(None)
        return results

    def _insert(self, conn: sqlite3.Connection, events: list[QueuedEvent]) -> None:
        conn.execute(
            self._insert_statement(len(events)),
            [value for e in events for value in (
                e.request_id, e.function_name, e.qualifier, e.payload, e.trace_id,
                e.enqueued_at, e.enqueued_at, e.attempts, e.throttles,
            )],
        )  # fmt: skip

    def _insert_statement(self, rows: int) -> str:
        sql = self._insert_sql.get(rows)
        if sql is None:
            values = ", ".join([_INSERT_ROW] * rows)
            sql = f"INSERT OR IGNORE INTO events ({_INSERT_COLUMNS}) VALUES {values}"
            self._insert_sql[rows] = sql
        return sql

    def _delete_statement(self, rows: int) -> str:
        sql = self._delete_sql.get(rows)
        if sql is None:
            sql = f"DELETE FROM events WHERE request_id IN ({', '.join(['?'] * rows)})"
            self._delete_sql[rows] = sql
        return sql


def _lease(conn: sqlite3.Connection, argument: tuple[float, float, int]) -> list[QueuedEvent]:
    lease_until, now, limit = argument
    rows = conn.execute(_LEASE, (lease_until, now, now, limit)).fetchall()
    return [
        QueuedEvent(
            request_id=row[0],
            function_name=row[1],
            qualifier=row[2],
            payload=bytes(row[3]),
            enqueued_at=float(row[4]),
            attempts=int(row[5]),
            trace_id=str(row[6]),
            throttles=int(row[7]),
        )
        for row in rows
    ]


def _chunks(items: list[Item]) -> list[list[Item]]:
    step = _MAX_ROWS_PER_STATEMENT
    return [items[start : start + step] for start in range(0, len(items), step)]


def _answer(batch: list[_Request], results: Sequence[object] | BaseException) -> None:
    """On the loop: hand each request its result, or the batch's failure."""
    if isinstance(results, BaseException):
        for _, _, answer in batch:
            if answer is not None and not answer.done():
                answer.set_exception(results)
        return
    for (_, _, answer), result in zip(batch, results, strict=True):
        if answer is not None and not answer.done():
            answer.set_result(result)


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    """Run ``callback(*args)`` on the loop; nothing waits for it any more if the loop closed."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        if not loop.is_closed():
            raise


def _settle_one(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
