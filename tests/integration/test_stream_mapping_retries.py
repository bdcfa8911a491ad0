"""A stream mapping's failed batch: bisected in place, the culprit given up on and
reported to the on-failure destination, everything acked (real Redis, real moto SQS)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from broker_support import REDIS_URL, MotoServer, moto_server, require_redis
from faas_support import ARN_PREFIX, ServerFactory, create_function, lambda_client, wait_until

__all__ = ["moto_server"]

pytestmark = pytest.mark.timeout(120)

# Notes the ids of every batch it gets; fails any batch holding a poisoned record.
STREAM_HANDLER = """
import json
import os

def handler(event, context):
    ids = [record["redis"]["fields"]["id"] for record in event["Records"]]
    with open(os.path.join(os.environ["WORK_DIR"], "batches.jsonl"), "a") as out:
        out.write(json.dumps(ids) + "\\n")
    if any(record["redis"]["fields"].get("poison") for record in event["Records"]):
        raise RuntimeError("poisoned batch")
"""


def _batches(work: Path) -> list[list[str]]:
    path = work / "batches.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _receive_one(moto: MotoServer, url: str) -> dict[str, Any] | None:
    messages = moto.sqs().receive_message(QueueUrl=url, WaitTimeSeconds=1).get("Messages", [])
    return json.loads(messages[0]["Body"]) if messages else None


def test_poisoned_record_is_isolated_and_reported(
    make_server: ServerFactory, moto_server: MotoServer, tmp_path: Path
) -> None:
    require_redis()
    stream = f"esm-stream-{uuid.uuid4().hex[:8]}"
    broker = redis.Redis.from_url(REDIS_URL)
    sqs = moto_server.sqs()
    failures_url = sqs.create_queue(QueueName=f"{stream}-failures")["QueueUrl"]
    failures_arn = sqs.get_queue_attributes(QueueUrl=failures_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    server = make_server(sqs_endpoint_url=moto_server.url, poller_backoff_min_s=0.05)
    try:
        ids = [
            broker.xadd(stream, {"id": "a"}).decode(),
            broker.xadd(stream, {"id": "b", "poison": "yes"}).decode(),
            broker.xadd(stream, {"id": "c"}).decode(),
        ]
        client = lambda_client(server)
        create_function(client, "stream-bisect", STREAM_HANDLER,
                        Environment={"Variables": {"WORK_DIR": str(tmp_path)}})  # fmt: skip
        address = f"{REDIS_URL}?stream={stream}"
        mapping_uuid = client.create_event_source_mapping(
            FunctionName="stream-bisect", EventSourceArn=address, StartingPosition="TRIM_HORIZON",
            BatchSize=10, MaximumRetryAttempts=0, BisectBatchOnFunctionError=True,
            DestinationConfig={"OnFailure": {"Destination": failures_arn}},
        )["UUID"]  # fmt: skip

        record = wait_until(
            lambda: _receive_one(moto_server, failures_url), 30, what="the on-failure record"
        )
        # The batch was split until the poisoned record stood alone; the rest succeeded.
        wait_until(lambda: len(_batches(tmp_path)) == 5, 15, what="the last half to run")
        assert _batches(tmp_path) == [["a", "b", "c"], ["a"], ["b", "c"], ["b"], ["c"]]
        assert record["requestContext"] == {
            "requestId": record["requestContext"]["requestId"],
            "functionArn": ARN_PREFIX + "stream-bisect",
            "condition": "RetryAttemptsExhausted",
            "approximateInvokeCount": 3,
        }
        assert record["responseContext"] == {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        assert record["version"] == "1.0"
        info = record["StreamBatchInfo"]
        assert (info["startSequenceNumber"], info["endSequenceNumber"]) == (ids[1], ids[1])
        assert info["batchSize"] == 1
        assert info["streamArn"] == address
        assert info["approximateArrivalOfFirstRecord"].endswith("Z")

        # Every record, the given-up one included, is acknowledged in the consumer group.
        group = f"faas-{mapping_uuid}"
        wait_until(lambda: broker.xpending(stream, group)["pending"] == 0, 15,
                   what="every record to be acked")  # fmt: skip
        mapping = client.get_event_source_mapping(UUID=mapping_uuid)
        assert mapping["LastProcessingResult"] == "OK"
    finally:
        server.stop()  # first: a running consumer group would recreate the stream
        broker.delete(stream)
        broker.close()
        sqs.delete_queue(QueueUrl=failures_url)
