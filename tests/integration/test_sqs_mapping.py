"""SQS event source mappings end to end: a real server polls a real (moto) SQS endpoint.

Each test sends messages with boto3 to the moto server, the node's poller hands
them to a real Python handler, and the test reads back what the handler saw (a
JSON-lines file it appends to) and what is left in the queue.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from broker_support import MotoServer, moto_server
from faas_support import FaasServer, ServerFactory, create_function, lambda_client, wait_until

__all__ = ["moto_server"]

pytestmark = pytest.mark.timeout(120)

# Records every record it receives; message bodies are JSON telling it how to fail, and
# only on a message's first receive, so every test converges.
RECORDER = """
import json
import os
import time

def handler(event, context):
    seen = os.path.join(os.environ["WORK_DIR"], "seen.jsonl")
    failed = []
    raise_error = False
    for record in event["Records"]:
        with open(seen, "a") as out:
            out.write(json.dumps({"event_keys": sorted(event), "record": record}) + "\\n")
        order = json.loads(record["body"])
        time.sleep(order.get("sleep", 0))
        if record["attributes"]["ApproximateReceiveCount"] == "1":
            if order.get("fail") == "item":
                failed.append({"itemIdentifier": record["messageId"]})
            elif order.get("fail") == "batch":
                raise_error = True
    if raise_error:
        raise RuntimeError("failing the whole batch on purpose")
    return {"batchItemFailures": failed}
"""

RECORD_KEYS = {
    "messageId",
    "receiptHandle",
    "body",
    "attributes",
    "messageAttributes",
    "md5OfBody",
    "eventSource",
    "eventSourceARN",
    "awsRegion",
}


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory, moto_server: MotoServer) -> FaasServer:
    return make_module_server(
        sqs_endpoint_url=moto_server.url, poller_backoff_min_s=0.1, poller_backoff_max_s=1
    )


@pytest.fixture
def queue(
    server: FaasServer, moto_server: MotoServer, request: pytest.FixtureRequest
) -> Iterator[tuple[str, str]]:
    """A fresh queue with a 2 s visibility timeout: (url, ARN); its mappings on the shared
    server are deleted before it is."""
    sqs = moto_server.sqs()
    name = re.sub(r"[^a-zA-Z0-9_-]", "-", request.node.name)[:70]
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "2"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    yield url, arn["QueueArn"]
    _delete_mappings(lambda_client(server), arn["QueueArn"])
    sqs.delete_queue(QueueUrl=url)


def _delete_mappings(client: Any, queue_arn: str) -> None:
    def all_deleting() -> bool:
        mappings = client.list_event_source_mappings(EventSourceArn=queue_arn)
        for mapping in mappings["EventSourceMappings"]:
            if mapping["State"] in ("Enabled", "Disabled"):
                client.delete_event_source_mapping(UUID=mapping["UUID"])
        return all(m["State"] == "Deleting" for m in mappings["EventSourceMappings"])

    wait_until(all_deleting, 15, interval_s=0.1, what="the test's mappings to be deleting")


def _recorder(client: Any, name: str, work: Path) -> None:
    create_function(client, name, RECORDER, Timeout=30,
                    Environment={"Variables": {"WORK_DIR": str(work)}})  # fmt: skip


def _seen(work: Path) -> list[dict[str, Any]]:
    path = work / "seen.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _deliveries(work: Path, order_id: str) -> list[dict[str, Any]]:
    return [
        seen["record"]
        for seen in _seen(work)
        if json.loads(seen["record"]["body"])["id"] == order_id
    ]


def _send(moto: MotoServer, url: str, order_id: str, **order: Any) -> str:
    response = moto.sqs().send_message(
        QueueUrl=url, MessageBody=json.dumps({"id": order_id, **order})
    )
    return str(response["MessageId"])


def _queue_depth(moto: MotoServer, url: str) -> int:
    """Messages still in the queue, visible or in flight."""
    attributes = moto.sqs().get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def _mapping(client: Any, function: str, queue_arn: str, **members: Any) -> str:
    response = client.create_event_source_mapping(
        FunctionName=function, EventSourceArn=queue_arn, **members
    )
    assert response["State"] == "Creating"
    mapping_uuid = str(response["UUID"])
    _wait_state(client, mapping_uuid, "Enabled")
    return mapping_uuid


def _wait_state(client: Any, mapping_uuid: str, state: str, timeout_s: float = 15) -> None:
    wait_until(
        lambda: client.get_event_source_mapping(UUID=mapping_uuid)["State"] == state,
        timeout_s,
        what=f"mapping {mapping_uuid} to be {state}",
    )


def _metrics(server: FaasServer) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        return str(response.read().decode())


def test_records_arrive_in_lambdas_shape_and_are_deleted(
    server: FaasServer, moto_server: MotoServer, queue: tuple[str, str], tmp_path: Path
) -> None:
    client = lambda_client(server)
    url, arn = queue
    _recorder(client, "sqs-shape", tmp_path)
    mapping_uuid = _mapping(client, "sqs-shape", arn, BatchSize=10)
    sent_at_ms = time.time() * 1000
    body = json.dumps({"id": "shaped"})
    message_id = moto_server.sqs().send_message(
        QueueUrl=url,
        MessageBody=body,
        MessageAttributes={"color": {"DataType": "String", "StringValue": "blue"}},
    )["MessageId"]
    _send(moto_server, url, "plain")

    wait_until(lambda: len(_seen(tmp_path)) >= 2, 30, what="both records to be delivered")
    seen = _seen(tmp_path)
    assert {entry["event_keys"] == ["Records"] for entry in seen} == {True}
    record = _deliveries(tmp_path, "shaped")[0]
    assert set(record) == RECORD_KEYS
    assert record["messageId"] == message_id
    assert record["body"] == body
    assert record["md5OfBody"] == hashlib.md5(body.encode()).hexdigest()
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == arn
    assert record["awsRegion"] == "us-east-1"
    assert record["receiptHandle"]
    attributes = record["attributes"]
    assert {"ApproximateReceiveCount", "SentTimestamp", "SenderId",
            "ApproximateFirstReceiveTimestamp"} <= set(attributes)  # fmt: skip
    assert attributes["ApproximateReceiveCount"] == "1"
    assert abs(int(attributes["SentTimestamp"]) - sent_at_ms) < 60_000
    assert record["messageAttributes"] == {
        "color": {
            "stringValue": "blue",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
    }
    # Success deletes the messages: nothing comes back after the visibility timeout.
    wait_until(lambda: _queue_depth(moto_server, url) == 0, 15, what="the messages to be deleted")
    assert len(_deliveries(tmp_path, "shaped")) == 1

    # IteratorAge and the record/batch counters are exported per mapping.
    text = _metrics(server)
    labels = f'function="sqs-shape",mapping="{mapping_uuid}"'
    age = re.search(rf"faas_event_source_iterator_age_seconds\{{{labels}\}} (\S+)", text)
    assert age is not None, text
    assert 0 <= float(age.group(1)) < 60
    records = re.search(rf"faas_event_source_records_total\{{{labels}\}} (\S+)", text)
    assert records is not None and float(records.group(1)) == 2
    result = client.get_event_source_mapping(UUID=mapping_uuid)["LastProcessingResult"]
    assert result == "OK"


def test_partial_batch_failure_returns_only_the_failed_message(
    server: FaasServer, moto_server: MotoServer, queue: tuple[str, str], tmp_path: Path
) -> None:
    client = lambda_client(server)
    url, arn = queue
    _recorder(client, "sqs-partial", tmp_path)
    # Sent before the mapping exists, so the first receive can take all three at once.
    for order_id, fail in (("first", None), ("flaky", "item"), ("last", None)):
        _send(moto_server, url, order_id, fail=fail)
    _mapping(client, "sqs-partial", arn, BatchSize=10,
             FunctionResponseTypes=["ReportBatchItemFailures"])  # fmt: skip

    wait_until(
        lambda: len(_deliveries(tmp_path, "flaky")) == 2, 30,
        what="the failed message to come back after its visibility timeout",
    )  # fmt: skip
    wait_until(lambda: _queue_depth(moto_server, url) == 0, 15, what="the queue to drain")
    flaky = _deliveries(tmp_path, "flaky")
    assert [record["attributes"]["ApproximateReceiveCount"] for record in flaky] == ["1", "2"]
    # The messages that succeeded were deleted with the batch and never redelivered.
    assert len(_deliveries(tmp_path, "first")) == 1
    assert len(_deliveries(tmp_path, "last")) == 1


def test_function_error_redelivers_the_whole_batch(
    server: FaasServer, moto_server: MotoServer, queue: tuple[str, str], tmp_path: Path
) -> None:
    client = lambda_client(server)
    url, arn = queue
    _recorder(client, "sqs-batch-error", tmp_path)
    _send(moto_server, url, "boom", fail="batch")
    _send(moto_server, url, "bystander")
    _mapping(client, "sqs-batch-error", arn, BatchSize=10)

    wait_until(
        lambda: len(_deliveries(tmp_path, "boom")) == 2, 30,
        what="the failed batch to come back after its visibility timeout",
    )  # fmt: skip
    wait_until(lambda: _queue_depth(moto_server, url) == 0, 15, what="the queue to drain")
    # Both were sent before the mapping existed, so they shared the first batch: the
    # message that did nothing wrong came back with the one that failed it.
    for order_id in ("boom", "bystander"):
        counts = [
            r["attributes"]["ApproximateReceiveCount"] for r in _deliveries(tmp_path, order_id)
        ]
        assert counts == ["1", "2"], (order_id, counts)
    metrics = _metrics(server)
    assert re.search(
        r'faas_event_source_batches_total\{function="sqs-batch-error",[^}]*outcome="failed"\} '
        r"[1-9]",
        metrics,
    ), metrics


def test_a_batch_slower_than_the_visibility_timeout_is_not_handed_out_twice(
    server: FaasServer, moto_server: MotoServer, queue: tuple[str, str], tmp_path: Path
) -> None:
    client = lambda_client(server)
    url, arn = queue  # a 2 s visibility timeout
    _recorder(client, "sqs-slow", tmp_path)
    _mapping(client, "sqs-slow", arn, ScalingConfig={"MaximumConcurrency": 2})
    _send(moto_server, url, "slow", sleep=3.5)

    # The poller keeps the message hidden while the handler runs; without that, the
    # second batch loop received it again after 2 s and invoked the function twice.
    wait_until(lambda: _queue_depth(moto_server, url) == 0, 20, what="the slow message's delete")
    assert len(_deliveries(tmp_path, "slow")) == 1


def test_disabled_mapping_stops_polling_and_resumes_when_enabled(
    server: FaasServer, moto_server: MotoServer, queue: tuple[str, str], tmp_path: Path
) -> None:
    client = lambda_client(server)
    url, arn = queue
    _recorder(client, "sqs-toggle", tmp_path)
    mapping_uuid = _mapping(client, "sqs-toggle", arn)

    response = client.update_event_source_mapping(UUID=mapping_uuid, Enabled=False)
    assert response["State"] == "Disabling"
    _wait_state(client, mapping_uuid, "Disabled")
    _send(moto_server, url, "parked")
    # For three seconds (longer than a long-poll slice and the visibility timeout), the
    # message stays in the queue untouched.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert not _seen(tmp_path), "a disabled mapping delivered a record"
        time.sleep(0.2)
    assert _queue_depth(moto_server, url) == 1

    response = client.update_event_source_mapping(UUID=mapping_uuid, Enabled=True)
    assert response["State"] == "Enabling"
    _wait_state(client, mapping_uuid, "Enabled")
    wait_until(lambda: _deliveries(tmp_path, "parked"), 30, what="the parked message")
    wait_until(lambda: _queue_depth(moto_server, url) == 0, 15, what="the queue to drain")


def test_mapping_busy_with_a_batch_refuses_changes_until_it_settles(
    server: FaasServer, moto_server: MotoServer, queue: tuple[str, str], tmp_path: Path
) -> None:
    client = lambda_client(server)
    url, arn = queue
    _recorder(client, "sqs-busy", tmp_path)
    mapping_uuid = _mapping(client, "sqs-busy", arn)
    _send(moto_server, url, "slow", sleep=3)
    wait_until(lambda: _deliveries(tmp_path, "slow"), 30, what="the slow batch to start")

    # Disabling waits for the batch in flight; meanwhile the mapping is in use.
    assert client.update_event_source_mapping(UUID=mapping_uuid, Enabled=False)["State"] == (
        "Disabling"
    )
    with pytest.raises(client.exceptions.ResourceInUseException):
        client.update_event_source_mapping(UUID=mapping_uuid, BatchSize=5)
    with pytest.raises(client.exceptions.ResourceInUseException):
        client.delete_event_source_mapping(UUID=mapping_uuid)
    _wait_state(client, mapping_uuid, "Disabled")
    # The batch finished before the poller stopped: it was settled, not abandoned.
    wait_until(lambda: _queue_depth(moto_server, url) == 0, 10, what="the slow message's delete")
    assert client.delete_event_source_mapping(UUID=mapping_uuid)["State"] == "Deleting"


def test_unavailable_queue_is_retried_until_it_appears(
    server: FaasServer, moto_server: MotoServer, tmp_path: Path
) -> None:
    client = lambda_client(server)
    _recorder(client, "sqs-late-queue", tmp_path)
    sqs = moto_server.sqs()
    name = f"late-{int(time.time() * 1000)}"
    arn = f"arn:aws:sqs:us-east-1:123456789012:{name}"
    mapping_uuid = _mapping(client, "sqs-late-queue", arn)
    wait_until(
        lambda: (
            client.get_event_source_mapping(UUID=mapping_uuid)["LastProcessingResult"]
            == "PROBLEM: Event source unavailable"
        ),
        15,
        what="the missing queue to be reported",
    )
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    try:
        _send(moto_server, url, "late")
        wait_until(lambda: _deliveries(tmp_path, "late"), 30, what="polling to recover")
        wait_until(
            lambda: (
                client.get_event_source_mapping(UUID=mapping_uuid)["LastProcessingResult"] == "OK"
            ),
            15,
            what="the mapping to report OK again",
        )
    finally:
        client.delete_event_source_mapping(UUID=mapping_uuid)
        sqs.delete_queue(QueueUrl=url)


def test_mapping_survives_a_restart(
    make_server: ServerFactory, moto_server: MotoServer, queue: tuple[str, str], tmp_path: Path
) -> None:
    server = make_server(sqs_endpoint_url=moto_server.url, poller_backoff_min_s=0.1)
    client = lambda_client(server)
    url, arn = queue
    _recorder(client, "sqs-restart", tmp_path)
    mapping_uuid = _mapping(client, "sqs-restart", arn, BatchSize=3)
    _send(moto_server, url, "before")
    wait_until(lambda: _deliveries(tmp_path, "before"), 30, what="the first message")

    server.restart()
    client = lambda_client(server)
    restored = client.get_event_source_mapping(UUID=mapping_uuid)
    assert restored["BatchSize"] == 3
    assert restored["EventSourceArn"] == arn
    _wait_state(client, mapping_uuid, "Enabled")
    _send(moto_server, url, "after")
    wait_until(lambda: _deliveries(tmp_path, "after"), 30, what="polling to resume after restart")
    wait_until(lambda: _queue_depth(moto_server, url) == 0, 15, what="the queue to drain")
    assert len(_deliveries(tmp_path, "before")) == 1


_CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


class _MetadataStandIn(BaseHTTPRequestHandler):
    """Answers 404 to everything and records the request: a cloud metadata service stand-in."""

    hits: list[str]  # set per server, see _metadata_stand_in

    def do_GET(self) -> None:
        self._refuse()

    def do_PUT(self) -> None:
        self._refuse()

    def _refuse(self) -> None:
        self.hits.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def metadata_stand_in() -> Iterator[tuple[str, list[str]]]:
    """A local metadata service endpoint and the requests it received."""
    hits: list[str] = []
    handler = type("Recording", (_MetadataStandIn,), {"hits": hits})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()
    thread.join(10)


_FAILS = """
def handler(event, context):
    raise RuntimeError("to the dead-letter queue")
"""


def test_a_local_endpoint_never_asks_the_cloud_metadata_service(
    make_server: ServerFactory,
    moto_server: MotoServer,
    metadata_stand_in: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # No credentials anywhere, and the metadata service pointed at a local stand-in: each
    # SQS source start used to walk boto3's whole chain and ask it (a network round trip,
    # or a timeout on a machine without one), then signed with the dummy key anyway.
    endpoint, hits = metadata_stand_in
    for name in _CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", endpoint)
    server = make_server(sqs_endpoint_url=moto_server.url)
    client = lambda_client(server)
    sqs = moto_server.sqs()
    url = sqs.create_queue(QueueName="sqs-no-metadata")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    _recorder(client, "sqs-no-metadata", tmp_path)
    try:
        _mapping(client, "sqs-no-metadata", arn["QueueArn"])
        _send(moto_server, url, "signed")
        wait_until(lambda: _deliveries(tmp_path, "signed"), 30, what="the message")
        # Dead-letter delivery to SQS builds its client the same way.
        dlq_url = sqs.create_queue(QueueName="sqs-no-metadata-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
        target = dlq_arn["Attributes"]["QueueArn"]
        create_function(
            client, "sqs-no-metadata-fails", _FAILS, DeadLetterConfig={"TargetArn": target}
        )
        client.put_function_event_invoke_config(
            FunctionName="sqs-no-metadata-fails", MaximumRetryAttempts=0
        )
        client.invoke(FunctionName="sqs-no-metadata-fails", InvocationType="Event", Payload=b"{}")
        wait_until(
            lambda: sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1).get("Messages"),
            30, what="the dead letter",
        )  # fmt: skip
        assert hits == []
    finally:
        sqs.delete_queue(QueueUrl=url)
