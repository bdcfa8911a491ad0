"""A RabbitMQ queue as a mapping's event source, delivered in the Amazon MQ event shape.

Design notes: the address is ``amqp[s]://[user:password@]host[:port][/vhost]?queue=<name>``
(vhost percent-encoded, ``/`` when absent or ``%2F``; optional ``heartbeat`` in
seconds). The queue must exist; while it does not, ``receive`` reports the source
unavailable, as it does while the broker is unreachable.

One connection and one channel with a prefetch of ``BatchSize`` times the batches
the mapping may have in flight (its MaximumConcurrency) feed a basic.consume into
a bounded in-memory buffer; ``receive`` waits for the first delivery and takes
what else is already there, up to one batch. ``ack`` is basic.ack, ``release`` is
basic.nack with requeue. A plain connection rather than aio-pika's robust one:
the poller's backoff is the one reconnect policy, and a delivery tag is only
valid on the channel that delivered it, so after a fault everything buffered is
dropped (the broker requeues unacknowledged deliveries of a closed channel) and
the next ``receive`` opens a fresh connection. Settling a record whose channel is
gone is therefore a no-op that is logged: the broker delivers it again.

A record's ``item_id`` is the message's ``messageId`` when the publisher set one
(what a handler can name in ``batchItemFailures``), else its delivery tag.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import decimal
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage

from faas.events.sources.base import SourceKind, SourceRecord, SourceSpec, SourceUnavailable
from faas.events.sources.broker_common import (
    BrokerAddress,
    SourceState,
    int_param,
    parse_address,
    required_param,
)

log = logging.getLogger(__name__)

SCHEMES = ("amqp", "amqps")
EVENT_SOURCE = "aws:rmq"
_PARAMS = ("queue", "heartbeat")
_CONNECT_TIMEOUT_S = 5.0
_MAX_PREFETCH = 65535  # basic.qos prefetch-count is a 16-bit field
_COMMAND_TIMEOUT_S = 10.0
# Amazon MQ renders basicProperties.timestamp in this (Java default) form, in UTC.
_TIMESTAMP_FORMAT = "%b %-d, %Y, %-I:%M:%S %p"
_BROKER_FAULTS = (
    aiormq.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class RabbitMqAddress:
    """A parsed ``amqp://`` source address."""

    broker: BrokerAddress
    vhost: str
    queue: str
    heartbeat_s: int | None

    @property
    def queue_key(self) -> str:
        """The key of ``rmqMessagesByQueue``: ``<queue>::<vhost>``."""
        return f"{self.queue}::{self.vhost}"


def parse(address: str) -> RabbitMqAddress:
    """Parse a RabbitMQ address; raises ``ValueError`` naming what is wrong."""
    broker = parse_address(address, SCHEMES, _PARAMS)
    queue = required_param(broker, "queue")
    heartbeat_s = None
    if "heartbeat" in broker.params:
        heartbeat_s = int_param(broker, "heartbeat", default=0, minimum=0)
    return RabbitMqAddress(broker, broker.path or "/", queue, heartbeat_s)


def validate(spec: SourceSpec) -> None:
    """Check the address without touching the network."""
    parse(spec.address)


def open_source(spec: SourceSpec) -> RabbitMqSource:
    return RabbitMqSource(spec, parse(spec.address))


@dataclass(slots=True)
class _Session:
    """One connection's worth of state; a fault throws the whole session away."""

    connection: AbstractConnection
    channel: AbstractChannel
    # Deliveries of this channel, or None once the connection or channel closed.
    buffer: asyncio.Queue[AbstractIncomingMessage | None]


class RabbitMqSource:
    """A RabbitMQ queue consumed with manual acknowledgements."""

    kind = SourceKind.QUEUE

    __slots__ = ("_address", "_session", "_session_lock", "_spec", "_state")

    def __init__(self, spec: SourceSpec, address: RabbitMqAddress) -> None:
        self._spec = spec
        self._address = address
        self._session: _Session | None = None
        # Several batch loops may receive at once; only one of them reconnects.
        self._session_lock = asyncio.Lock()
        self._state = SourceState.NEW

    async def start(self) -> None:
        """Connect and start consuming.

        Raises:
            SourceUnavailable: the broker or the queue is not there; the source stays
                new and ``start`` may be called again.
        """
        if self._state is not SourceState.NEW:
            raise RuntimeError(f"RabbitMQ source cannot start from {self._state.value}")
        await self._ensure_session()
        self._state = SourceState.RUNNING

    async def stop(self) -> None:
        """Close the connection; the broker requeues whatever was not acknowledged."""
        if self._state is SourceState.STOPPED:
            return
        self._state = SourceState.STOPPED
        await self._drop_session()

    async def receive(self, max_records: int, wait_s: float) -> list[SourceRecord]:
        self._require_running()
        session = await self._ensure_session()
        try:
            first = await asyncio.wait_for(session.buffer.get(), timeout=max(wait_s, 0.0))
        except TimeoutError:
            return []
        messages = [first]
        while len(messages) < max_records and not session.buffer.empty():
            messages.append(session.buffer.get_nowait())
        if any(message is None or message.channel.is_closed for message in messages):
            await self._drop_session()
            raise SourceUnavailable(
                f"RabbitMQ queue {self._address.queue_key} at {self._address.broker.display}: "
                "connection lost"
            )
        return [self._record(message) for message in messages if message is not None]

    async def ack(self, records: Sequence[SourceRecord]) -> None:
        """basic.ack the records; returns once the broker has processed the acks."""
        self._require_running()
        await self._settle(records, requeue=None)

    async def release(self, records: Sequence[SourceRecord]) -> None:
        """basic.nack with requeue: the broker delivers the records again."""
        self._require_running()
        await self._settle(records, requeue=True)

    def event(self, records: Sequence[SourceRecord]) -> dict[str, Any]:
        return {
            "eventSource": EVENT_SOURCE,
            "eventSourceArn": self._address.broker.display,
            "rmqMessagesByQueue": {self._address.queue_key: [record.shape for record in records]},
        }

    def _require_running(self) -> None:
        if self._state is not SourceState.RUNNING:
            raise RuntimeError(f"RabbitMQ source is {self._state.value}, not running")

    @property
    def _prefetch(self) -> int:
        """Unacknowledged deliveries at most: a full batch for each batch loop."""
        return min(_MAX_PREFETCH, self._spec.batch_size * max(1, self._spec.max_batches_in_flight))

    async def _ensure_session(self) -> _Session:
        async with self._session_lock:
            session = self._session
            if session is not None and not (
                session.connection.is_closed or session.channel.is_closed
            ):
                return session
            await self._drop_session()
            try:
                self._session = await self._open_session()
            except _BROKER_FAULTS as exc:
                raise SourceUnavailable(
                    f"RabbitMQ queue {self._address.queue_key} at "
                    f"{self._address.broker.display}: {type(exc).__name__}: {exc}"
                ) from exc
            return self._session

    def _new_connection(self) -> aio_pika.Connection:
        """An unconnected connection: what ``aio_pika.connect`` builds before connecting."""
        broker = self._address.broker
        extra: dict[str, Any] = {}
        if self._address.heartbeat_s is not None:
            extra["heartbeat"] = self._address.heartbeat_s
        url = aio_pika.connection.make_url(
            host=broker.host,
            port=broker.port or (5671 if broker.scheme == "amqps" else 5672),
            login=broker.username or "guest",
            password=broker.password or "guest",
            virtualhost=self._address.vhost,
            ssl=broker.scheme == "amqps",
            **extra,
        )
        return aio_pika.Connection(
            url,
            client_properties={"connection_name": f"faas-{self._spec.mapping_uuid}"},
            **extra,
        )

    async def _open_session(self) -> _Session:
        # Not aio_pika.connect(): a connection whose connect fails must still be closed,
        # or its __del__ starts a close task of its own.
        connection = self._new_connection()
        try:
            await connection.connect(timeout=_CONNECT_TIMEOUT_S)
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                channel = await connection.channel(publisher_confirms=False)
                await channel.set_qos(prefetch_count=self._prefetch)
                queue = await channel.declare_queue(self._address.queue, passive=True)
                # Prefetch bounds the deliveries; one more slot for the closed marker.
                buffer: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue(
                    maxsize=self._prefetch + 1
                )

                def closed(*_: Any) -> None:
                    if not buffer.full():
                        buffer.put_nowait(None)

                async def delivered(message: AbstractIncomingMessage) -> None:
                    await buffer.put(message)

                connection.close_callbacks.add(closed)
                channel.close_callbacks.add(closed)
                await queue.consume(delivered)
        except BaseException:
            await connection.close()
            raise
        return _Session(connection, channel, buffer)

    async def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is None or session.connection.is_closed:
            return
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                await session.connection.close()
        except _BROKER_FAULTS as exc:
            log.warning("closing the connection to %s: %s", self._address.broker.display, exc)

    async def _settle(self, records: Sequence[SourceRecord], requeue: bool | None) -> None:
        """Send basic.ack / basic.nack, then a basic.qos round trip on the same channel.

        Acks get no reply in AMQP 0-9-1, but a channel's frames are processed in
        order: once the qos reply is back, the broker has the acks, and a connection
        lost afterwards cannot bring these records back.
        """
        if not records:
            return
        verb = "ack" if requeue is None else "nack"
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                for record in records:
                    message: AbstractIncomingMessage = record.token
                    if requeue is None:
                        await message.ack()
                    else:
                        await message.nack(requeue=requeue)
                channels = {id(r.token.channel): r.token.channel for r in records}
                for channel in channels.values():
                    await channel.basic_qos(prefetch_count=self._prefetch)
        except _BROKER_FAULTS as exc:
            log.warning(
                "%s of %d messages on %s not confirmed (the broker delivers them again): %s",
                verb,
                len(records),
                self._address.broker.display,
                exc,
            )

    def _record(self, message: AbstractIncomingMessage) -> SourceRecord:
        sent_at = message.timestamp
        arrived_at = _utc(sent_at).timestamp() if sent_at is not None else time.time()
        shape = {
            "basicProperties": _basic_properties(message),
            "redelivered": bool(message.redelivered),
            "data": base64.b64encode(message.body).decode("ascii"),
        }
        item_id = message.message_id or str(message.delivery_tag)
        return SourceRecord(item_id=item_id, shape=shape, arrived_at=arrived_at, token=message)


def _basic_properties(message: AbstractIncomingMessage) -> dict[str, Any]:
    expiration = message.expiration
    timestamp = message.timestamp
    return {
        "contentType": message.content_type,
        "contentEncoding": message.content_encoding,
        "headers": {name: _header_value(value) for name, value in message.headers.items()},
        "deliveryMode": int(message.delivery_mode) if message.delivery_mode else None,
        "priority": message.priority,
        "correlationId": message.correlation_id,
        "replyTo": message.reply_to,
        "expiration": _expiration_ms(expiration),
        "messageId": message.message_id,
        "timestamp": _java_timestamp(timestamp) if timestamp is not None else None,
        "type": message.type,
        "userId": message.user_id,
        "appId": message.app_id,
        "clusterId": message.cluster_id or None,
        "bodySize": len(message.body),
    }


def _expiration_ms(expiration: object) -> str | None:
    """The per-message TTL as sent on the wire: milliseconds, as a string."""
    if isinstance(expiration, datetime.timedelta):
        expiration = expiration.total_seconds()
    if isinstance(expiration, int | float):
        return str(round(expiration * 1000))
    return None


def _header_value(value: Any) -> Any:
    """An AMQP header value as Amazon MQ writes it: strings as ``{"bytes": [...]}``.

    ``value`` is ``Any``: an AMQP field table holds any of the wire types.
    """
    if isinstance(value, str):
        return {"bytes": list(value.encode())}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": list(bytes(value))}
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, datetime.datetime):
        return _java_timestamp(value)
    if isinstance(value, dict):
        return {str(k): _header_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_header_value(v) for v in value]
    return value


def _java_timestamp(moment: datetime.datetime) -> str:
    return _utc(moment).strftime(_TIMESTAMP_FORMAT)


def _utc(moment: datetime.datetime) -> datetime.datetime:
    """AMQP timestamps are seconds since the epoch: a naive one is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)
