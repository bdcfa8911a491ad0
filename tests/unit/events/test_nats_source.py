"""The NATS JetStream source against the machine's real server: deliver, ack, nak, recover."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from broker_support import NATS_URL, require_nats
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from source_support import eventually, item_ids, make_spec, receive_ids, unique_name
from tcp_proxy import TcpProxy

from faas.events.sources import nats_jetstream
from faas.events.sources.base import SourceKind, SourceUnavailable
from faas.events.sources.nats_jetstream import NatsJetStreamSource, consumer_name

MakeSource = Callable[..., Awaitable[NatsJetStreamSource]]


@pytest.fixture
async def client() -> AsyncIterator[NatsClient]:
    require_nats()
    connection = await nats.connect(NATS_URL)
    yield connection
    await connection.close()


@pytest.fixture
async def jetstream(client: NatsClient) -> JetStreamContext:
    return client.jetstream()


@pytest.fixture
async def stream(jetstream: JetStreamContext) -> AsyncIterator[str]:
    """A stream ``<NAME>`` over the subjects ``<name>.>``; deleted with its consumers."""
    name = unique_name("FAAS_TEST").replace("-", "_")
    await jetstream.add_stream(name=name, subjects=[f"{name.lower()}.>"])
    yield name
    await jetstream.delete_stream(name)


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    """A cuttable path to the server."""
    require_nats()
    target = urllib.parse.urlsplit(NATS_URL)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 4222)
    await proxy.start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def make_source(stream: str) -> AsyncIterator[MakeSource]:
    sources: list[NatsJetStreamSource] = []

    async def make(
        mapping_uuid: str = "", url: str = NATS_URL, query: str = "", **spec: str
    ) -> NatsJetStreamSource:
        address = f"{url}?stream={stream}{query}"
        source = nats_jetstream.open_source(make_spec(address, mapping_uuid, **spec))
        sources.append(source)
        await source.start()
        return source

    yield make
    for source in sources:
        await source.stop()


async def publish(
    jetstream: JetStreamContext, stream: str, count: int, start: int = 0, kind: str = "new"
) -> list[str]:
    sequences = []
    for n in range(start, start + count):
        ack = await jetstream.publish(
            f"{stream.lower()}.{kind}", json.dumps({"n": n}).encode(), headers={"Tenant": "acme"}
        )
        sequences.append(str(ack.seq))
    return sequences


async def no_backlog(jetstream: JetStreamContext, stream: str, mapping_uuid: str) -> bool:
    """True once the consumer has nothing unacked or undelivered (acks apply asynchronously)."""
    info = await jetstream.consumer_info(stream, consumer_name(mapping_uuid))
    return not info.num_ack_pending and not info.num_pending


def test_addresses_are_validated_without_the_network() -> None:
    parsed = nats_jetstream.parse("nats://app:s3cret@nats.internal?stream=ORDERS&subject=orders.>")
    assert (parsed.stream, parsed.subject, parsed.ack_wait_s) == ("ORDERS", "orders.>", 30)
    assert parsed.deliver_policy.value == "all"
    assert parsed.server_url == "nats://nats.internal:4222"
    assert parsed.broker.display == "nats://app:***@nats.internal?stream=ORDERS&subject=orders.>"
    # A lone user name is a token: as secret as a password.
    assert nats_jetstream.parse("nats://t0ken@h:4222?stream=A").broker.display == (
        "nats://***@h:4222?stream=A"
    )
    invalid = {
        "nats://u:hunter2@h:4222": "needs \\?stream=",
        "nats://u:hunter2@h?stream=A.B": "not a valid stream name",
        "nats://u:hunter2@h?stream=A&subject=a..b": "subject 'a..b' is not valid",
        "nats://u:hunter2@h?stream=A&subject=a.>.b": "subject 'a.>.b' is not valid",
        "nats://u:hunter2@h?stream=A&ack_wait_s=0": "ack_wait_s must be at least 1",
        "nats://u:hunter2@h?stream=A&deliver=last": "deliver must be all or new",
        "nats://u:hunter2@h/A?stream=A": "must not have a path",
        "tls://u:hunter2@h?stream=A": "must start with nats://",
        "nats://hunter2@h?stream=A&ack_wait_s=0": "ack_wait_s must be at least 1",
    }
    for address, message in invalid.items():
        with pytest.raises(ValueError, match=message) as raised:
            nats_jetstream.validate(make_spec(address))
        assert "hunter2" not in str(raised.value)


# Run in a fresh interpreter: the broker module must not be imported yet.
_LOOP_STALL_PROBE = """
import asyncio, time
from faas.events import sources
from faas.events.sources.base import SourceSpec

async def main() -> None:
    gaps, done = [], asyncio.Event()
    async def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.02)
    spec = SourceSpec("nats://127.0.0.1:4222?stream=A", "uuid", "f", "us-east-1", "1")
    await sources.load_module(spec.address)
    sources.validate(spec)
    done.set()
    await ticker
    print(max(gaps))

asyncio.run(main())
"""


def test_the_broker_client_library_is_imported_off_the_event_loop() -> None:
    # nats-py takes about 0.2 s to import; importing it on the loop when the first NATS
    # mapping was created (or restored at start-up) stalled every request meanwhile.
    probe = subprocess.run(
        [sys.executable, "-c", _LOOP_STALL_PROBE], capture_output=True, text=True, timeout=60
    )
    assert probe.returncode == 0, probe.stderr
    assert float(probe.stdout) < 0.1, f"the event loop stalled for {probe.stdout.strip()} s"


async def test_acked_messages_are_not_delivered_again(
    jetstream: JetStreamContext, stream: str, make_source: MakeSource
) -> None:
    mapping = unique_name("mapping")
    source = await make_source(mapping)
    assert source.kind is SourceKind.QUEUE
    sequences = await publish(jetstream, stream, 3)

    records = await receive_ids(source, 3, timeout_s=5.0)

    assert item_ids(records) == sequences
    first = records[0].shape
    assert first["eventSource"] == "faas:nats-jetstream"
    assert first["eventName"] == "faas:nats:message"
    assert first["eventID"] == f"{stream}:{sequences[0]}"
    assert first["eventSourceARN"] == f"{NATS_URL}?stream={stream}"
    body = first["nats"]
    assert (body["stream"], body["consumer"]) == (stream, consumer_name(mapping))
    assert body["subject"] == f"{stream.lower()}.new"
    assert (body["streamSequence"], body["consumerSequence"]) == (int(sequences[0]), 1)
    assert body["deliveryCount"] == 1
    assert body["headers"] == {"Tenant": "acme"}
    assert json.loads(base64.b64decode(body["data"])) == {"n": 0}
    assert body["timestamp"] == records[0].arrived_at > 0
    assert source.event(records) == {"Records": [r.shape for r in records]}

    await source.ack(records)

    assert await source.receive(10, 0.3) == []
    await eventually(lambda: no_backlog(jetstream, stream, mapping), 5.0, "the acks")


async def test_naked_messages_are_redelivered(
    jetstream: JetStreamContext, stream: str, make_source: MakeSource
) -> None:
    source = await make_source()
    sequences = await publish(jetstream, stream, 2)
    records = await receive_ids(source, 2, timeout_s=5.0)

    await source.release(records[:1])
    await source.ack(records[1:])

    (again,) = await receive_ids(source, 1, timeout_s=5.0)
    assert again.item_id == sequences[0]
    assert again.shape["nats"]["deliveryCount"] == 2
    await source.ack([again])
    assert await source.receive(10, 0.3) == []


async def test_subject_filter_and_deliver_new(
    jetstream: JetStreamContext, stream: str, make_source: MakeSource
) -> None:
    await publish(jetstream, stream, 1, kind="old")
    source = await make_source(query=f"&subject={stream.lower()}.wanted&deliver=new")
    await publish(jetstream, stream, 1, kind="other")
    wanted = await publish(jetstream, stream, 1, kind="wanted")

    records = await receive_ids(source, 1, timeout_s=5.0)

    assert item_ids(records) == wanted
    await source.ack(records)
    assert await source.receive(10, 0.3) == []


async def test_the_durable_consumer_keeps_its_position_across_restarts(
    jetstream: JetStreamContext, stream: str, make_source: MakeSource
) -> None:
    mapping = unique_name("mapping")
    before = await make_source(mapping)
    sequences = await publish(jetstream, stream, 3)
    await before.ack(await receive_ids(before, 3, timeout_s=5.0))
    await before.stop()
    later = await publish(jetstream, stream, 1, start=3)

    after = await make_source(mapping)

    assert item_ids(await receive_ids(after, 1, timeout_s=5.0)) == later
    assert later[0] not in sequences


async def test_a_long_batch_is_kept_in_progress_beyond_ack_wait(
    jetstream: JetStreamContext, stream: str, make_source: MakeSource
) -> None:
    mapping = unique_name("mapping")
    source = await make_source(mapping, query="&ack_wait_s=1")
    sequences = await publish(jetstream, stream, 1)
    in_flight = await receive_ids(source, 1, timeout_s=5.0)

    # Another batch loop polls for 2.5 ack waits while the first batch is still running.
    deadline = time.monotonic() + 2.5
    while time.monotonic() < deadline:
        assert await source.receive(10, 0.2) == [], "redelivered while still in flight"

    await source.ack(in_flight)
    await eventually(lambda: no_backlog(jetstream, stream, mapping), 5.0, "the ack")
    info = await jetstream.consumer_info(stream, consumer_name(mapping))
    assert info.num_redelivered == 0
    assert item_ids(in_flight) == sequences


async def test_a_missing_stream_fails_start_until_it_exists(jetstream: JetStreamContext) -> None:
    name = unique_name("FAAS_TEST_LATE").replace("-", "_")
    source = nats_jetstream.open_source(make_spec(f"{NATS_URL}?stream={name}"))
    try:
        for _ in range(2):  # the poller calls start again (with backoff) until it succeeds
            with pytest.raises(SourceUnavailable, match="stream not found"):
                await source.start()
        await jetstream.add_stream(name=name, subjects=[f"{name.lower()}.>"])
        await source.start()
        sequences = await publish(jetstream, name, 1)
        assert item_ids(await receive_ids(source, 1, timeout_s=5.0)) == sequences
    finally:
        await source.stop()
        await jetstream.delete_stream(name)


async def test_an_unreachable_server_fails_start_promptly(stream: str) -> None:
    # nats-py's first connect used to retry a refused connection for two minutes, so a
    # mapping created while the server was down hung in start and reported nothing.
    with socket.socket() as closed_port:  # bound, never listening: connections are refused
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        source = nats_jetstream.open_source(make_spec(f"nats://127.0.0.1:{port}?stream={stream}"))
        started = time.monotonic()
        with pytest.raises(SourceUnavailable):
            await source.start()
        assert time.monotonic() - started < 3
        await source.stop()


async def test_a_lost_connection_recovers_and_keeps_acks(
    jetstream: JetStreamContext, stream: str, make_source: MakeSource, proxy: TcpProxy
) -> None:
    mapping = unique_name("mapping")
    source = await make_source(mapping, url=f"nats://127.0.0.1:{proxy.port}")
    await publish(jetstream, stream, 3)
    in_flight = await receive_ids(source, 3, timeout_s=5.0)
    await source.ack(in_flight[:1])

    proxy.cut()
    await eventually(lambda: receive_fails(source), 5.0, "the source to notice the cut")
    await source.ack(in_flight[1:2])  # the server is unreachable: sent after the reconnect
    await source.release(in_flight[2:3])  # not sent: returns after ack_wait_s instead
    with pytest.raises(SourceUnavailable):
        await source.receive(10, 0.1)
    proxy.restore()
    later = await publish(jetstream, stream, 1, start=3)

    rest = await receive_ids(source, 1, timeout_s=5.0)
    assert item_ids(rest) == later  # nothing acked came back
    await source.ack(rest)

    async def only_the_lost_nak_is_pending() -> bool:
        # The message whose nak was lost stays unacked until ack_wait_s; the rest is acked.
        info = await jetstream.consumer_info(stream, consumer_name(mapping))
        return info.num_ack_pending == 1 and info.num_pending == 0

    await eventually(only_the_lost_nak_is_pending, 5.0, "only the lost nak to be pending")


async def receive_fails(source: NatsJetStreamSource) -> bool:
    try:
        await source.receive(10, 0.1)
    except SourceUnavailable:
        return True
    return False
