"""The Redis Streams source against the machine's real Redis: deliver, ack, reclaim, recover."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.asyncio as aioredis
from broker_support import REDIS_URL, require_redis
from source_support import eventually, item_ids, make_spec, receive_ids, unique_name
from tcp_proxy import TcpProxy

from faas.events.sources import redis_streams
from faas.events.sources.base import SourceKind, SourceUnavailable
from faas.events.sources.redis_streams import RedisStreamSource, group_name

MakeSource = Callable[..., Awaitable[RedisStreamSource]]


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    require_redis()
    client = aioredis.Redis.from_url(REDIS_URL, protocol=2)
    yield client
    await client.aclose()


@pytest.fixture
async def stream(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    name = unique_name("faas-test-stream")
    yield name
    await redis_client.delete(name)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A cuttable path to Redis."""
    require_redis()
    target = urllib.parse.urlsplit(REDIS_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def make_source(stream: str) -> AsyncIterator[MakeSource]:
    """Started sources on ``stream``; every one is stopped at the end."""
    sources: list[RedisStreamSource] = []

    async def make(
        mapping_uuid: str = "",
        consumer: str = "",
        claim_idle_ms: int = 30_000,
        url: str = REDIS_URL,
        **spec: str,
    ) -> RedisStreamSource:
        address = f"{url}?stream={stream}&claim_idle_ms={claim_idle_ms}"
        source_spec = make_spec(address, mapping_uuid, **spec)
        source = RedisStreamSource(source_spec, redis_streams.parse(address), consumer)
        sources.append(source)
        await source.start()
        return source

    yield make
    for source in sources:
        await source.stop()


async def publish(client: aioredis.Redis, stream: str, count: int, start: int = 0) -> list[str]:
    ids = []
    for n in range(start, start + count):
        entry_id = await client.xadd(stream, {"data": json.dumps({"n": n}), "kind": "order"})
        ids.append(entry_id.decode())
    return ids


async def pending_count(client: aioredis.Redis, stream: str, mapping_uuid: str) -> int:
    summary = await client.xpending(stream, group_name(mapping_uuid))
    return int(summary["pending"])


async def kill_source_connections(client: aioredis.Redis, mapping_uuid: str) -> int:
    """CLIENT KILL every connection the source opened (found by its client name)."""
    ours = [c for c in await client.client_list() if c["name"] == group_name(mapping_uuid)]
    for connection in ours:
        await client.client_kill_filter(_id=connection["id"])
    return len(ours)


def test_addresses_are_validated_without_the_network() -> None:
    valid = [
        "redis://127.0.0.1:6379/0?stream=orders",
        "redis://127.0.0.1/2/orders",
        "rediss://user:secret@cache.internal:6380/0?stream=orders&claim_idle_ms=5000",
    ]
    for address in valid:
        redis_streams.validate(make_spec(address))
    parsed = redis_streams.parse("redis://:s3cret@h:1/3/a/b")
    assert (parsed.db, parsed.stream, parsed.claim_idle_ms) == (3, "a/b", 30_000)
    assert parsed.broker.display == "redis://:***@h:1/3/a/b"
    invalid = {
        "redis://h:6379/0": "names no stream",
        "redis://h:6379/x?stream=s": "database number",
        "redis://h/0/a?stream=b": "two different streams",
        "redis://h/0?stream=s&claim_idle_ms=soon": "claim_idle_ms must be an integer",
        "redis://h/0?stream=s&block_ms=1": "unknown parameter 'block_ms'",
        "amqp://h/0?stream=s": "must start with redis:// or rediss://",
        "redis://:hunter2@/0?stream=s": "has no host",
    }
    for address, message in invalid.items():
        with pytest.raises(ValueError, match=message) as raised:
            redis_streams.validate(make_spec(address))
        assert "hunter2" not in str(raised.value)
    with pytest.raises(ValueError, match="StartingPosition AT_TIMESTAMP"):
        redis_streams.validate(make_spec(valid[0], starting_position="AT_TIMESTAMP"))


async def test_acked_entries_are_not_delivered_again(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource
) -> None:
    mapping = unique_name("mapping")
    source = await make_source(mapping)
    assert source.kind is SourceKind.STREAM
    ids = await publish(redis_client, stream, 5)

    records = await source.receive(10, 1.0)

    assert item_ids(records) == ids
    first = records[0]
    assert first.shape["eventSource"] == "faas:redis-streams"
    assert first.shape["eventName"] == "faas:redis:record"
    assert first.shape["eventID"] == f"{stream}:{ids[0]}"
    assert first.shape["eventSourceARN"].endswith(f"?stream={stream}&claim_idle_ms=30000")
    assert first.shape["awsRegion"] == "us-east-1"
    body = first.shape["redis"]
    assert body["streamName"] == stream
    assert body["sequenceNumber"] == ids[0]
    assert json.loads(base64.b64decode(body["data"])) == {"n": 0}
    assert body["fields"] == {"data": '{"n": 0}', "kind": "order"}
    assert body["approximateArrivalTimestamp"] == int(ids[0].split("-")[0]) / 1000
    assert first.arrived_at == body["approximateArrivalTimestamp"]
    assert source.event(records) == {"Records": [r.shape for r in records]}

    await source.ack(records)

    assert await source.receive(10, 0.2) == []
    assert await pending_count(redis_client, stream, mapping) == 0


async def test_a_long_poll_outlasts_the_client_library_s_default_socket_timeout(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource
) -> None:
    # A poller's receive blocks up to 20 s; redis-py's default 5 s socket read timeout
    # once turned every idle long poll into "source unavailable" and a reconnect.
    source = await make_source()

    async def publish_late() -> list[str]:
        await asyncio.sleep(5.3)
        return await publish(redis_client, stream, 1)

    late = asyncio.create_task(publish_late())
    records = await source.receive(10, 8.0)

    assert item_ids(records) == await late


async def test_an_entry_without_a_data_field_carries_its_fields_as_json(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource
) -> None:
    source = await make_source()
    await redis_client.xadd(stream, {"id": "7", "total": "12.50"})

    (record,) = await source.receive(10, 1.0)

    assert json.loads(base64.b64decode(record.shape["redis"]["data"])) == {
        "id": "7",
        "total": "12.50",
    }


async def test_latest_skips_what_was_there_before_the_group(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource
) -> None:
    await publish(redis_client, stream, 2)
    source = await make_source(starting_position="LATEST")
    assert await source.receive(10, 0.1) == []
    later = await publish(redis_client, stream, 1, start=2)
    assert item_ids(await source.receive(10, 1.0)) == later


async def test_released_entries_come_back_first(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource
) -> None:
    source = await make_source()
    ids = await publish(redis_client, stream, 4)
    first = await source.receive(2, 1.0)
    assert item_ids(first) == ids[:2]

    await source.release(first)

    again = await source.receive(10, 1.0)
    assert item_ids(again) == ids[:2]
    await source.ack(again)
    assert item_ids(await source.receive(10, 1.0)) == ids[2:]


async def test_another_node_reclaims_what_a_crashed_node_left_pending(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource
) -> None:
    mapping = unique_name("mapping")
    crashed = await make_source(mapping, consumer="node-a", claim_idle_ms=300)
    ids = await publish(redis_client, stream, 3)
    assert item_ids(await crashed.receive(10, 1.0)) == ids
    await crashed.stop()  # no ack: the entries stay pending for node-a

    survivor = await make_source(mapping, consumer="node-b", claim_idle_ms=300)
    reclaimed = await receive_ids(survivor, 3, timeout_s=5.0)

    assert item_ids(reclaimed) == ids
    await survivor.ack(reclaimed)
    assert await pending_count(redis_client, stream, mapping) == 0
    assert await survivor.receive(10, 0.1) == []


async def test_a_restarted_node_reads_its_own_pending_entries_at_once(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource
) -> None:
    mapping = unique_name("mapping")
    before = await make_source(mapping, consumer="node-a")
    ids = await publish(redis_client, stream, 2)
    assert item_ids(await before.receive(10, 1.0)) == ids
    await before.stop()

    after = await make_source(mapping, consumer="node-a")

    assert item_ids(await after.receive(10, 0.0)) == ids


async def test_a_killed_connection_loses_nothing_and_repeats_no_acked_entry(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource
) -> None:
    mapping = unique_name("mapping")
    source = await make_source(mapping)
    ids = await publish(redis_client, stream, 6)
    acked: list[str] = []
    delivered_after_ack: list[str] = []

    batch = await source.receive(3, 1.0)
    await source.ack(batch)
    acked += item_ids(batch)
    in_flight = await source.receive(3, 1.0)
    # A reply lost with the connection: Redis delivered these to our consumer, we never saw them.
    lost = await publish(redis_client, stream, 2, start=6)
    await redis_client.xreadgroup(group_name(mapping), source.consumer_name, {stream: ">"}, count=2)
    assert await kill_source_connections(redis_client, mapping) >= 1
    await source.ack(in_flight)  # may find the connection dead: then it is sent on reconnect
    acked += item_ids(in_flight)

    # Killed while blocked in XREADGROUP: receive fails fast and the next call reconnects.
    blocked = asyncio.create_task(source.receive(10, 5.0))
    await eventually(
        lambda: blocked_reader(redis_client, mapping), 3.0, "the source blocked in XREADGROUP"
    )
    await kill_source_connections(redis_client, mapping)
    with pytest.raises(SourceUnavailable):
        async with asyncio.timeout(2.0):
            await blocked
    later = await publish(redis_client, stream, 2, start=8)

    rest = await receive_ids(source, 4, timeout_s=5.0)
    delivered_after_ack += item_ids(rest)
    await source.ack(rest)
    acked += item_ids(rest)

    assert sorted(acked) == sorted(ids + lost + later)
    assert set(delivered_after_ack) == set(lost + later)
    assert await source.receive(10, 0.1) == []
    assert await pending_count(redis_client, stream, mapping) == 0


async def blocked_reader(client: aioredis.Redis, mapping_uuid: str) -> bool:
    return any(
        c["name"] == group_name(mapping_uuid) and c["cmd"] == "xreadgroup" and "b" in c["flags"]
        for c in await client.client_list()
    )


async def test_redis_going_away_and_coming_back_loses_nothing(
    redis_client: aioredis.Redis, stream: str, make_source: MakeSource, proxy: TcpProxy
) -> None:
    mapping = unique_name("mapping")
    source = await make_source(mapping, url=f"redis://127.0.0.1:{proxy.port}/0")
    ids = await publish(redis_client, stream, 4)
    in_flight = await source.receive(2, 1.0)
    assert item_ids(in_flight) == ids[:2]

    proxy.cut()
    await source.ack(in_flight)  # Redis is unreachable: the XACK waits for the reconnect
    for _ in range(2):
        with pytest.raises(SourceUnavailable):
            await source.receive(10, 0.1)
    assert await pending_count(redis_client, stream, mapping) == 2
    proxy.restore()

    rest = await receive_ids(source, 2, timeout_s=5.0)
    assert item_ids(rest) == ids[2:]
    await source.ack(rest)
    assert await source.receive(10, 0.1) == []
    assert await pending_count(redis_client, stream, mapping) == 0
