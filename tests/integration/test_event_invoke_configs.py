"""Put/Update/Get/Delete/ListFunctionEventInvokeConfigs through boto3, Lambda-shaped errors
for bad settings and targets (here and on DeadLetterConfig), and which config governs an
event invoked through an alias, a version or the unqualified function."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
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

pytestmark = pytest.mark.timeout(120)

FAILS = """
def handler(event, context):
    raise RuntimeError("always failing: " + event["id"])
"""
OK = """
def handler(event, context):
    return event
"""


def store_queue_arn(queue: str) -> str:
    return f"arn:aws:faas:{REGION}:{ACCOUNT_ID}:dlq:{queue}"


def _store_messages(server: FaasServer, queue: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.url}/faas/v1/dlq/{queue}", timeout=10) as response:
        messages: list[dict[str, Any]] = json.loads(response.read())["Messages"]
    return messages


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    server = make_module_server(retry_delays_s="0.2,0.2")
    create_function(lambda_client(server), "validated", OK)  # the target of bad settings
    return server


def _error_code(excinfo: pytest.ExceptionInfo[Any]) -> str:
    code: str = excinfo.value.response["Error"]["Code"]
    return code


def test_put_get_update_list_delete(server: FaasServer) -> None:
    client = lambda_client(server)
    create_function(client, "configured", OK)
    client.publish_version(FunctionName="configured")
    client.create_alias(FunctionName="configured", Name="live", FunctionVersion="1")
    before = time.time()
    put = client.put_function_event_invoke_config(
        FunctionName="configured", MaximumRetryAttempts=1, MaximumEventAgeInSeconds=3600,
        DestinationConfig={"OnFailure": {"Destination": store_queue_arn("configured")}},
    )  # fmt: skip
    assert put["FunctionArn"] == ARN_PREFIX + "configured:$LATEST"
    assert put["MaximumRetryAttempts"] == 1
    assert put["MaximumEventAgeInSeconds"] == 3600
    assert put["DestinationConfig"] == {
        "OnSuccess": {}, "OnFailure": {"Destination": store_queue_arn("configured")},
    }  # fmt: skip
    assert before - 1 <= put["LastModified"].timestamp() <= time.time() + 1  # an epoch number
    got = client.get_function_event_invoke_config(FunctionName="configured")
    assert {k: v for k, v in got.items() if k != "ResponseMetadata"} == {
        k: v for k, v in put.items() if k != "ResponseMetadata"
    }

    # Update merges: only the members given change.
    updated = client.update_function_event_invoke_config(
        FunctionName="configured",
        DestinationConfig={"OnSuccess": {"Destination": store_queue_arn("configured-ok")}},
    )
    assert updated["MaximumRetryAttempts"] == 1
    assert updated["MaximumEventAgeInSeconds"] == 3600
    assert updated["DestinationConfig"] == {
        "OnSuccess": {"Destination": store_queue_arn("configured-ok")},
        "OnFailure": {"Destination": store_queue_arn("configured")},
    }
    # Put replaces: members not given are unset again.
    replaced = client.put_function_event_invoke_config(
        FunctionName="configured", MaximumRetryAttempts=0
    )
    assert replaced["MaximumRetryAttempts"] == 0
    assert "MaximumEventAgeInSeconds" not in replaced
    assert replaced["DestinationConfig"] == {"OnSuccess": {}, "OnFailure": {}}

    client.put_function_event_invoke_config(
        FunctionName="configured", Qualifier="live", MaximumEventAgeInSeconds=60
    )
    client.put_function_event_invoke_config(
        FunctionName=ARN_PREFIX + "configured:1", MaximumRetryAttempts=2
    )
    listed = client.list_function_event_invoke_configs(FunctionName="configured")
    arns = [config["FunctionArn"] for config in listed["FunctionEventInvokeConfigs"]]
    assert arns == [ARN_PREFIX + "configured:$LATEST", ARN_PREFIX + "configured:1",
                    ARN_PREFIX + "configured:live"]  # fmt: skip
    paginator = client.get_paginator("list_function_event_invoke_configs")
    pages = list(paginator.paginate(FunctionName="configured", PaginationConfig={"PageSize": 2}))
    assert [len(page["FunctionEventInvokeConfigs"]) for page in pages] == [2, 1]

    client.delete_function_event_invoke_config(FunctionName="configured", Qualifier="live")
    with pytest.raises(client.exceptions.ResourceNotFoundException) as excinfo:
        client.get_function_event_invoke_config(FunctionName="configured", Qualifier="live")
    assert "doesn't have an EventInvokeConfig" in excinfo.value.response["Message"]
    # Deleting the alias (or the function) takes its config along.
    client.delete_alias(FunctionName="configured", Name="live")
    client.create_alias(FunctionName="configured", Name="live", FunctionVersion="1")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_event_invoke_config(FunctionName="configured", Qualifier="live")
    client.delete_function(FunctionName="configured")
    create_function(client, "configured", OK)
    listed = client.list_function_event_invoke_configs(FunctionName="configured")
    assert listed["FunctionEventInvokeConfigs"] == []


def test_configs_survive_a_restart(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server)
    create_function(client, "durable-config", OK)
    client.put_function_event_invoke_config(FunctionName="durable-config", MaximumRetryAttempts=0)
    server.restart()
    got = lambda_client(server).get_function_event_invoke_config(FunctionName="durable-config")
    assert got["MaximumRetryAttempts"] == 0


def test_missing_configs_and_functions(server: FaasServer) -> None:
    client = lambda_client(server)
    create_function(client, "unconfigured", OK)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_event_invoke_config(FunctionName="unconfigured")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.update_function_event_invoke_config(
            FunctionName="unconfigured", MaximumRetryAttempts=1
        )
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.delete_function_event_invoke_config(FunctionName="unconfigured")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_function_event_invoke_config(FunctionName="no-such-fn", MaximumRetryAttempts=1)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_function_event_invoke_config(
            FunctionName="unconfigured", Qualifier="7", MaximumRetryAttempts=1
        )


@pytest.mark.parametrize("max_items", ["0", "51", "x", "%C2%B2", "%D9%A3"])
def test_list_refuses_a_max_items_out_of_range(server: FaasServer, max_items: str) -> None:
    # "²" and "٣" pass str.isdigit() but not int() (or are no ASCII number): once a 500.
    url = f"{server.url}/2019-09-25/functions/validated/event-invoke-config/list"
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(f"{url}?MaxItems={max_items}", timeout=10)
    assert excinfo.value.code == 400
    assert excinfo.value.headers["x-amzn-ErrorType"] == "ValidationException"


@pytest.mark.parametrize(
    ("members", "code"),
    [
        ({"MaximumRetryAttempts": 3}, "ValidationException"),
        ({"MaximumEventAgeInSeconds": 21601}, "ValidationException"),
        ({"MaximumEventAgeInSeconds": 59}, "ValidationException"),
        ({"MaximumRetryAttempts": -1}, "ValidationException"),
        ({}, "InvalidParameterValueException"),
        ({"DestinationConfig": {"OnFailure": {"Destination": "not-an-arn"}}},
         "ValidationException"),
        ({"DestinationConfig": {"OnSuccess": {"Destination": f"arn:aws:sns:{REGION}:"
                                              f"{ACCOUNT_ID}:topic"}}},
         "InvalidParameterValueException"),
        ({"DestinationConfig": {"OnFailure": {"Destination": ARN_PREFIX + "nowhere"}}},
         "InvalidParameterValueException"),
        ({"DestinationConfig": {"OnFailure": {"Destination": ARN_PREFIX + "validated"}}},
         "InvalidParameterValueException"),
        ({"DestinationConfig": {"OnFailure": {"Destination": f"arn:aws:lambda:eu-west-1:"
                                              f"{ACCOUNT_ID}:function:validated"}}},
         "InvalidParameterValueException"),
        ({"DestinationConfig": {"OnFailure": {"Destination": f"arn:aws:faas:{REGION}:"
                                              f"{ACCOUNT_ID}:queue:x"}}},
         "InvalidParameterValueException"),
    ],
    ids=["retries-3", "age-21601", "age-59", "retries-negative", "nothing", "not-an-arn", "sns",
         "missing-function", "itself", "other-region", "bad-store-queue"],
)  # fmt: skip
def test_bad_settings_are_refused(server: FaasServer, members: dict[str, Any], code: str) -> None:
    # Client-side validation off: botocore would refuse some minima before sending.
    client = lambda_client(server, parameter_validation=False)
    with pytest.raises(client.exceptions.ClientError) as excinfo:
        client.put_function_event_invoke_config(FunctionName="validated", **members)
    assert _error_code(excinfo) == code, excinfo.value.response
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_event_invoke_config(FunctionName="validated")  # nothing was stored


@pytest.mark.parametrize(
    ("target", "code"),
    [
        ("not-an-arn", "ValidationException"),
        (f"arn:aws:sns:{REGION}:{ACCOUNT_ID}:topic", "InvalidParameterValueException"),
        (ARN_PREFIX + "no-such-target", "InvalidParameterValueException"),
        (f"arn:aws:faas:{REGION}:{ACCOUNT_ID}:dlq:bad/name", "InvalidParameterValueException"),
        # No region: no SQS endpoint to send to (it was accepted, then failed every send).
        (f"arn:aws:sqs::{ACCOUNT_ID}:no-region", "InvalidParameterValueException"),
    ],
)
def test_bad_dead_letter_targets_are_refused(server: FaasServer, target: str, code: str) -> None:
    client = lambda_client(server)
    with pytest.raises(client.exceptions.ClientError) as excinfo:
        create_function(client, "dlq-refused", OK, DeadLetterConfig={"TargetArn": target})
    assert _error_code(excinfo) == code, excinfo.value.response
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="dlq-refused")  # nothing was created
    with pytest.raises(client.exceptions.ClientError) as update:
        client.update_function_configuration(
            FunctionName="validated", DeadLetterConfig={"TargetArn": target}
        )
    assert _error_code(update) == code


def test_dead_letter_targets_that_are_accepted(server: FaasServer) -> None:
    client = lambda_client(server)
    targets = [
        store_queue_arn("accepted"),
        f"arn:aws:sqs:{REGION}:123456789012:any-queue",
        ARN_PREFIX + "validated",
    ]
    create_function(client, "validated-dlq", OK, DeadLetterConfig={"TargetArn": targets[0]})
    for target in targets:
        configuration = client.update_function_configuration(
            FunctionName="validated-dlq", DeadLetterConfig={"TargetArn": target}
        )
        assert configuration["DeadLetterConfig"] == {"TargetArn": target}
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_configuration(
            FunctionName="validated-dlq",
            DeadLetterConfig={"TargetArn": ARN_PREFIX + "validated-dlq"},
        )


def test_the_config_of_the_invoked_qualifier_governs_the_event(server: FaasServer) -> None:
    client = lambda_client(server)
    create_function(client, "governed", FAILS)
    client.publish_version(FunctionName="governed")  # 1
    client.update_function_configuration(FunctionName="governed", Timeout=5)
    client.publish_version(FunctionName="governed")  # 2
    client.create_alias(FunctionName="governed", Name="blue", FunctionVersion="1")
    client.create_alias(FunctionName="governed", Name="green", FunctionVersion="1")
    for qualifier, queue in (("$LATEST", "gov-latest"), ("1", "gov-v1"), ("blue", "gov-blue")):
        client.put_function_event_invoke_config(
            FunctionName="governed", Qualifier=qualifier, MaximumRetryAttempts=0,
            DestinationConfig={"OnFailure": {"Destination": store_queue_arn(queue)}},
        )  # fmt: skip
    sent = {
        "blue": "gov-blue",  # the alias's own config
        "green": "gov-v1",  # no alias config: the version it runs (1)
        "1": "gov-v1",  # the version's config
        "2": "gov-latest",  # no config of version 2: $LATEST's
        None: "gov-latest",  # the unqualified function
    }
    for qualifier in sent:
        members = {} if qualifier is None else {"Qualifier": qualifier}
        client.invoke(FunctionName="governed", InvocationType="Event",
                      Payload=json.dumps({"id": f"via-{qualifier}"}).encode(),
                      **members)  # fmt: skip
    expected: dict[str, set[str]] = {}
    for qualifier, queue in sent.items():
        expected.setdefault(queue, set()).add(f"via-{qualifier}")

    def landed() -> dict[str, set[str]]:
        return {
            queue: {json.loads(m["Body"])["requestPayload"]["id"]
                    for m in _store_messages(server, queue)}
            for queue in expected
        }  # fmt: skip

    wait_until(lambda: landed() == expected, 30, what=f"records in {expected}")
    records = [json.loads(m["Body"]) for m in _store_messages(server, "gov-blue")]
    assert records[0]["requestContext"]["functionArn"] == ARN_PREFIX + "governed:blue"
    assert records[0]["requestContext"]["approximateInvokeCount"] == 1  # no retry
