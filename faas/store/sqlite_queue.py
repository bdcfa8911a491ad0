"""The embedded event queue: the store's ``events`` table through a connection and a thread
of its own.

Design notes: queue operations (enqueue, lease, ack, retry, ...) made on the event
loop are gathered into a batch; one writer thread, owning a ``sqlite3`` connection
to the store's file (WAL), runs each batch in one transaction and answers it with
one callback into the loop. Only one batch is with the thread at a time: what is
made meanwhile gathers into the next one, handed over as soon as the previous one
is answered (or, when the thread is idle, at the end of the current turn of the
loop). So the batches grow with the load (group commit), and a batch of any size
costs one commit, one wake of the thread and one of the loop: on a node whose
accepts and writes share one core, those per-batch costs are what the batching
saves. A batch of enqueues alone is one multi-row ``INSERT`` in autocommit mode, a
single ``sqlite3_step``.

Durability: a transaction holding an enqueue (or a retry, or a release of the
leases) commits with ``synchronous=FULL``, so an enqueue returns only once the WAL
was fsynced: the event survives a crash of the process or of the machine. A
transaction of acks and leases alone commits with ``synchronous=NORMAL`` (no
fsync): it survives a crash of the process, and a power loss can only undo it,
which at worst runs a finished event again (at-least-once). A fresh node
releases every lease at start anyway.

A failed batch fails every request in it and nothing else. ``stop`` writes what
was already asked for, then closes the connection. The store's other tables stay
on the aiosqlite connection; the two connections take turns as SQLite's single
writer (``busy_timeout``).
"""

from __future__ import annotations

import asyncio
import enum
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from faas.store.base import QueuedEvent

# Rows per multi-row INSERT or DELETE statement (one prepared statement per row count).
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
_RELEASE_ALL: Final = "UPDATE events SET lease_until = NULL"
_DEPTH: Final = "SELECT COUNT(*) FROM events"

Item = TypeVar("Item")


class _Sync(enum.Enum):
    """How a commit reaches the disk (SQLite's ``synchronous`` in WAL mode)."""

    FULL = "FULL"  # the WAL is fsynced before the commit returns: survives a power loss
    NORMAL = "NORMAL"  # no fsync: survives a crash of the process, not a power loss


class QueueState(enum.Enum):
    NEW = "new"  # constructed, no thread yet
    RUNNING = "running"  # the writer thread serves batches
    STOPPED = "stopped"  # refusing requests; the thread ends once the last batch is written


class _Batch:
    """Requests gathered on the loop, written by the thread in one transaction."""

    __slots__ = ("acks", "depth_answers", "events", "lease_answers", "leases", "releases",
                 "retries", "write_answers")  # fmt: skip

    def __init__(self) -> None:
        self.events: list[QueuedEvent] = []
        self.acks: list[str] = []  # request ids
        self.retries: list[tuple[float, int, int, str]] = []  # visible_at, attempts, throttles, id
        self.releases = 0  # release_all_leases calls
        self.write_answers: list[asyncio.Future[None]] = []  # one per write above
        self.leases: list[tuple[float, float, int]] = []  # lease_until, now, limit
        self.lease_answers: list[asyncio.Future[list[QueuedEvent]]] = []
        self.depth_answers: list[asyncio.Future[int]] = []

    @property
    def is_inserts_only(self) -> bool:
        return not (self.acks or self.retries or self.releases or self.leases
                    or self.depth_answers)  # fmt: skip

    @property
    def is_acks_only(self) -> bool:
        return not (self.events or self.retries or self.releases or self.leases
                    or self.depth_answers)  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Written:
    """What the thread read back for a batch, in the order of its requests."""

    leased: list[list[QueuedEvent]]
    depths: list[int]


class SqliteEventQueue:
    """EventQueue over the ``events`` table of an SQLite file, written by one thread."""

    __slots__ = ("_batch", "_delete_sql", "_drained", "_insert_sql", "_is_handover_due",
                 "_is_in_flight", "_loop", "_path", "_state", "_stopped", "_sync", "_thread",
                 "_to_thread")  # fmt: skip

    def __init__(self, path: Path) -> None:
        """``path`` is the store's file; its schema must already hold the ``events`` table."""
        self._path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Batches for the thread; None tells it to close the connection and end.
        self._to_thread: queue.SimpleQueue[_Batch | None] = queue.SimpleQueue()
        self._batch = _Batch()  # gathering since the batch in flight was handed over
        self._is_in_flight = False  # the thread holds a batch
        self._is_handover_due = False  # a handover is scheduled on the loop
        self._drained = asyncio.Event()  # set while nothing is gathered or in flight
        self._drained.set()
        self._stopped: asyncio.Future[None] | None = None
        # SQL text by row count, built once each (the connection caches the prepared ones).
        self._insert_sql: dict[int, str] = {}
        self._delete_sql: dict[int, str] = {}
        self._sync = _Sync.FULL  # the connection's current setting (the thread's alone)
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
        """Refuse new requests, write those already made, then close the connection."""
        if self._state is not QueueState.RUNNING:
            self._state = QueueState.STOPPED
            return
        self._state = QueueState.STOPPED
        await self._drained.wait()
        self._to_thread.put(None)
        assert self._stopped is not None
        await self._stopped

    # EventQueue

    async def enqueue(self, event: QueuedEvent) -> None:
        """Return once the event is committed (durable)."""
        answer = self._new_answer(self._batch.write_answers)
        self._batch.events.append(event)
        await answer

    async def lease(self, limit: int, lease_s: float, now: float) -> list[QueuedEvent]:
        answer = self._new_answer(self._batch.lease_answers)
        self._batch.leases.append((now + lease_s, now, limit))
        return await answer

    async def ack(self, request_id: str) -> None:
        answer = self._new_answer(self._batch.write_answers)
        self._batch.acks.append(request_id)
        await answer

    async def retry(
        self, request_id: str, visible_at: float, attempts: int, throttles: int = 0
    ) -> None:
        answer = self._new_answer(self._batch.write_answers)
        self._batch.retries.append((visible_at, attempts, throttles, request_id))
        await answer

    async def release_all_leases(self) -> None:
        answer = self._new_answer(self._batch.write_answers)
        self._batch.releases += 1
        await answer

    async def depth(self) -> int:
        return await self._new_answer(self._batch.depth_answers)

    # On the loop: gather requests; one batch with the thread at a time

    def _new_answer(self, answers: list[asyncio.Future[Item]]) -> asyncio.Future[Item]:
        """A future for a request joining the gathering batch (appended to ``answers``)."""
        if self._state is not QueueState.RUNNING:
            raise RuntimeError("the event queue is not running")
        loop = self._loop
        assert loop is not None
        answer: asyncio.Future[Item] = loop.create_future()
        answers.append(answer)
        if not self._is_in_flight and not self._is_handover_due:
            # The thread is idle: hand over once this turn of the loop made its requests.
            self._is_handover_due = True
            self._drained.clear()
            loop.call_soon(self._hand_over)
        return answer

    def _hand_over(self) -> None:
        self._is_handover_due = False
        if self._is_in_flight:
            return
        batch = self._batch
        self._batch = _Batch()
        self._is_in_flight = True
        self._to_thread.put(batch)

    def _answer(self, batch: _Batch, written: _Written | BaseException) -> None:
        """Answer each request of a batch the thread wrote, then hand over the next one."""
        self._is_in_flight = False
        if isinstance(written, BaseException):
            answers: list[asyncio.Future[Any]] = [
                *batch.write_answers,
                *batch.lease_answers,
                *batch.depth_answers,
            ]  # Any: the futures of every kind of request fail alike
            for answer in answers:
                if not answer.done():
                    answer.set_exception(written)
        else:
            for write_answer in batch.write_answers:
                if not write_answer.done():
                    write_answer.set_result(None)
            for lease_answer, leased in zip(batch.lease_answers, written.leased, strict=True):
                if not lease_answer.done():
                    lease_answer.set_result(leased)
            for depth_answer, depth in zip(batch.depth_answers, written.depths, strict=True):
                if not depth_answer.done():
                    depth_answer.set_result(depth)
        gathered = self._batch
        if gathered.write_answers or gathered.lease_answers or gathered.depth_answers:
            self._hand_over()
        elif not self._is_handover_due:
            self._drained.set()

    # The writer thread

    def _serve(self, opened: asyncio.Future[None]) -> None:
        loop = self._loop
        assert loop is not None and self._stopped is not None
        try:
            conn = self._connect()
        except BaseException as exc:  # thread boundary: start() raises it
            _post(loop, _settle, opened, exc)
            _post(loop, _settle, self._stopped, None)
            return
        _post(loop, _settle, opened, None)
        try:
            while (batch := self._to_thread.get()) is not None:
                try:
                    written: _Written | BaseException = self._write(conn, batch)
                except Exception as exc:  # thread boundary: every request of the batch gets it
                    written = exc
                _post(loop, self._answer, batch, written)
        finally:
            conn.close()
            _post(loop, _settle, self._stopped, None)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path,
            isolation_level=None,  # autocommit; transactions are explicit
            cached_statements=2 * _MAX_ROWS_PER_STATEMENT + 16,
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={_Sync.FULL.value}")
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _write(self, conn: sqlite3.Connection, batch: _Batch) -> _Written:
        """The whole batch in one transaction."""
        sync = _Sync.FULL if batch.events or batch.retries or batch.releases else _Sync.NORMAL
        if sync is not self._sync:
            conn.execute(f"PRAGMA synchronous={sync.value}")
            self._sync = sync
        # Enqueues alone (the accept path) or acks alone: one autocommit statement, so one
        # step and one commit.
        if batch.is_inserts_only and len(batch.events) <= _MAX_ROWS_PER_STATEMENT:
            self._insert(conn, batch.events)
            return _Written([], [])
        if batch.is_acks_only and len(batch.acks) <= _MAX_ROWS_PER_STATEMENT:
            conn.execute(self._delete_statement(len(batch.acks)), batch.acks)
            return _Written([], [])
        conn.execute("BEGIN IMMEDIATE")
        try:
            written = self._write_in_transaction(conn, batch)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return written

    def _write_in_transaction(self, conn: sqlite3.Connection, batch: _Batch) -> _Written:
        # Writes first, then reads, so a lease or a count sees the batch's own writes.
        for events in _chunks(batch.events):
            self._insert(conn, events)
        for request_ids in _chunks(batch.acks):
            conn.execute(self._delete_statement(len(request_ids)), request_ids)
        if batch.retries:
            conn.executemany(_RETRY, batch.retries)
        if batch.releases:
            conn.execute(_RELEASE_ALL)
        leased = [_lease(conn, *lease) for lease in batch.leases]
        depths = [int(conn.execute(_DEPTH).fetchone()[0]) for _ in batch.depth_answers]
        return _Written(leased, depths)

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


def _lease(
    conn: sqlite3.Connection, lease_until: float, now: float, limit: int
) -> list[QueuedEvent]:
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


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    """Run ``callback(*args)`` on the loop; once the loop closed nothing waits for it."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        if not loop.is_closed():
            raise


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
