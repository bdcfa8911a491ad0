"""The RabbitMQ source against the machine's real broker: deliver, ack, nack, recover."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import gc
import socket
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel
from broker_support import AMQP_URL, require_rabbitmq
from source_support import item_ids, make_spec, receive_ids, unique_name
from tcp_proxy import TcpProxy

from faas.events.sources import rabbitmq
from faas.events.sources.base import SourceKind, SourceUnavailable
from faas.events.sources.rabbitmq import RabbitMqSource

MakeSource = Callable[..., Awaitable[RabbitMqSource]]
SENT_AT = datetime.datetime(2024, 1, 2, 15, 4, 5, tzinfo=datetime.UTC)


@pytest.fixture
async def channel() -> AsyncIterator[AbstractChannel]:
    require_rabbitmq()
    connection = await aio_pika.connect(AMQP_URL)
    yield await connection.channel()
    await connection.close()


@pytest.fixture
async def queue(channel: AbstractChannel) -> AsyncIterator[str]:
    name = unique_name("faas-test-queue")
    await channel.declare_queue(name, auto_delete=False)
    yield name
    await channel.queue_delete(name)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A cuttable path to the broker."""
    require_rabbitmq()
    target = urllib.parse.urlsplit(AMQP_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5672)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def make_source(queue: str) -> AsyncIterator[MakeSource]:
    sources: list[RabbitMqSource] = []

    async def make(
        url: str = AMQP_URL,
        queue_name: str = queue,
        batch_size: int = 10,
        start: bool = True,
        max_batches_in_flight: int = 1,
    ) -> RabbitMqSource:
        address = f"{url.rstrip('/')}/?queue={queue_name}"
        spec = make_spec(address, batch_size=batch_size)
        spec = dataclasses.replace(spec, max_batches_in_flight=max_batches_in_flight)
        source = rabbitmq.open_source(spec)
        sources.append(source)
        if start:
            await source.start()
        return source

    yield make
    for source in sources:
        await source.stop()


async def publish(channel: AbstractChannel, queue: str, count: int, start: int = 0) -> list[str]:
    ids = [f"msg-{n}" for n in range(start, start + count)]
    for message_id in ids:
        message = aio_pika.Message(
            message_id.encode(),
            message_id=message_id,
            content_type="text/plain",
            headers={"tenant": "acme", "attempt": 1},
            timestamp=SENT_AT,
            expiration=60,
        )
        await channel.default_exchange.publish(message, routing_key=queue)
    return ids


def test_addresses_are_validated_without_the_network() -> None:
    parsed = rabbitmq.parse("amqps://app:s3cret@mq.internal:5671/prod?queue=jobs&heartbeat=30")
    assert (parsed.vhost, parsed.queue, parsed.heartbeat_s) == ("prod", "jobs", 30)
    assert parsed.broker.display == "amqps://app:***@mq.internal:5671/prod?queue=jobs&heartbeat=30"
    assert rabbitmq.parse("amqp://h/%2F?queue=q").queue_key == "q::/"
    assert rabbitmq.parse("amqp://h?queue=q").queue_key == "q::/"
    invalid = {
        "amqp://u:hunter2@h/": "needs \\?queue=",
        "amqp://u:hunter2@h/?queue=q&prefetch=5": "unknown parameter 'prefetch'",
        "amqp://u:hunter2@h/?queue=q&heartbeat=-1": "heartbeat must be at least 0",
        "redis://u:hunter2@h/?queue=q": "must start with amqp:// or amqps://",
    }
    for address, message in invalid.items():
        with pytest.raises(ValueError, match=message) as raised:
            rabbitmq.validate(make_spec(address))
        assert "hunter2" not in str(raised.value)


async def test_acked_messages_are_not_delivered_again(
    channel: AbstractChannel, queue: str, make_source: MakeSource
) -> None:
    source = await make_source()
    assert source.kind is SourceKind.QUEUE
    ids = await publish(channel, queue, 3)

    records = await receive_ids(source, 3, timeout_s=5.0)

    assert item_ids(records) == ids
    event = source.event(records)
    assert event["eventSource"] == "aws:rmq"
    assert event["eventSourceArn"] == f"amqp://guest:***@127.0.0.1:5672/?queue={queue}"
    (messages,) = event["rmqMessagesByQueue"].values()
    assert list(event["rmqMessagesByQueue"]) == [f"{queue}::/"]
    first = messages[0]
    assert base64.b64decode(first["data"]) == b"msg-0"
    assert first["redelivered"] is False
    assert first["basicProperties"] == {
        "contentType": "text/plain",
        "contentEncoding": None,
        "headers": {"tenant": {"bytes": list(b"acme")}, "attempt": 1},
        "deliveryMode": 1,
        "priority": 0,
        "correlationId": None,
        "replyTo": None,
        "expiration": "60000",
        "messageId": "msg-0",
        "timestamp": "Jan 2, 2024, 3:04:05 PM",
        "type": None,
        "userId": None,
        "appId": None,
        "clusterId": None,
        "bodySize": 5,
    }
    assert records[0].arrived_at == SENT_AT.timestamp()

    await source.ack(records)

    assert await source.receive(10, 0.3) == []
    declared = await channel.declare_queue(queue, passive=True)
    assert declared.declaration_result.message_count == 0


async def test_released_messages_are_redelivered(
    channel: AbstractChannel, queue: str, make_source: MakeSource
) -> None:
    source = await make_source()
    ids = await publish(channel, queue, 2)
    records = await receive_ids(source, 2, timeout_s=5.0)

    await source.release(records[:1])
    await source.ack(records[1:])

    (again,) = await receive_ids(source, 1, timeout_s=5.0)
    assert again.item_id == ids[0]
    assert again.shape["redelivered"] is True
    await source.ack([again])
    assert await source.receive(10, 0.3) == []


async def test_prefetch_caps_unsettled_deliveries_at_the_batch_size(
    channel: AbstractChannel, queue: str, make_source: MakeSource
) -> None:
    source = await make_source(batch_size=2)
    ids = await publish(channel, queue, 3)
    first = await receive_ids(source, 2, timeout_s=5.0)
    assert await source.receive(10, 0.3) == []  # nothing more until the batch is settled
    await source.ack(first)
    rest = await receive_ids(source, 1, timeout_s=5.0)
    assert item_ids(first + rest) == ids


async def test_prefetch_leaves_a_batch_for_each_batch_loop(
    channel: AbstractChannel, queue: str, make_source: MakeSource
) -> None:
    # The prefetch used to be one batch whatever the mapping's MaximumConcurrency, so a
    # RabbitMQ mapping never had more than one batch (one invocation) in flight.
    source = await make_source(batch_size=2, max_batches_in_flight=2)
    ids = await publish(channel, queue, 5)
    first = await receive_ids(source, 2, timeout_s=5.0, max_records=2)
    second = await receive_ids(source, 2, timeout_s=5.0, max_records=2)  # while first runs
    assert await source.receive(10, 0.3) == []  # two batches unsettled: nothing more
    await source.ack(first + second)
    rest = await receive_ids(source, 1, timeout_s=5.0)
    assert item_ids(first + second + rest) == ids


async def test_a_refused_connection_leaves_no_connection_open(make_source: MakeSource) -> None:
    # aio_pika.connect() drops a Connection whose connect failed without closing it; its
    # __del__ then started a close task that nobody owned, on every failed attempt while
    # the broker was down.
    with socket.socket() as closed_port:  # bound, never listening: connections are refused
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        source = await make_source(url=f"amqp://guest:guest@127.0.0.1:{port}/", start=False)
        with pytest.raises(SourceUnavailable):
            await source.start()
    gc.collect()
    left_open = [
        thing
        for thing in gc.get_objects()
        if isinstance(thing, aio_pika.Connection) and thing.url.port == port
        and not thing.is_closed
    ]  # fmt: skip
    assert left_open == []


async def test_a_missing_queue_fails_start_until_it_exists(
    channel: AbstractChannel, make_source: MakeSource
) -> None:
    name = unique_name("faas-test-late-queue")
    source = await make_source(queue_name=name, start=False)
    for _ in range(2):  # the poller calls start again (with backoff) until it succeeds
        with pytest.raises(SourceUnavailable, match="NOT_FOUND"):
            await source.start()
    await channel.declare_queue(name)
    try:
        await source.start()
        ids = await publish(channel, name, 1)
        assert item_ids(await receive_ids(source, 1, timeout_s=5.0)) == ids
    finally:
        await channel.queue_delete(name)


async def test_a_lost_connection_recovers_and_redelivers_only_unacked(
    channel: AbstractChannel, queue: str, make_source: MakeSource, proxy: TcpProxy
) -> None:
    source = await make_source(url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/")
    ids = await publish(channel, queue, 4)
    done = await receive_ids(source, 4, timeout_s=5.0)
    await source.ack(done[:2])

    proxy.cut()
    await source.ack(done[2:])  # the channel is gone: the broker requeues these instead
    with pytest.raises(SourceUnavailable):
        await source.receive(10, 1.0)
    with pytest.raises(SourceUnavailable):
        await source.receive(10, 0.1)  # still gone: connecting fails
    proxy.restore()

    again = await receive_ids(source, 2, timeout_s=5.0)
    assert item_ids(again) == ids[2:]
    assert all(record.shape["redelivered"] for record in again)
    await source.ack(again)
    assert await source.receive(10, 0.3) == []
