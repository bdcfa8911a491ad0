"""Redis Streams as a mapping's event source: one consumer group per mapping.

Design notes: the address is ``redis[s]://[user:password@]host[:port][/db[/stream]]``
with ``?stream=<name>`` (or the stream as the path after the db) and an optional
``claim_idle_ms`` (default 30000). The mapping reads through the consumer group
``faas-<mapping uuid>``, created with MKSTREAM at ``$`` (LATEST) or ``0``
(TRIM_HORIZON); this node reads as the consumer named after its host name, so a
restarted node finds its own pending entries again.

Every ``receive`` takes, in this order, the first of:

1. this consumer's own pending entries that are not in flight here, after a
   (re)connect or a ``release`` (XREADGROUP from ``0``): entries a crash, a lost
   reply or a released batch left delivered but unacknowledged;
2. entries another consumer left pending for ``claim_idle_ms`` (XAUTOCLAIM):
   a node that crashed mid-batch;
3. new entries (XREADGROUP ``>`` with BLOCK).

``ack`` is XACK. An XACK that cannot reach Redis is kept and sent on the next
reconnect before anything is read, so a record the poller finished is not handed
out again while this process lives (and at worst once more after a crash: the
delivery is at-least-once). Nothing here retries a command by itself: redis-py's
own retries are off, a connection fault raises ``SourceUnavailable``, and the
poller's backoff decides when ``receive`` reconnects.

``claim_idle_ms`` must exceed the longest time a batch is in flight (the
function timeout times the retries of a failing batch), or another node may
take over entries that are still being worked on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from faas.events.sources.base import SourceKind, SourceRecord, SourceSpec, SourceUnavailable
from faas.events.sources.broker_common import (
    BrokerAddress,
    SourceState,
    check_starting_position,
    int_param,
    parse_address,
)

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss")
EVENT_SOURCE = "faas:redis-streams"
EVENT_NAME = "faas:redis:record"
EVENT_VERSION = "1.0"
_PARAMS = ("stream", "claim_idle_ms")
_DEFAULT_CLAIM_IDLE_MS = 30_000
_COMMAND_TIMEOUT_S = 10.0
_CONNECT_TIMEOUT_S = 5.0
_DATA_FIELD = b"data"
# Lost connections, timeouts, and server errors such as NOGROUP (the stream or group was
# deleted, or Redis lost its data: the next call makes them again), WRONGTYPE, NOAUTH.
_REDIS_FAULTS = (RedisError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RedisStreamAddress:
    """A parsed ``redis://`` source address."""

    broker: BrokerAddress
    db: int
    stream: str
    claim_idle_ms: int


def parse(address: str) -> RedisStreamAddress:
    """Parse a Redis Streams address; raises ``ValueError`` naming what is wrong."""
    broker = parse_address(address, SCHEMES, _PARAMS)
    db_text, _, path_stream = broker.path.partition("/")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ValueError(
            f"EventSourceArn {broker.display}: the path must start with a database number, "
            f"not {db_text!r}"
        ) from None
    query_stream = broker.params.get("stream", "")
    if path_stream and query_stream and path_stream != query_stream:
        raise ValueError(f"EventSourceArn {broker.display} names two different streams")
    stream = query_stream or path_stream
    if not stream:
        raise ValueError(
            f"EventSourceArn {broker.display} names no stream: add ?stream=<name> "
            "or put it in the path (redis://host:6379/0/<name>)"
        )
    claim_idle_ms = int_param(broker, "claim_idle_ms", _DEFAULT_CLAIM_IDLE_MS, minimum=1)
    return RedisStreamAddress(broker, db, stream, claim_idle_ms)


def validate(spec: SourceSpec) -> None:
    """Check the address and starting position without touching the network."""
    address = parse(spec.address)
    check_starting_position(spec.starting_position, address.broker.display)


def open_source(spec: SourceSpec) -> RedisStreamSource:
    return RedisStreamSource(spec, parse(spec.address))


def group_name(mapping_uuid: str) -> str:
    """The consumer group (and the client name shown by CLIENT LIST) of a mapping."""
    return f"faas-{mapping_uuid}"


class RedisStreamSource:
    """A Redis stream read through the mapping's consumer group."""

    kind = SourceKind.STREAM

    __slots__ = (
        "_acks_owed",
        "_address",
        "_claim_cursor",
        "_client",
        "_consumer",
        "_group",
        "_in_flight",
        "_needs_recovery",
        "_own_pending_cursor",
        "_spec",
        "_state",
    )

    def __init__(
        self, spec: SourceSpec, address: RedisStreamAddress, consumer_name: str = ""
    ) -> None:
        self._spec = spec
        self._address = address
        self._group = group_name(spec.mapping_uuid)
        self._consumer = consumer_name or socket.gethostname()
        self._client: aioredis.Redis | None = None
        self._state = SourceState.NEW
        self._needs_recovery = True
        self._in_flight: set[str] = set()
        self._acks_owed: set[str] = set()
        self._own_pending_cursor: str | None = "0"
        self._claim_cursor = "0-0"

    @property
    def consumer_name(self) -> str:
        return self._consumer

    async def start(self) -> None:
        """Create the client and the consumer group.

        Raises:
            SourceUnavailable: Redis is unreachable; the source stays new and ``start``
                may be called again.
        """
        if self._state is not SourceState.NEW:
            raise RuntimeError(f"Redis stream source cannot start from {self._state.value}")
        client = self._new_client()
        try:
            await self._recover(client)
        except _REDIS_FAULTS as exc:
            await client.aclose()
            raise self._unavailable(exc) from exc
        self._client = client
        self._state = SourceState.RUNNING

    async def stop(self) -> None:
        """Close the client; entries in flight stay pending for the next reader."""
        if self._state is SourceState.STOPPED:
            return
        self._state = SourceState.STOPPED
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def receive(self, max_records: int, wait_s: float) -> list[SourceRecord]:
        client = self._running_client()
        try:
            if self._needs_recovery:
                await self._recover(client)
            entries = await self._read_own_pending(client, max_records)
            if not entries:
                entries = await self._claim_stale(client, max_records)
            if not entries:
                entries = await self._read_new(client, max_records, wait_s)
        except _REDIS_FAULTS as exc:
            raise self._unavailable(exc) from exc
        records = [self._record(entry_id, fields) for entry_id, fields in entries]
        self._in_flight.update(record.item_id for record in records)
        return records

    async def ack(self, records: Sequence[SourceRecord]) -> None:
        """XACK the records; if Redis is unreachable, XACK them on the next reconnect."""
        client = self._running_client()
        ids = [record.item_id for record in records]
        self._in_flight.difference_update(ids)
        if not ids:
            return
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                await client.xack(self._address.stream, self._group, *ids)
        except _REDIS_FAULTS as exc:
            self._acks_owed.update(ids)
            self._needs_recovery = True
            log.warning(
                "XACK of %d entries on %s deferred until Redis is reachable again: %s",
                len(ids),
                self._address.broker.display,
                exc,
            )

    async def release(self, records: Sequence[SourceRecord]) -> None:
        """Leave the records pending; the next ``receive`` hands them out first again."""
        self._running_client()
        self._in_flight.difference_update(record.item_id for record in records)
        self._own_pending_cursor = "0"

    def event(self, records: Sequence[SourceRecord]) -> dict[str, Any]:
        return {"Records": [record.shape for record in records]}

    def _new_client(self) -> aioredis.Redis:
        broker = self._address.broker
        return aioredis.Redis(
            host=broker.host,
            port=broker.port or 6379,
            db=self._address.db,
            username=broker.username or None,
            password=broker.password or None,
            ssl=broker.scheme == "rediss",
            client_name=self._group,
            protocol=2,
            socket_connect_timeout=_CONNECT_TIMEOUT_S,
            # No socket read timeout (redis-py's default is 5 s): a 20 s XREADGROUP BLOCK must
            # not fail as a fault. Every command here is bounded by asyncio.timeout instead.
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),  # a fault goes to the poller, whose backoff retries
        )

    def _running_client(self) -> aioredis.Redis:
        if self._state is not SourceState.RUNNING or self._client is None:
            raise RuntimeError(f"Redis stream source is {self._state.value}, not running")
        return self._client

    def _unavailable(self, exc: BaseException) -> SourceUnavailable:
        self._needs_recovery = True
        return SourceUnavailable(
            f"Redis stream {self._address.stream} at {self._address.broker.display}: {exc}"
        )

    async def _recover(self, client: aioredis.Redis) -> None:
        """(Re)connect: make the group, send owed XACKs, re-read own pending entries."""
        start_id = "0" if self._spec.starting_position == "TRIM_HORIZON" else "$"
        async with asyncio.timeout(_COMMAND_TIMEOUT_S):
            try:
                await client.xgroup_create(
                    self._address.stream, self._group, id=start_id, mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            if self._acks_owed:
                await client.xack(self._address.stream, self._group, *self._acks_owed)
                self._acks_owed.clear()
        self._own_pending_cursor = "0"
        self._needs_recovery = False

    async def _read_own_pending(
        self, client: aioredis.Redis, max_records: int
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        while self._own_pending_cursor is not None:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                reply = await client.xreadgroup(
                    self._group,
                    self._consumer,
                    {self._address.stream: self._own_pending_cursor},
                    count=max_records,
                )
            entries = _entries(reply)
            if not entries:
                self._own_pending_cursor = None
                return []
            self._own_pending_cursor = entries[-1][0]
            # An entry deleted from the stream while pending comes back without fields.
            gone = [entry_id for entry_id, fields in entries if not fields]
            if gone:
                async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                    await client.xack(self._address.stream, self._group, *gone)
            fresh = [
                (entry_id, fields)
                for entry_id, fields in entries
                if fields and entry_id not in self._in_flight
            ]
            if fresh:
                return fresh
        return []

    async def _claim_stale(
        self, client: aioredis.Redis, max_records: int
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        async with asyncio.timeout(_COMMAND_TIMEOUT_S):
            reply = await client.xautoclaim(
                self._address.stream,
                self._group,
                self._consumer,
                self._address.claim_idle_ms,
                start_id=self._claim_cursor,
                count=max_records,
            )
        self._claim_cursor = _text(reply[0])
        claimed = [(_text(entry_id), fields) for entry_id, fields in reply[1] if entry_id]
        # Claiming also touches this consumer's own entries; those in flight stay with the poller.
        return [(entry_id, f) for entry_id, f in claimed if f and entry_id not in self._in_flight]

    async def _read_new(
        self, client: aioredis.Redis, max_records: int, wait_s: float
    ) -> list[tuple[str, dict[bytes, bytes]]]:
        block_ms = int(wait_s * 1000)
        async with asyncio.timeout(max(wait_s, 0.0) + _COMMAND_TIMEOUT_S):
            reply = await client.xreadgroup(
                self._group,
                self._consumer,
                {self._address.stream: ">"},
                count=max_records,
                # BLOCK 0 would wait forever; no BLOCK at all returns at once.
                block=block_ms if block_ms > 0 else None,
            )
        return _entries(reply)

    def _record(self, entry_id: str, fields: dict[bytes, bytes]) -> SourceRecord:
        arrived_at = _arrival_s(entry_id)
        text_fields = {
            name.decode("utf-8", "replace"): value.decode("utf-8", "replace")
            for name, value in fields.items()
        }
        data = fields.get(_DATA_FIELD)
        if data is None:
            data = json.dumps(text_fields, separators=(",", ":"), ensure_ascii=False).encode()
        shape = {
            "redis": {
                "streamName": self._address.stream,
                "consumerGroup": self._group,
                "sequenceNumber": entry_id,
                "data": base64.b64encode(data).decode("ascii"),
                "fields": text_fields,
                "approximateArrivalTimestamp": arrived_at,
            },
            "eventSource": EVENT_SOURCE,
            "eventVersion": EVENT_VERSION,
            "eventID": f"{self._address.stream}:{entry_id}",
            "eventName": EVENT_NAME,
            "eventSourceARN": self._address.broker.display,
            "awsRegion": self._spec.region,
        }
        return SourceRecord(item_id=entry_id, shape=shape, arrived_at=arrived_at, token=entry_id)


def _entries(reply: Any) -> list[tuple[str, dict[bytes, bytes]]]:
    """XREADGROUP's reply for our one stream as ``(entry id, fields)`` pairs.

    ``reply`` is redis-py's parsed RESP2 reply, ``[[stream, [(id, {field: value})]]]``
    (``Any``: redis-py's command methods are not typed).
    """
    if not reply:
        return []
    _, entries = reply[0]
    return [(_text(entry_id), fields or {}) for entry_id, fields in entries]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _arrival_s(entry_id: str) -> float:
    """Seconds since the epoch from the millisecond part of an entry ID (now if custom)."""
    millis, _, _ = entry_id.partition("-")
    try:
        return int(millis) / 1000.0
    except ValueError:
        return time.time()
