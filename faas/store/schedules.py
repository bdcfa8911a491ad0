"""The schedule registry: scheduled rules and the last tick each one fired, in the store.

Design notes: rules live in the node's SQLite file (schema 008) beside the
functions they target, on the store's single connection. Every statement takes
the store's statement lock, so none of them can land inside the event flusher's
transaction (and be rolled back with it). ``mark_fired`` only ever moves a rule's
last fired tick forward, so a late or repeated call cannot make an old tick due again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from faas.errors import ResourceConflictException

if TYPE_CHECKING:  # the scheduler imports the record and protocol, never the backend
    from faas.store.sqlite import SqliteStore


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """One scheduled rule as stored."""

    name: str
    id: str  # fresh per created rule: a re-created name never reuses old request ids
    expression: str  # rate(...) or cron(...)
    function_name: str
    qualifier: str  # "" when the rule targets the unqualified function ($LATEST)
    input: str | None  # JSON text delivered instead of the Scheduled Event; None: the envelope
    description: str
    is_enabled: bool
    created_at: float
    anchor_at: float  # when the schedule started: created, expression changed, re-enabled
    last_fired_at: float | None = None  # the latest tick enqueued


class ScheduleRegistry(Protocol):
    """Where the scheduler keeps its rules."""

    async def load_schedules(self) -> list[ScheduleRecord]: ...

    async def insert_schedule(self, record: ScheduleRecord) -> None:
        """Raises ResourceConflictException if a rule of that name exists."""
        ...

    async def replace_schedule(self, record: ScheduleRecord) -> None:
        """Store a changed rule (its last fired tick is left as stored)."""
        ...

    async def delete_schedule(self, name: str) -> None: ...

    async def mark_fired(self, schedule_id: str, tick_s: float) -> None:
        """Record ``tick_s`` as the rule's last fired tick, if it is later than the stored one."""
        ...


_COLUMNS = (
    "name, id, expression, function_name, qualifier, input, description, enabled, created_at,"
    " anchor_at, last_fired_at"
)


def _record(row: Sequence[Any]) -> ScheduleRecord:
    return ScheduleRecord(
        name=str(row[0]), id=str(row[1]), expression=str(row[2]), function_name=str(row[3]),
        qualifier=str(row[4]), input=None if row[5] is None else str(row[5]),
        description=str(row[6]), is_enabled=bool(row[7]), created_at=float(row[8]),
        anchor_at=float(row[9]), last_fired_at=None if row[10] is None else float(row[10]),
    )  # fmt: skip


class SqliteScheduleStore:
    """ScheduleRegistry over the node's SqliteStore connection."""

    __slots__ = ("_store",)

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    async def load_schedules(self) -> list[ScheduleRecord]:
        async with (
            self._store._statement_lock,
            self._store.conn.execute(f"SELECT {_COLUMNS} FROM schedules ORDER BY name") as cursor,
        ):
            rows = await cursor.fetchall()
        return [_record(row) for row in rows]

    async def insert_schedule(self, record: ScheduleRecord) -> None:
        try:
            async with self._store._statement_lock:
                await self._store.conn.execute(
                    f"INSERT INTO schedules ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.name, record.id, record.expression, record.function_name,
                     record.qualifier, record.input, record.description, int(record.is_enabled),
                     record.created_at, record.anchor_at, record.last_fired_at),
                )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            raise ResourceConflictException(f"Rule {record.name} already exists.") from exc

    async def replace_schedule(self, record: ScheduleRecord) -> None:
        async with self._store._statement_lock:
            await self._store.conn.execute(
                "UPDATE schedules SET expression = ?, function_name = ?, qualifier = ?,"
                " input = ?, description = ?, enabled = ?, anchor_at = ? WHERE id = ?",
                (record.expression, record.function_name, record.qualifier, record.input,
                 record.description, int(record.is_enabled), record.anchor_at, record.id),
            )  # fmt: skip

    async def delete_schedule(self, name: str) -> None:
        async with self._store._statement_lock:
            await self._store.conn.execute("DELETE FROM schedules WHERE name = ?", (name,))

    async def mark_fired(self, schedule_id: str, tick_s: float) -> None:
        async with self._store._statement_lock:
            await self._store.conn.execute(
                "UPDATE schedules SET last_fired_at = ? WHERE id = ?"
                " AND (last_fired_at IS NULL OR last_fired_at < ?)",
                (tick_s, schedule_id, tick_s),
            )
