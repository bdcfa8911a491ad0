"""A NATS JetStream stream as a mapping's event source, read by a durable pull consumer.

Design notes: the address is ``nats://[user:password@ | token@]host[:port]?stream=<name>``
with an optional ``subject`` filter (``orders.>``), ``ack_wait_s`` (default 30) and
``deliver`` (``all``, the default: start with the oldest message the stream holds;
``new``: only messages published after the consumer was made). The mapping's
durable consumer ``faas-<mapping uuid>`` is created on first start if it does not
exist (explicit acks); an existing one is used as it is, so its acknowledged
position survives restarts and reconnects. A NATS mapping is a queue source, as
SQS is, so it takes no StartingPosition: ``deliver`` plays that part. The stream
must exist; while it does not, ``start`` and ``receive`` report the source
unavailable.

``receive`` is a pull ``fetch``. ``ack`` publishes ``+ACK`` and ``release``
``-NAK`` to each message's reply subject over the current connection, then
flushes: once the server's PONG is back it has received them. An ack that cannot
be sent is kept and sent after the next reconnect (a reply subject is not tied to
a connection), so a finished record is not delivered again unless ``ack_wait_s``
ran out first. While a batch is in flight (received, not yet acked or nak'ed),
the source tells the server it is still being worked on (``+WPI``) every third
of ``ack_wait_s``, so a long batch is not handed to another batch loop meanwhile;
the messages of a node that stopped sending that are delivered again after
``ack_wait_s``.

nats-py's own reconnect is off: the poller's backoff is the one reconnect policy,
and the next ``receive`` after a fault opens a fresh connection.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from faas.events.sources.base import SourceKind, SourceRecord, SourceSpec, SourceUnavailable
from faas.events.sources.broker_common import (
    BrokerAddress,
    SourceState,
    int_param,
    parse_address,
    required_param,
)

log = logging.getLogger(__name__)

SCHEMES = ("nats",)
EVENT_SOURCE = "faas:nats-jetstream"
EVENT_NAME = "faas:nats:message"
EVENT_VERSION = "1.0"
_PARAMS = ("stream", "subject", "ack_wait_s", "deliver")
_DELIVER_POLICIES = types.MappingProxyType({"all": DeliverPolicy.ALL, "new": DeliverPolicy.NEW})
_DEFAULT_ACK_WAIT_S = 30
_CONNECT_TIMEOUT_S = 5
_COMMAND_TIMEOUT_S = 10.0
_MIN_FETCH_S = 0.05  # fetch needs a positive expiry; receive(wait_s=0) polls briefly
_ACK = b"+ACK"
_NAK = b"-NAK"
_IN_PROGRESS = b"+WPI"
_STREAM_NAME = re.compile(r"[^.*>\s/\\]+")
_BROKER_FAULTS = (nats.errors.Error, ConnectionError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class NatsAddress:
    """A parsed ``nats://`` source address."""

    broker: BrokerAddress
    stream: str
    subject: str  # "" for every subject of the stream
    ack_wait_s: int
    deliver_policy: DeliverPolicy  # where a new durable consumer starts

    @property
    def server_url(self) -> str:
        """The server to connect to, without credentials (they go separately)."""
        port = self.broker.port or 4222
        return f"{self.broker.scheme}://{self.broker.host}:{port}"


def parse(address: str) -> NatsAddress:
    """Parse a NATS JetStream address; raises ``ValueError`` naming what is wrong."""
    broker = parse_address(address, SCHEMES, _PARAMS)
    stream = required_param(broker, "stream")
    if not _STREAM_NAME.fullmatch(stream):
        raise ValueError(
            f"EventSourceArn {broker.display}: stream {stream!r} is not a valid stream name"
        )
    subject = broker.params.get("subject", "")
    if "subject" in broker.params and not _is_subject(subject):
        raise ValueError(f"EventSourceArn {broker.display}: subject {subject!r} is not valid")
    if broker.path:
        raise ValueError(f"EventSourceArn {broker.display} must not have a path")
    ack_wait_s = int_param(broker, "ack_wait_s", _DEFAULT_ACK_WAIT_S, minimum=1)
    deliver = broker.params.get("deliver", "all")
    if deliver not in _DELIVER_POLICIES:
        raise ValueError(
            f"EventSourceArn {broker.display}: deliver must be "
            f"{' or '.join(_DELIVER_POLICIES)}, not {deliver!r}"
        )
    return NatsAddress(broker, stream, subject, ack_wait_s, _DELIVER_POLICIES[deliver])


def validate(spec: SourceSpec) -> None:
    """Check the address without touching the network."""
    parse(spec.address)


def open_source(spec: SourceSpec) -> NatsJetStreamSource:
    return NatsJetStreamSource(spec, parse(spec.address))


def consumer_name(mapping_uuid: str) -> str:
    """The durable consumer (and the connection name) of a mapping."""
    return f"faas-{mapping_uuid}"


def _is_subject(subject: str) -> bool:
    """Dot-separated tokens; ``*`` a whole token, ``>`` only as the whole last token."""
    tokens = subject.split(".")
    for index, token in enumerate(tokens):
        if not token or any(c.isspace() for c in token):
            return False
        if ("*" in token and token != "*") or (">" in token and token != ">"):
            return False
        if token == ">" and index != len(tokens) - 1:
            return False
    return True


@dataclass(slots=True)
class _Session:
    """One connection and its pull subscription; a fault throws both away."""

    client: NatsClient
    subscription: JetStreamContext.PullSubscription


class NatsJetStreamSource:
    """A JetStream stream read through the mapping's durable pull consumer."""

    kind = SourceKind.QUEUE

    __slots__ = (
        "_acks_owed",
        "_address",
        "_consumer",
        "_fetch_lock",
        "_in_flight",
        "_keepalive",
        "_session",
        "_session_lock",
        "_spec",
        "_state",
    )

    def __init__(self, spec: SourceSpec, address: NatsAddress) -> None:
        self._spec = spec
        self._address = address
        self._consumer = consumer_name(spec.mapping_uuid)
        self._session: _Session | None = None
        # Several batch loops may receive at once: one reconnects, and fetches take turns
        # (a pull subscription serves one fetch at a time).
        self._session_lock = asyncio.Lock()
        self._fetch_lock = asyncio.Lock()
        self._state = SourceState.NEW
        self._acks_owed: list[str] = []  # reply subjects of acks still to send
        self._in_flight: set[str] = set()  # reply subjects of received, unsettled messages
        self._keepalive: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connect and make the durable consumer if it does not exist.

        Raises:
            SourceUnavailable: the server or the stream is not there; the source stays
                new and ``start`` may be called again.
        """
        if self._state is not SourceState.NEW:
            raise RuntimeError(f"NATS JetStream source cannot start from {self._state.value}")
        await self._ensure_session()
        self._state = SourceState.RUNNING
        self._keepalive = asyncio.create_task(
            self._keep_in_flight_alive(), name=f"nats-in-progress-{self._consumer}"
        )

    async def stop(self) -> None:
        """Close the connection; unacknowledged messages return after ``ack_wait_s``."""
        if self._state is SourceState.STOPPED:
            return
        self._state = SourceState.STOPPED
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        await self._drop_session()

    async def receive(self, max_records: int, wait_s: float) -> list[SourceRecord]:
        self._require_running()
        try:
            async with self._fetch_lock:
                session = await self._ensure_session()
                messages = await session.subscription.fetch(
                    batch=max_records, timeout=max(wait_s, _MIN_FETCH_S)
                )
        except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from deep in fetch
            return []
        except _BROKER_FAULTS as exc:
            await self._drop_session()
            raise self._unavailable(exc) from exc
        records = [self._record(message) for message in messages]
        self._in_flight.update(record.token.reply for record in records)
        return records

    async def ack(self, records: Sequence[SourceRecord]) -> None:
        """Ack the records; if the server is unreachable, ack them after the reconnect."""
        self._require_running()
        replies = [record.token.reply for record in records]
        self._in_flight.difference_update(replies)
        if replies and not await self._publish_all(replies, _ACK):
            self._acks_owed.extend(replies)
            log.warning(
                "ack of %d messages on %s deferred until NATS is reachable again",
                len(replies),
                self._address.broker.display,
            )

    async def release(self, records: Sequence[SourceRecord]) -> None:
        """Nak the records: JetStream delivers them again (after ``ack_wait_s`` if this fails)."""
        self._require_running()
        replies = [record.token.reply for record in records]
        self._in_flight.difference_update(replies)
        if replies and not await self._publish_all(replies, _NAK):
            log.warning(
                "nak of %d messages on %s not sent; they return after ack_wait_s",
                len(replies),
                self._address.broker.display,
            )

    def event(self, records: Sequence[SourceRecord]) -> dict[str, Any]:
        return {"Records": [record.shape for record in records]}

    def _require_running(self) -> None:
        if self._state is not SourceState.RUNNING:
            raise RuntimeError(f"NATS JetStream source is {self._state.value}, not running")

    def _unavailable(self, exc: BaseException) -> SourceUnavailable:
        return SourceUnavailable(
            f"NATS stream {self._address.stream} at {self._address.broker.display}: "
            f"{type(exc).__name__}: {exc}"
        )

    async def _ensure_session(self) -> _Session:
        async with self._session_lock:
            session = self._session
            if session is not None and session.client.is_connected:
                return session
            await self._drop_session()
            try:
                session = self._session = await self._open_session()
            except _BROKER_FAULTS as exc:
                raise self._unavailable(exc) from exc
            if self._acks_owed:
                owed, self._acks_owed = self._acks_owed, []
                if not await self._publish_all(owed, _ACK):
                    self._acks_owed = owed
            return session

    async def _open_session(self) -> _Session:
        broker = self._address.broker
        # user:password@ is a user login; a lone user@ is a token, as in nats-py's own URLs.
        has_password = bool(broker.password)
        user = broker.username if has_password else None
        token = broker.username if broker.username and not has_password else None
        # Our own Client, not nats.connect(): a failed handshake must still close its socket.
        client = NatsClient()
        try:
            # nats-py's first connect retries the server max_reconnect_attempts times (60 by
            # default, every 2 s) even without reconnects: one immediate retry, then give up,
            # so an unreachable server is reported and left to the poller's backoff.
            async with asyncio.timeout(2 * _CONNECT_TIMEOUT_S + 1):
                await client.connect(
                    servers=[self._address.server_url],
                    name=self._consumer,
                    allow_reconnect=False,
                    max_reconnect_attempts=1,
                    reconnect_time_wait=0,
                    connect_timeout=_CONNECT_TIMEOUT_S,
                    error_cb=self._on_error,
                    user=user,
                    password=broker.password or None,
                    token=token,
                )
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                jetstream = client.jetstream(timeout=_COMMAND_TIMEOUT_S)
                await self._ensure_consumer(jetstream)
                subscription = await jetstream.pull_subscribe_bind(
                    durable=self._consumer, stream=self._address.stream
                )
        except BaseException:
            await client.close()
            raise
        return _Session(client, subscription)

    async def _ensure_consumer(self, jetstream: JetStreamContext) -> None:
        try:
            await jetstream.consumer_info(self._address.stream, self._consumer)
            return
        except nats.js.errors.NotFoundError:
            pass  # first start of this mapping (or the consumer was deleted): make it
        await jetstream.add_consumer(
            self._address.stream,
            ConsumerConfig(
                durable_name=self._consumer,
                deliver_policy=self._address.deliver_policy,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=float(self._address.ack_wait_s),
                filter_subject=self._address.subject or None,
            ),
        )

    async def _drop_session(self) -> None:
        session, self._session = self._session, None
        if session is None or session.client.is_closed:
            return
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                await session.client.close()
        except _BROKER_FAULTS as exc:
            log.warning("closing the connection to %s: %s", self._address.broker.display, exc)

    async def _publish_all(self, replies: Sequence[str], payload: bytes) -> bool:
        """Publish ``payload`` to each reply subject and flush; False if that failed."""
        session = self._session
        if session is None or not session.client.is_connected:
            return False
        try:
            async with asyncio.timeout(_COMMAND_TIMEOUT_S):
                for reply in replies:
                    await session.client.publish(reply, payload)
                await session.client.flush(timeout=int(_COMMAND_TIMEOUT_S))
        except _BROKER_FAULTS as exc:
            log.debug("publishing to %s failed: %s", self._address.broker.display, exc)
            return False
        return True

    async def _keep_in_flight_alive(self) -> None:
        """Every third of ``ack_wait_s``, mark the messages in flight as in progress."""
        interval_s = self._address.ack_wait_s / 3
        next_tick = time.monotonic() + interval_s
        while True:
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            next_tick += interval_s
            if not self._in_flight:
                continue
            try:
                # Not sent while disconnected: those messages return after ack_wait_s.
                await self._publish_all(list(self._in_flight), _IN_PROGRESS)
            except Exception:  # task boundary: the next tick tries again
                log.exception(
                    "marking messages in progress on %s failed", self._address.broker.display
                )

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error on %s: %s", self._address.broker.display, exc)

    def _record(self, message: Msg) -> SourceRecord:
        metadata = message.metadata
        sent_at = metadata.timestamp.timestamp() if metadata.timestamp else time.time()
        sequence = metadata.sequence.stream
        shape = {
            "nats": {
                "stream": metadata.stream,
                "consumer": metadata.consumer,
                "subject": message.subject,
                "streamSequence": sequence,
                "consumerSequence": metadata.sequence.consumer,
                "deliveryCount": metadata.num_delivered,
                "pending": metadata.num_pending,
                "timestamp": sent_at,
                "headers": dict(message.headers or {}),
                "data": base64.b64encode(message.data).decode("ascii"),
            },
            "eventSource": EVENT_SOURCE,
            "eventVersion": EVENT_VERSION,
            "eventID": f"{metadata.stream}:{sequence}",
            "eventName": EVENT_NAME,
            "eventSourceARN": self._address.broker.display,
            "awsRegion": self._spec.region,
        }
        return SourceRecord(item_id=str(sequence), shape=shape, arrived_at=sent_at, token=message)
