"""Dead-letter targets and destinations of Event invocations: SQS (a real moto server),
another function, the store's own queue with `faas dlq`, invocation records, reserved
concurrency 0 and event age expiry."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from broker_support import MotoServer, moto_server
from faas_support import (
    ACCOUNT_ID,
    ARN_PREFIX,
    REGION,
    FaasServer,
    ServerFactory,
    create_function,
    invoke_json,
    lambda_client,
    wait_until,
)

__all__ = ["moto_server"]

pytestmark = pytest.mark.timeout(120)

# Records every attempt under WORK_DIR/<id>; fails while asked to and WORK_DIR/fixed is absent.
RECORDER = """
import json
import os
import time
from pathlib import Path

def handler(event, context):
    work = Path(os.environ["WORK_DIR"])
    with open(work / event["id"], "a") as attempts:
        attempts.write(json.dumps({"request_id": context.aws_request_id}) + "\\n")
    time.sleep(event.get("seconds", 0))
    if event.get("fail") and not (work / "fixed").exists():
        raise RuntimeError("failing on purpose: " + event["id"])
    return {"ok": True, "id": event["id"]}
"""

# Appends every event it receives to WORK_DIR/caught, one JSON document a line.
CATCHER = """
import json
import os
from pathlib import Path

def handler(event, context):
    with open(Path(os.environ["WORK_DIR"], "caught"), "a") as caught:
        caught.write(json.dumps(event) + "\\n")
    return None
"""

_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def store_queue_arn(queue: str) -> str:
    return f"arn:aws:faas:{REGION}:{ACCOUNT_ID}:dlq:{queue}"


def _environment(work: Path) -> dict[str, Any]:
    return {"Variables": {"WORK_DIR": str(work)}}


def _attempts(work: Path, event_id: str) -> list[dict[str, Any]]:
    path = work / event_id
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _caught(work: Path) -> list[Any]:
    path = work / "caught"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _store_queue(server: FaasServer, queue: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/faas/v1/dlq/{queue}", timeout=10) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def _store_messages(server: FaasServer, queue: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = _store_queue(server, queue)["Messages"]
    return messages


def _metric(server: FaasServer, metric: str, function: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    pattern = rf'{metric}\{{[^}}]*function="{re.escape(function)}"[^}}]*\}} (\S+)'
    return sum(float(value) for value in re.findall(pattern, text))


def _queue_depth(server: FaasServer) -> int:
    uri = f"file:{server.data_dir / 'registry.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])


def _send_event(client: Any, function: str, event: dict[str, Any], **members: Any) -> str:
    response = client.invoke(
        FunctionName=function, InvocationType="Event", Payload=json.dumps(event).encode(),
        **members,
    )  # fmt: skip
    assert response["StatusCode"] == 202
    request_id: str = response["ResponseMetadata"]["RequestId"]
    return request_id


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory, moto_server: MotoServer) -> FaasServer:
    return make_module_server(
        retry_delays_s="0.2,0.2",
        sqs_endpoint_url=moto_server.url,
        throttle_backoff_min_s=0.1,
        throttle_backoff_max_s=0.4,
    )


def test_poison_event_lands_in_an_sqs_dead_letter_queue(
    server: FaasServer, moto_server: MotoServer, tmp_path: Path
) -> None:
    sqs = moto_server.sqs()
    url = sqs.create_queue(QueueName="poison-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    client = lambda_client(server)
    create_function(client, "poison-sqs", RECORDER, DeadLetterConfig={"TargetArn": arn},
                    Environment=_environment(tmp_path))  # fmt: skip
    client.put_function_event_invoke_config(FunctionName="poison-sqs", MaximumRetryAttempts=1)
    event = {"id": "poison-1", "fail": True, "data": "caf\u00e9 \u2211 " + "x" * 2000}
    request_id = _send_event(client, "poison-sqs", event)

    def received() -> list[dict[str, Any]]:
        answer = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"], WaitTimeSeconds=1)
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    (message,) = wait_until(received, 30, what="the dead letter in SQS")
    assert json.loads(message["Body"]) == event  # the payload, intact
    attributes = message["MessageAttributes"]
    assert attributes["RequestID"] == {"StringValue": request_id, "DataType": "String"}
    assert attributes["ErrorCode"] == {"StringValue": "200", "DataType": "Number"}
    assert attributes["ErrorMessage"] == {
        "StringValue": "failing on purpose: poison-1", "DataType": "String",
    }  # fmt: skip
    wait_until(lambda: _queue_depth(server) == 0, 10, what="the event to leave the queue")
    attempts = _attempts(tmp_path, "poison-1")
    assert len(attempts) == 2, attempts  # the first attempt and MaximumRetryAttempts=1
    assert {attempt["request_id"] for attempt in attempts} == {request_id}
    assert _metric(server, "faas_async_events_dropped_total", "poison-sqs") == 1
    assert _metric(server, "faas_dead_letter_errors_total", "poison-sqs") == 0


def test_poison_event_lands_in_another_function(server: FaasServer, tmp_path: Path) -> None:
    client = lambda_client(server)
    create_function(client, "poison-catcher", CATCHER, Environment=_environment(tmp_path))
    create_function(client, "poison-fn", RECORDER, Environment=_environment(tmp_path),
                    DeadLetterConfig={"TargetArn": ARN_PREFIX + "poison-catcher"})  # fmt: skip
    client.put_function_event_invoke_config(FunctionName="poison-fn", MaximumRetryAttempts=0)
    event = {"id": "poison-2", "fail": True, "nested": {"list": [1, 2, 3]}}
    _send_event(client, "poison-fn", event)
    (caught,) = wait_until(lambda: _caught(tmp_path), 30, what="the catcher to get the event")
    assert caught == event  # a dead letter to a function is the original event
    assert len(_attempts(tmp_path, "poison-2")) == 1  # MaximumRetryAttempts=0: no retry


def _faas_cli(server: FaasServer, *args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "-m", "faas", "dlq", *args, "--endpoint", server.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_store_dead_letter_queue_list_and_redrive(server: FaasServer, tmp_path: Path) -> None:
    client = lambda_client(server)
    create_function(client, "poison-store", RECORDER, Environment=_environment(tmp_path),
                    DeadLetterConfig={"TargetArn": store_queue_arn("poison-store")})  # fmt: skip
    events = [{"id": f"stored-{n}", "fail": True, "n": n} for n in range(2)]
    request_ids = [_send_event(client, "poison-store", event) for event in events]
    wait_until(lambda: len(_store_messages(server, "poison-store")) == 2, 30,
               what="both events in the store queue")  # fmt: skip
    for event in events:  # the default MaximumRetryAttempts: 2 retries
        assert len(_attempts(tmp_path, event["id"])) == 3

    listed = json.loads(_faas_cli(server, "list", "poison-store", "--json"))
    assert listed["QueueArn"] == store_queue_arn("poison-store")
    assert listed["ApproximateNumberOfMessages"] == 2
    by_request = {m["Attributes"]["RequestID"]: m for m in listed["Messages"]}
    assert set(by_request) == set(request_ids)
    for request_id, event in zip(request_ids, events, strict=True):
        message = by_request[request_id]
        assert json.loads(message["Body"]) == event
        assert message["Attributes"]["ErrorCode"] == "200"
        assert message["Attributes"]["ErrorMessage"] == f"failing on purpose: {event['id']}"
    human = _faas_cli(server, "list", "poison-store")
    assert "2 message(s)" in human and request_ids[0] in human

    (tmp_path / "fixed").touch()  # the bug is fixed: a redriven event now succeeds
    assert "redrove 2 message(s)" in _faas_cli(server, "redrive", "poison-store")
    for event in events:
        wait_until(lambda event=event: len(_attempts(tmp_path, event["id"])) == 4, 30,
                   what="the redriven event to run")  # fmt: skip
    assert _store_messages(server, "poison-store") == []
    wait_until(lambda: _queue_depth(server) == 0, 10, what="the redriven events to finish")
    assert _store_messages(server, "poison-store") == []  # they succeeded this time


def _run_dlq_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faas", "dlq", *args],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_dlq_edge_cases(server: FaasServer, moto_server: MotoServer) -> None:
    client = lambda_client(server)
    create_function(client, "empty-dlq", RECORDER)
    assert "redrove 0 message(s)" in _faas_cli(server, "redrive", "empty-dlq")
    # int() refuses the digit "²" that str.isdigit() accepts: once a 500.
    for max_items in ("0", "1001", "x", "%C2%B2", "%D9%A3"):
        url = f"{server.url}/faas/v1/dlq/empty-dlq?MaxItems={max_items}"
        with pytest.raises(urllib.error.HTTPError) as excinfo:
            urllib.request.urlopen(url, timeout=10)
        assert excinfo.value.code == 400, max_items
        assert excinfo.value.headers["x-amzn-ErrorType"] == "ValidationException"

    # A node that is down, an endpoint that is no URL, a server that is not a faas node
    # (moto answers XML): one line on stderr and status 1, never a traceback.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    cases = [
        (("redrive", "x", "--endpoint", f"http://127.0.0.1:{closed_port}"), "cannot reach"),
        (("list", "x", "--endpoint-url", "not-a-url"), "is not a URL"),
        (("list", "x", "--endpoint", moto_server.url), "answered HTTP 404"),
    ]
    for args, message in cases:
        completed = _run_dlq_cli(*args)
        assert completed.returncode == 1, completed
        assert completed.stderr.startswith("faas: ") and message in completed.stderr, completed
        assert "Traceback" not in completed.stderr


def _check_record(
    record: dict[str, Any], request_id: str, event: dict[str, Any], condition: str, count: int
) -> None:
    assert set(record) == {"version", "timestamp", "requestContext", "requestPayload",
                           "responseContext", "responsePayload"}  # fmt: skip
    assert record["version"] == "1.0"
    assert _TIMESTAMP.fullmatch(record["timestamp"]), record["timestamp"]
    assert record["requestContext"] == {
        "requestId": request_id,
        "functionArn": ARN_PREFIX + "records:$LATEST",
        "condition": condition,
        "approximateInvokeCount": count,
    }
    assert record["requestPayload"] == event


def test_on_success_and_on_failure_records(server: FaasServer, tmp_path: Path) -> None:
    client = lambda_client(server)
    create_function(client, "records-catcher", CATCHER, Environment=_environment(tmp_path))
    create_function(client, "records", RECORDER, Environment=_environment(tmp_path),
                    DeadLetterConfig={"TargetArn": store_queue_arn("records-dlq")})  # fmt: skip
    client.put_function_event_invoke_config(
        FunctionName="records",
        MaximumRetryAttempts=1,
        DestinationConfig={
            "OnSuccess": {"Destination": store_queue_arn("records-ok")},
            "OnFailure": {"Destination": ARN_PREFIX + "records-catcher"},
        },
    )
    good = {"id": "good", "value": 42}
    good_id = _send_event(client, "records", good)
    bad = {"id": "bad", "fail": True}
    bad_id = _send_event(client, "records", bad)

    (ok,) = wait_until(lambda: _store_messages(server, "records-ok"), 30, what="OnSuccess")
    success = json.loads(ok["Body"])
    _check_record(success, good_id, good, "Success", 1)
    assert success["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert success["responsePayload"] == {"ok": True, "id": "good"}

    # The failure reaches both the on-failure destination and the dead-letter queue.
    (failure,) = wait_until(lambda: _caught(tmp_path), 30, what="the OnFailure record")
    _check_record(failure, bad_id, bad, "RetriesExhausted", 2)
    assert failure["responseContext"] == {
        "statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled",
    }  # fmt: skip
    assert failure["responsePayload"]["errorMessage"] == "failing on purpose: bad"
    assert failure["responsePayload"]["errorType"] == "RuntimeError"
    (dead,) = wait_until(lambda: _store_messages(server, "records-dlq"), 10, what="the DLQ")
    assert json.loads(dead["Body"]) == bad
    assert dead["Attributes"]["RequestID"] == bad_id
    assert len(_store_messages(server, "records-ok")) == 1  # no success record for the failure


def test_reserved_concurrency_zero_goes_straight_to_the_dead_letter_queue(
    server: FaasServer, tmp_path: Path
) -> None:
    client = lambda_client(server)
    create_function(client, "parked", RECORDER, Environment=_environment(tmp_path),
                    DeadLetterConfig={"TargetArn": store_queue_arn("parked-dlq")})  # fmt: skip
    client.put_function_event_invoke_config(
        FunctionName="parked",
        DestinationConfig={"OnFailure": {"Destination": store_queue_arn("parked-failures")}},
    )
    client.put_function_concurrency(FunctionName="parked", ReservedConcurrentExecutions=0)
    event = {"id": "parked-1"}
    request_id = _send_event(client, "parked", event)
    (dead,) = wait_until(lambda: _store_messages(server, "parked-dlq"), 30, what="the DLQ")
    assert json.loads(dead["Body"]) == event
    assert dead["Attributes"]["ErrorCode"] == "429"
    assert "ReservedFunctionConcurrentInvocationLimitExceeded" in dead["Attributes"]["ErrorMessage"]
    (failure,) = wait_until(lambda: _store_messages(server, "parked-failures"), 10,
                            what="the OnFailure record")  # fmt: skip
    record = json.loads(failure["Body"])
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["responseContext"] == {"statusCode": 429}
    assert "responsePayload" not in record
    assert _attempts(tmp_path, "parked-1") == []  # never ran, never retried


def test_throttled_event_waits_in_the_queue_without_using_an_attempt(
    server: FaasServer, tmp_path: Path
) -> None:
    client = lambda_client(server)
    create_function(client, "narrow", RECORDER, Timeout=30, Environment=_environment(tmp_path))
    client.put_function_concurrency(FunctionName="narrow", ReservedConcurrentExecutions=1)
    client.put_function_event_invoke_config(
        FunctionName="narrow",
        MaximumRetryAttempts=0,
        DestinationConfig={"OnSuccess": {"Destination": store_queue_arn("narrow-ok")}},
    )
    holder = threading.Thread(
        target=invoke_json, args=(lambda_client(server), "narrow", {"id": "hold", "seconds": 2}),
        daemon=True,
    )  # fmt: skip
    holder.start()
    wait_until(lambda: _attempts(tmp_path, "hold"), 15, what="the only slot to be taken")
    _send_event(client, "narrow", {"id": "waiting"})
    (ok,) = wait_until(lambda: _store_messages(server, "narrow-ok"), 30, what="the event to run")
    holder.join(30)
    record = json.loads(ok["Body"])
    assert record["requestContext"]["condition"] == "Success"
    assert record["requestContext"]["approximateInvokeCount"] == 1
    assert len(_attempts(tmp_path, "waiting")) == 1
    assert _metric(server, "faas_throttles_total", "narrow") >= 1


def test_failed_deliveries_are_counted(server: FaasServer, tmp_path: Path) -> None:
    client = lambda_client(server)
    missing_queue = f"arn:aws:sqs:{REGION}:123456789012:no-such-queue"
    create_function(client, "undeliverable", RECORDER, Environment=_environment(tmp_path),
                    DeadLetterConfig={"TargetArn": missing_queue})  # fmt: skip
    client.put_function_event_invoke_config(
        FunctionName="undeliverable",
        MaximumRetryAttempts=0,
        DestinationConfig={"OnFailure": {"Destination": missing_queue}},
    )
    _send_event(client, "undeliverable", {"id": "lost-target", "fail": True})
    wait_until(
        lambda: (
            _metric(server, "faas_dead_letter_errors_total", "undeliverable") == 1
            and _metric(server, "faas_destination_delivery_failures_total", "undeliverable") == 1
        ),
        30,
        what="both failed deliveries to be counted",
    )
    wait_until(lambda: _queue_depth(server) == 0, 10, what="the event to leave the queue")


def test_event_expires_while_throttled(make_server: ServerFactory, tmp_path: Path) -> None:
    # The node caps every event's age at 3 s (MaximumEventAgeInSeconds cannot go below 60).
    server = make_server(max_event_age_s=3, throttle_backoff_min_s=0.2,
                         throttle_backoff_max_s=0.5)  # fmt: skip
    client = lambda_client(server)
    create_function(client, "expiring", RECORDER, Timeout=30, Environment=_environment(tmp_path),
                    DeadLetterConfig={"TargetArn": store_queue_arn("expiring-dlq")})  # fmt: skip
    client.put_function_concurrency(FunctionName="expiring", ReservedConcurrentExecutions=1)
    client.put_function_event_invoke_config(
        FunctionName="expiring",
        DestinationConfig={"OnFailure": {"Destination": store_queue_arn("expiring-failures")}},
    )
    holder = threading.Thread(
        target=invoke_json,
        args=(lambda_client(server), "expiring", {"id": "hold", "seconds": 6}),
        daemon=True,
    )
    holder.start()
    wait_until(lambda: _attempts(tmp_path, "hold"), 15, what="the only slot to be taken")
    event = {"id": "too-late"}
    request_id = _send_event(client, "expiring", event)
    (failure,) = wait_until(lambda: _store_messages(server, "expiring-failures"), 15,
                            what="the EventAgeExceeded record")  # fmt: skip
    record = json.loads(failure["Body"])
    assert record["requestContext"]["requestId"] == request_id
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 0
    assert record["requestPayload"] == event
    (dead,) = _store_messages(server, "expiring-dlq")
    assert json.loads(dead["Body"]) == event
    assert dead["Attributes"]["ErrorCode"] == "429"
    assert _attempts(tmp_path, "too-late") == []
    assert holder.is_alive(), "the slot was free before the event expired"
    holder.join(30)


def test_retry_beyond_the_maximum_event_age_is_not_made(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # The second retry would wait 100 s: more than MaximumEventAgeInSeconds=60 allows.
    server = make_server(retry_delays_s="0.2,100")
    client = lambda_client(server)
    create_function(client, "aging", RECORDER, Environment=_environment(tmp_path))
    client.put_function_event_invoke_config(
        FunctionName="aging",
        MaximumEventAgeInSeconds=60,
        DestinationConfig={"OnFailure": {"Destination": store_queue_arn("aging-failures")}},
    )
    _send_event(client, "aging", {"id": "aged", "fail": True})
    (failure,) = wait_until(lambda: _store_messages(server, "aging-failures"), 30,
                            what="the EventAgeExceeded record")  # fmt: skip
    record = json.loads(failure["Body"])
    assert record["requestContext"]["condition"] == "EventAgeExceeded"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["responsePayload"]["errorMessage"] == "failing on purpose: aged"
    assert len(_attempts(tmp_path, "aged")) == 2
