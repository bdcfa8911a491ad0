"""What every event source a mapping polls provides: receive records, settle them.

Design notes: a mapping's poller (``faas/events/mappings``) owns batching, the
invoke, partial-batch responses, retries and the on-failure destination; a source
only speaks its broker. Two kinds of source settle differently:

- ``QUEUE`` (SQS, RabbitMQ, NATS JetStream): each record is settled on its own;
  ``release`` hands a failed record back to the broker for redelivery (SQS: left
  to reappear after its visibility timeout; RabbitMQ: nack with requeue; NATS: nak).
- ``STREAM`` (Redis Streams, modelled on Kinesis): records are ordered; the poller
  retries a failed batch in place (bisecting if asked) and ``ack``s it once it
  succeeded or was given up on; a record delivered but never acked (a crash) is
  received again later (reclaimed from the pending list).

A source reconnects by itself: ``receive`` raises ``SourceUnavailable`` while its
broker is unreachable, and the poller backs off and calls it again.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class SourceKind(enum.Enum):
    QUEUE = "queue"
    STREAM = "stream"


class SourceUnavailable(Exception):
    """The broker cannot be reached right now; the poller retries with backoff."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """What a source is built from: the mapping's source address and its settings.

    Each source module offers ``validate(spec) -> None`` (raising ``ValueError`` with a
    message fit for an InvalidParameterValueException, without touching the network)
    and ``open_source(spec) -> EventSource`` (not yet connected: ``start`` connects).
    """

    address: str  # EventSourceArn: arn:aws:sqs:..., redis://..., amqp://..., nats://...
    mapping_uuid: str  # names the consumer group / durable consumer / consumer
    function_name: str
    region: str
    account_id: str
    starting_position: str = "LATEST"  # streams: TRIM_HORIZON | LATEST
    batch_size: int = 10
    max_batches_in_flight: int = 1  # the mapping's batch loops (ScalingConfig for queues)
    sqs_endpoint_url: str = ""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record as received: its Lambda event shape and what settling it needs."""

    item_id: str  # batchItemFailures itemIdentifier: SQS messageId, stream sequence number
    shape: dict[str, Any]  # one element of the event's ``Records`` list
    arrived_at: float  # epoch seconds the broker accepted it (for IteratorAge)
    token: Any = None  # the source's own handle (receipt handle, delivery tag, message)


class EventSource(Protocol):
    """One broker endpoint a mapping polls."""

    kind: SourceKind

    async def start(self) -> None:
        """Connect (and create the consumer group / durable consumer if needed)."""
        ...

    async def stop(self) -> None:
        """Disconnect; unsettled records go back to the broker by its own rules."""
        ...

    async def receive(self, max_records: int, wait_s: float) -> list[SourceRecord]:
        """Up to ``max_records``, waiting at most ``wait_s`` for the first one.

        Raises:
            SourceUnavailable: the broker is unreachable (after a reconnect attempt).
        """
        ...

    async def ack(self, records: Sequence[SourceRecord]) -> None:
        """The records are done: delete / XACK / ack them."""
        ...

    async def release(self, records: Sequence[SourceRecord]) -> None:
        """Hand the records back for redelivery (QUEUE sources only)."""
        ...

    def event(self, records: Sequence[SourceRecord]) -> dict[str, Any]:
        """The event a handler receives for one batch of this source's records."""
        ...
