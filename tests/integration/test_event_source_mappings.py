"""The event source mapping API through boto3: shapes, states, listing and bad input."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest
from botocore.exceptions import ClientError
from broker_support import MotoServer, moto_server
from faas_support import (
    ACCOUNT_ID,
    ARN_PREFIX,
    REGION,
    FaasServer,
    ServerFactory,
    create_function,
    lambda_client,
    wait_until,
)

__all__ = ["moto_server"]

pytestmark = pytest.mark.timeout(120)

HANDLER = "def handler(event, context):\n    return None\n"
QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:esm-api-queue"
MAPPING_ARN_PREFIX = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:event-source-mapping:"
INVALID = ("InvalidParameterValueException", 400)
SHAPE = ("ValidationException", 400)
NOT_FOUND = ("ResourceNotFoundException", 404)
CONFLICT = ("ResourceConflictException", 409)
REDIS_STREAM = "redis://127.0.0.1:6379/0?stream=esm-api-bad"


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory, moto_server: MotoServer) -> FaasServer:
    moto_server.sqs().create_queue(QueueName="esm-api-queue")
    return make_module_server(sqs_endpoint_url=moto_server.url)


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    client = lambda_client(server)
    create_function(client, "esm-target", HANDLER)
    client.publish_version(FunctionName="esm-target")
    client.create_alias(FunctionName="esm-target", Name="live", FunctionVersion="1")
    return client


def _error(call: Any, **members: Any) -> tuple[str, int]:
    with pytest.raises(ClientError) as excinfo:
        call(**members)
    error = excinfo.value.response
    return error["Error"]["Code"], error["ResponseMetadata"]["HTTPStatusCode"]


def _wait_state(client: Any, mapping_uuid: str, state: str) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        mapping: dict[str, Any] = client.get_event_source_mapping(UUID=mapping_uuid)
        return mapping if mapping["State"] == state else None

    found: dict[str, Any] = wait_until(current, 15, what=f"mapping to be {state}")
    return found


def _wait_gone(client: Any, mapping_uuid: str) -> None:
    def gone() -> bool:
        try:
            client.get_event_source_mapping(UUID=mapping_uuid)
        except client.exceptions.ResourceNotFoundException:
            return True
        return False

    wait_until(gone, 15, what="the mapping to be deleted")


def test_create_get_list_update_delete(client: Any) -> None:
    created = client.create_event_source_mapping(
        FunctionName="esm-target:live", EventSourceArn=QUEUE_ARN, BatchSize=5,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        ScalingConfig={"MaximumConcurrency": 3},
    )  # fmt: skip
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert created["State"] == "Creating"
    mapping_uuid = created["UUID"]
    assert created["EventSourceMappingArn"] == MAPPING_ARN_PREFIX + mapping_uuid
    assert created["FunctionArn"] == ARN_PREFIX + "esm-target:live"
    assert created["EventSourceArn"] == QUEUE_ARN
    assert created["BatchSize"] == 5
    assert created["MaximumBatchingWindowInSeconds"] == 0
    assert created["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert created["ScalingConfig"] == {"MaximumConcurrency": 3}
    assert created["StateTransitionReason"] == "USER_INITIATED"
    assert created["LastProcessingResult"] == "No records processed"
    # An SQS mapping carries none of the stream-only members.
    for member in ("StartingPosition", "MaximumRetryAttempts", "DestinationConfig",
                   "BisectBatchOnFunctionError", "MaximumRecordAgeInSeconds"):  # fmt: skip
        assert member not in created

    enabled = _wait_state(client, mapping_uuid, "Enabled")
    assert enabled["LastModified"] == created["LastModified"]  # botocore parsed the epoch number

    by_function = client.list_event_source_mappings(FunctionName="esm-target")
    assert [m["UUID"] for m in by_function["EventSourceMappings"]] == [mapping_uuid]
    by_alias = client.list_event_source_mappings(FunctionName=ARN_PREFIX + "esm-target:live")
    assert [m["UUID"] for m in by_alias["EventSourceMappings"]] == [mapping_uuid]
    assert client.list_event_source_mappings(FunctionName="esm-target:1")[
        "EventSourceMappings"
    ] == []  # fmt: skip
    by_source = client.list_event_source_mappings(EventSourceArn=QUEUE_ARN)
    assert [m["UUID"] for m in by_source["EventSourceMappings"]] == [mapping_uuid]

    updated = client.update_event_source_mapping(
        UUID=mapping_uuid, BatchSize=100, MaximumBatchingWindowInSeconds=2, ScalingConfig={},
        FunctionResponseTypes=[],
    )  # fmt: skip
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert updated["State"] == "Updating"
    assert (updated["BatchSize"], updated["MaximumBatchingWindowInSeconds"]) == (100, 2)
    assert "ScalingConfig" not in updated
    assert updated["FunctionResponseTypes"] == []
    assert updated["LastModified"] >= created["LastModified"]
    _wait_state(client, mapping_uuid, "Enabled")

    disabling = client.update_event_source_mapping(UUID=mapping_uuid, Enabled=False)
    assert disabling["State"] == "Disabling"
    _wait_state(client, mapping_uuid, "Disabled")

    # The same source may feed another function, but not the same one twice.
    second = client.create_event_source_mapping(
        FunctionName="esm-target", EventSourceArn=QUEUE_ARN, Enabled=False
    )
    assert second["State"] == "Creating"
    _wait_state(client, second["UUID"], "Disabled")
    assert _error(client.create_event_source_mapping, FunctionName="esm-target",
                  EventSourceArn=QUEUE_ARN) == CONFLICT  # fmt: skip
    assert _error(client.update_event_source_mapping, UUID=mapping_uuid,
                  FunctionName="esm-target") == CONFLICT  # fmt: skip

    listed = client.list_event_source_mappings(FunctionName="esm-target", MaxItems=1)
    assert len(listed["EventSourceMappings"]) == 1
    rest = client.list_event_source_mappings(
        FunctionName="esm-target", MaxItems=1, Marker=listed["NextMarker"]
    )
    assert len(rest["EventSourceMappings"]) == 1
    assert "NextMarker" not in rest
    assert {listed["EventSourceMappings"][0]["UUID"], rest["EventSourceMappings"][0]["UUID"]} == {
        mapping_uuid, second["UUID"],
    }  # fmt: skip

    for doomed in (mapping_uuid, second["UUID"]):
        deleting = client.delete_event_source_mapping(UUID=doomed)
        assert deleting["ResponseMetadata"]["HTTPStatusCode"] == 202
        assert deleting["State"] == "Deleting"
        _wait_gone(client, doomed)
    assert client.list_event_source_mappings(EventSourceArn=QUEUE_ARN)["EventSourceMappings"] == []


def test_stream_mapping_members_and_defaults(client: Any) -> None:
    stream = "redis://127.0.0.1:6379/0?stream=esm-api-defaults"
    created = client.create_event_source_mapping(
        FunctionName="esm-target", EventSourceArn=stream, Enabled=False,
        StartingPosition="TRIM_HORIZON", MaximumRetryAttempts=3, BisectBatchOnFunctionError=True,
        MaximumRecordAgeInSeconds=3600,
        DestinationConfig={"OnFailure": {"Destination": ARN_PREFIX + "esm-target"}},
    )  # fmt: skip
    assert created["BatchSize"] == 100  # the stream default
    assert created["StartingPosition"] == "TRIM_HORIZON"
    assert created["ParallelizationFactor"] == 1
    assert created["MaximumRetryAttempts"] == 3
    assert created["BisectBatchOnFunctionError"] is True
    assert created["MaximumRecordAgeInSeconds"] == 3600
    assert created["DestinationConfig"] == {"OnFailure": {"Destination": ARN_PREFIX + "esm-target"}}
    mapping_uuid = created["UUID"]
    _wait_state(client, mapping_uuid, "Disabled")
    cleared = client.update_event_source_mapping(
        UUID=mapping_uuid, DestinationConfig={"OnFailure": {}}, MaximumRetryAttempts=-1
    )
    assert cleared["DestinationConfig"] == {"OnFailure": {}}
    assert cleared["MaximumRetryAttempts"] == -1
    _wait_state(client, mapping_uuid, "Disabled")
    assert _error(client.update_event_source_mapping, UUID=mapping_uuid,
                  ScalingConfig={"MaximumConcurrency": 5}) == INVALID  # fmt: skip
    client.delete_event_source_mapping(UUID=mapping_uuid)
    _wait_gone(client, mapping_uuid)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ({"FunctionName": "esm-missing"}, NOT_FOUND),
        ({"FunctionName": "esm-target:9"}, NOT_FOUND),
        ({"EventSourceArn": "arn:aws:kinesis:us-east-1:123456789012:stream/s"}, INVALID),
        ({"EventSourceArn": "https://queue.example.com/q"}, INVALID),
        ({"EventSourceArn": "arn:aws:sqs:us-east-1:123:short-account"}, INVALID),
        ({"BatchSize": 10001}, SHAPE),
        ({"BatchSize": 11}, INVALID),  # SQS: more than 10 needs a batching window
        ({"EventSourceArn": QUEUE_ARN + ".fifo", "BatchSize": 20,
          "MaximumBatchingWindowInSeconds": 1}, INVALID),
        ({"MaximumBatchingWindowInSeconds": 301}, SHAPE),
        ({"FunctionResponseTypes": ["Everything"]}, SHAPE),
        ({"ScalingConfig": {"MaximumConcurrency": 1001}}, SHAPE),
        ({"MaximumRetryAttempts": 2}, INVALID),  # stream-only members on a queue
        ({"StartingPosition": "LATEST"}, INVALID),
        ({"DestinationConfig": {"OnFailure": {"Destination": ARN_PREFIX + "esm-target"}}},
         INVALID),
        ({"FilterCriteria": {"Filters": [{"Pattern": "{}"}]}}, INVALID),
        ({"EventSourceArn": REDIS_STREAM,
          "DestinationConfig": {"OnFailure": {"Destination": ARN_PREFIX + "esm-missing"}}},
         INVALID),
        ({"EventSourceArn": REDIS_STREAM,
          "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sns:us-east-1:1:t"}}},
         INVALID),
        ({"EventSourceArn": REDIS_STREAM, "StartingPosition": "AT_TIMESTAMP"}, INVALID),
        ({"EventSourceArn": REDIS_STREAM, "MaximumRecordAgeInSeconds": 30}, INVALID),
        ({"EventSourceArn": REDIS_STREAM,
          "DestinationConfig": {"OnSuccess": {"Destination": ARN_PREFIX + "esm-target"}}},
         INVALID),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_lambda_errors(
    client: Any, members: dict[str, Any], expected: tuple[str, int]
) -> None:
    request = {"FunctionName": "esm-target", "EventSourceArn": QUEUE_ARN, **members}
    assert _error(client.create_event_source_mapping, **request) == expected
    assert client.list_event_source_mappings(FunctionName="esm-target")["EventSourceMappings"] == []


def test_unknown_uuid_is_not_found(client: Any) -> None:
    missing = "00000000-0000-0000-0000-000000000000"
    for call in (client.get_event_source_mapping, client.delete_event_source_mapping):
        assert _error(call, UUID=missing) == NOT_FOUND
    assert _error(client.update_event_source_mapping, UUID=missing, BatchSize=1) == NOT_FOUND


def test_deleting_the_function_deletes_its_mappings(client: Any) -> None:
    create_function(client, "esm-doomed", HANDLER)
    mapping_uuid = client.create_event_source_mapping(
        FunctionName="esm-doomed", EventSourceArn=QUEUE_ARN
    )["UUID"]
    _wait_state(client, mapping_uuid, "Enabled")
    client.delete_function(FunctionName="esm-doomed")
    _wait_gone(client, mapping_uuid)
    assert client.list_event_source_mappings(FunctionName="esm-doomed")["EventSourceMappings"] == []


@pytest.mark.parametrize("max_items", ["0", "10001", "abc", "²", "-1"])
def test_a_malformed_max_items_is_a_validation_error(server: FaasServer, max_items: str) -> None:
    # "²" passed str.isdigit() and then made int() raise: a 500 instead of a 400.
    query = urllib.parse.urlencode({"MaxItems": max_items})
    request = urllib.request.Request(f"{server.url}/2015-03-31/event-source-mappings?{query}")
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=10)
    assert excinfo.value.code == 400
    assert excinfo.value.headers["x-amzn-ErrorType"] == "ValidationException"
