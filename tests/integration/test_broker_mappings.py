"""Broker event source mappings end to end: a real server polls the machine's real brokers.

Each test publishes to Redis Streams, RabbitMQ or NATS JetStream, maps the source to
a real Python handler with boto3, and reads back what the handler saw (a JSON-lines
file it appends to) and what the broker still holds.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import nats
import pytest
import redis
from broker_support import (
    AMQP_URL,
    NATS_URL,
    REDIS_URL,
    require_nats,
    require_rabbitmq,
    require_redis,
)
from faas_support import FaasServer, ServerFactory, create_function, lambda_client, wait_until

pytestmark = pytest.mark.timeout(120)

# Records every message it is handed, whatever the broker; an order with "fail" fails
# its whole batch once (a marker file remembers it), so every test converges.
RECORDER = """
import base64
import json
import os
import time

def messages(event):
    if event.get("eventSource") == "aws:rmq":
        return [m for queue in event["rmqMessagesByQueue"].values() for m in queue]
    return event["Records"]

def data(message):
    for key in ("redis", "nats"):
        if key in message:
            return message[key]["data"]
    return message["data"]

def handler(event, context):
    work = os.environ["WORK_DIR"]
    envelope = {k: v for k, v in event.items() if k not in ("Records", "rmqMessagesByQueue")}
    fail = False
    for message in messages(event):
        order = json.loads(base64.b64decode(data(message)))
        with open(os.path.join(work, "seen.jsonl"), "a") as out:
            out.write(json.dumps({"event": envelope, "order": order, "message": message}) + "\\n")
        time.sleep(order.get("sleep", 0))
        marker = os.path.join(work, "failed-" + order["id"])
        if order.get("fail") and not os.path.exists(marker):
            open(marker, "w").close()
            fail = True
    if fail:
        raise RuntimeError("failing this batch once on purpose")
    return {}
"""

Mapper = Callable[..., str]


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server(poller_backoff_min_s=0.1, poller_backoff_max_s=1)


@pytest.fixture
def client(server: FaasServer) -> Any:
    return lambda_client(server)


@pytest.fixture
def recorder(client: Any, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A recording function named after the test; it writes to ``tmp_path``."""
    name = request.node.name.removeprefix("test_")[:50].replace("_", "-")
    create_function(client, name, RECORDER, Timeout=30,
                    Environment={"Variables": {"WORK_DIR": str(tmp_path)}})  # fmt: skip
    return name


@pytest.fixture
def mapper(client: Any) -> Iterator[Mapper]:
    """Creates mappings and waits for them to be Enabled; deletes them (and waits) after."""
    created: list[str] = []

    def create(function: str, address: str, **members: Any) -> str:
        response = client.create_event_source_mapping(
            FunctionName=function, EventSourceArn=address, **members
        )
        assert response["State"] == "Creating"
        created.append(response["UUID"])
        wait_state(client, response["UUID"], "Enabled")
        return str(response["UUID"])

    yield create
    for mapping_uuid in created:
        if is_gone(client, mapping_uuid):
            continue
        client.delete_event_source_mapping(UUID=mapping_uuid)
        wait_until(lambda u=mapping_uuid: is_gone(client, u), 30, what=f"{mapping_uuid} gone")


def wait_state(client: Any, mapping_uuid: str, state: str) -> None:
    wait_until(
        lambda: client.get_event_source_mapping(UUID=mapping_uuid)["State"] == state,
        15,
        what=f"mapping {mapping_uuid} to be {state}",
    )


def is_gone(client: Any, mapping_uuid: str) -> bool:
    try:
        client.get_event_source_mapping(UUID=mapping_uuid)
    except client.exceptions.ResourceNotFoundException:
        return True
    return False


def seen(work: Path) -> list[dict[str, Any]]:
    path = work / "seen.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def deliveries(work: Path, order_id: str) -> list[dict[str, Any]]:
    return [entry for entry in seen(work) if entry["order"]["id"] == order_id]


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# --- Redis Streams --------------------------------------------------------------------------


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    require_redis()
    client = redis.Redis.from_url(REDIS_URL, protocol=2)
    yield client
    client.close()


@pytest.fixture
def stream(redis_client: redis.Redis) -> Iterator[str]:
    name = unique("faas-it-stream")
    yield name
    redis_client.delete(name)


def xadd(client: redis.Redis, stream: str, **order: Any) -> str:
    entry_id = client.xadd(stream, {"data": json.dumps(order)})
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def redis_pending(client: redis.Redis, stream: str, mapping_uuid: str) -> int:
    return int(client.xpending(stream, f"faas-{mapping_uuid}")["pending"])


def test_redis_records_arrive_in_order_and_a_failed_batch_is_retried_in_place(
    client: Any,
    recorder: str,
    redis_client: redis.Redis,
    stream: str,
    mapper: Mapper,
    tmp_path: Path,
) -> None:
    ids = [xadd(redis_client, stream, id=order_id, fail=order_id == "boom")
           for order_id in ("first", "boom", "last")]  # fmt: skip
    address = f"{REDIS_URL}?stream={stream}"
    mapping_uuid = mapper(recorder, address, BatchSize=10, StartingPosition="TRIM_HORIZON")

    wait_until(lambda: len(deliveries(tmp_path, "last")) == 2, 30, what="the batch's retry")
    order = [entry["order"]["id"] for entry in seen(tmp_path)]
    assert order == ["first", "boom", "last"] * 2  # retried in place, in order
    entry = seen(tmp_path)[0]
    assert entry["event"] == {}  # the event is {"Records": [...]}
    record = entry["message"]
    assert record["eventSource"] == "faas:redis-streams"
    assert record["eventName"] == "faas:redis:record"
    assert record["eventVersion"] == "1.0"
    assert record["eventSourceARN"] == address
    assert record["eventID"] == f"{stream}:{ids[0]}"
    assert record["awsRegion"] == "us-east-1"
    assert record["redis"]["sequenceNumber"] == ids[0]
    assert record["redis"]["streamName"] == stream
    assert record["redis"]["fields"] == {"data": json.dumps({"id": "first", "fail": False})}
    # Acked once the retry succeeded; nothing more comes.
    wait_until(lambda: redis_pending(redis_client, stream, mapping_uuid) == 0, 15, what="XACK")
    wait_until(
        lambda: client.get_event_source_mapping(UUID=mapping_uuid)["LastProcessingResult"] == "OK",
        15,
        what="LastProcessingResult OK",
    )
    assert len(seen(tmp_path)) == 6


def test_redis_mapping_survives_killed_connections_without_loss_or_repeats(
    client: Any,
    recorder: str,
    redis_client: redis.Redis,
    stream: str,
    mapper: Mapper,
    tmp_path: Path,
) -> None:
    mapping_uuid = mapper(
        recorder, f"{REDIS_URL}?stream={stream}", BatchSize=3, StartingPosition="TRIM_HORIZON"
    )
    client_name = f"faas-{mapping_uuid}"

    def connections(blocked_only: bool) -> list[dict[str, Any]]:
        return [
            c for c in redis_client.client_list()
            if c["name"] == client_name and (not blocked_only or "b" in c["flags"])
        ]  # fmt: skip

    sent: list[str] = []
    for round_number in range(4):
        orders = [f"r{round_number}-{n}" for n in range(3)]
        is_idle_kill = round_number % 2 == 0
        if is_idle_kill:  # killed while it blocks in XREADGROUP waiting for records
            victims = wait_until(lambda: connections(True), 10, what="a blocked XREADGROUP")
            for victim in victims:
                redis_client.client_kill_filter(_id=victim["id"])
        for n, order_id in enumerate(orders):
            xadd(redis_client, stream, id=order_id, sleep=0.5 if n == 0 else 0)
        sent += orders
        if not is_idle_kill:  # killed while the batch runs, before its XACK
            wait_until(lambda o=orders[0]: deliveries(tmp_path, o), 10, what=f"{orders[0]}")
            for victim in connections(False):
                redis_client.client_kill_filter(_id=victim["id"])

    wait_until(
        lambda: {entry["order"]["id"] for entry in seen(tmp_path)} >= set(sent),
        30,
        what="every record to be delivered",
    )
    wait_until(lambda: redis_pending(redis_client, stream, mapping_uuid) == 0, 15, what="XACKs")
    delivered = [entry["order"]["id"] for entry in seen(tmp_path)]
    assert sorted(delivered) == sorted(sent)  # none lost, none acked and then repeated
    wait_until(
        lambda: client.get_event_source_mapping(UUID=mapping_uuid)["LastProcessingResult"] == "OK",
        15,
        what="the mapping to report OK again",
    )


# --- RabbitMQ -------------------------------------------------------------------------------


async def _amqp(action: Callable[[aio_pika.abc.AbstractChannel], Any]) -> Any:
    connection = await aio_pika.connect(AMQP_URL)
    try:
        return await action(await connection.channel())
    finally:
        await connection.close()


def amqp(action: Callable[[aio_pika.abc.AbstractChannel], Any]) -> Any:
    """Run one async action on a fresh channel (the test itself is synchronous)."""
    return asyncio.run(_amqp(action))


@pytest.fixture
def rabbit_queue() -> Iterator[str]:
    require_rabbitmq()
    name = unique("faas-it-queue")
    amqp(lambda channel: channel.declare_queue(name))
    yield name
    amqp(lambda channel: channel.queue_delete(name))


def publish_amqp(queue: str, *order_ids: str, failing: str = "") -> None:
    async def send(channel: aio_pika.abc.AbstractChannel) -> None:
        for order_id in order_ids:
            body = json.dumps({"id": order_id, "fail": order_id == failing}).encode()
            message = aio_pika.Message(body, message_id=order_id, content_type="application/json")
            await channel.default_exchange.publish(message, routing_key=queue)

    amqp(send)


def queue_depth(queue: str) -> int:
    async def depth(channel: aio_pika.abc.AbstractChannel) -> int:
        declared = await channel.declare_queue(queue, passive=True)
        return int(declared.declaration_result.message_count or 0)

    return int(amqp(depth))


def test_rabbitmq_messages_arrive_in_the_amazon_mq_shape_and_failures_are_redelivered(
    client: Any, recorder: str, rabbit_queue: str, mapper: Mapper, tmp_path: Path
) -> None:
    publish_amqp(rabbit_queue, "first", "boom", "last", failing="boom")
    address = f"amqp://guest:guest@127.0.0.1:5672/?queue={rabbit_queue}"
    mapping_uuid = mapper(recorder, address, BatchSize=10)

    wait_until(lambda: len(deliveries(tmp_path, "boom")) == 2, 30, what="the redelivery")
    wait_until(
        lambda: {e["order"]["id"] for e in seen(tmp_path)} == {"first", "boom", "last"},
        15,
        what="every message",
    )
    first, again = deliveries(tmp_path, "boom")
    assert (first["message"]["redelivered"], again["message"]["redelivered"]) == (False, True)
    assert first["event"] == {
        "eventSource": "aws:rmq",
        "eventSourceArn": f"amqp://guest:***@127.0.0.1:5672/?queue={rabbit_queue}",
    }
    properties = first["message"]["basicProperties"]
    assert properties["messageId"] == "boom"
    assert properties["contentType"] == "application/json"
    assert properties["bodySize"] == len(json.dumps({"id": "boom", "fail": True}))
    # Everything was acked: once the poller is gone, nothing returns to the queue.
    client.delete_event_source_mapping(UUID=mapping_uuid)
    wait_until(lambda: is_gone(client, mapping_uuid), 30, what="the mapping to be deleted")
    assert queue_depth(rabbit_queue) == 0


# --- NATS JetStream -------------------------------------------------------------------------


async def _jetstream(action: Callable[[Any], Any]) -> Any:
    connection = await nats.connect(NATS_URL)
    try:
        return await action(connection.jetstream())
    finally:
        await connection.close()


def jetstream(action: Callable[[Any], Any]) -> Any:
    """Run one async JetStream action on a fresh connection."""
    return asyncio.run(_jetstream(action))


@pytest.fixture
def nats_stream() -> Iterator[str]:
    require_nats()
    name = unique("FAAS_IT").replace("-", "_")
    jetstream(lambda js: js.add_stream(name=name, subjects=[f"{name.lower()}.>"]))
    yield name
    jetstream(lambda js: js.delete_stream(name))


def publish_nats(stream: str, *order_ids: str, failing: str = "") -> None:
    async def send(js: Any) -> None:
        for order_id in order_ids:
            body = json.dumps({"id": order_id, "fail": order_id == failing}).encode()
            await js.publish(f"{stream.lower()}.orders", body)

    jetstream(send)


def consumer_backlog(stream: str, mapping_uuid: str) -> int:
    async def backlog(js: Any) -> int:
        info = await js.consumer_info(stream, f"faas-{mapping_uuid}")
        return int(info.num_ack_pending or 0) + int(info.num_pending or 0)

    return int(jetstream(backlog))


def test_nats_messages_are_acked_and_a_failed_batch_is_redelivered(
    recorder: str, nats_stream: str, mapper: Mapper, tmp_path: Path
) -> None:
    publish_nats(nats_stream, "first", "boom", "last", failing="boom")
    address = f"{NATS_URL}?stream={nats_stream}&subject={nats_stream.lower()}.>"
    mapping_uuid = mapper(recorder, address, BatchSize=10)

    wait_until(lambda: len(deliveries(tmp_path, "boom")) == 2, 30, what="the redelivery")
    first, again = (entry["message"] for entry in deliveries(tmp_path, "boom"))
    assert (first["nats"]["deliveryCount"], again["nats"]["deliveryCount"]) == (1, 2)
    assert first["eventSource"] == "faas:nats-jetstream"
    assert first["eventSourceARN"] == address
    assert first["nats"]["stream"] == nats_stream
    assert first["nats"]["subject"] == f"{nats_stream.lower()}.orders"
    assert first["eventID"] == f"{nats_stream}:{first['nats']['streamSequence']}"
    wait_until(lambda: consumer_backlog(nats_stream, mapping_uuid) == 0, 15, what="the acks")
    assert {entry["order"]["id"] for entry in seen(tmp_path)} == {"first", "boom", "last"}


# --- secrets in addresses -------------------------------------------------------------------


def test_broker_passwords_and_tokens_stay_out_of_the_node_s_log(make_server: ServerFactory) -> None:
    require_redis()
    require_rabbitmq()
    require_nats()
    server = make_server(poller_backoff_min_s=0.1, poller_backoff_max_s=0.5)
    client = lambda_client(server)
    create_function(client, "esm-secrets", "def handler(event, context):\n    return None\n")
    hidden = [f"Secret{n}x{secrets.token_hex(6)}" for n in range(3)]
    with socket.socket() as closed_port:  # bound, never listening: connections are refused
        closed_port.bind(("127.0.0.1", 0))
        port = closed_port.getsockname()[1]
        addresses = [
            # Each fails (a refused login, a missing server), so its address gets logged.
            f"redis://app:{hidden[0]}@127.0.0.1:6379/0?stream={unique('faas-it-secret')}",
            f"amqp://guest:{hidden[1]}@127.0.0.1:5672/?queue={unique('faas-it-secret')}",
            f"nats://{hidden[2]}@127.0.0.1:{port}?stream=SECRET",  # a lone user is a token
        ]
        created = [
            client.create_event_source_mapping(FunctionName="esm-secrets", EventSourceArn=a)
            for a in addresses
        ]
        for mapping in created:
            wait_until(
                lambda u=mapping["UUID"]: client.get_event_source_mapping(UUID=u)[
                    "LastProcessingResult"
                ].startswith("PROBLEM"),
                15,
                what="each mapping to report its broker problem",
            )
        for mapping in created:
            client.delete_event_source_mapping(UUID=mapping["UUID"])
    log = server.log_path.read_text(errors="replace")
    assert "127.0.0.1:6379" in log and f"127.0.0.1:{port}" in log  # the outages were logged
    for secret in hidden:
        assert secret not in log
