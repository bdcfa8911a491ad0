"""One handler suite, three doors: the native runtime, the native runtime over the Runtime
API, and AWS's own awslambdaric (unchanged, from PyPI) as a `provided` bootstrap.

Every case must observe the same behaviour whichever door the handler came through.
"""

from __future__ import annotations

import base64
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from faas_support import ROLE, FaasServer, ServerFactory, lambda_client, make_zip

HANDLERS = """
import json
import logging
import os
import time

def context(event, context):
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "invoked_function_arn": context.invoked_function_arn,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "custom": context.client_context.custom if context.client_context else None,
        "event": event,
    }

def environment(event, context):
    names = ["AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_REGION",
             "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_LOG_GROUP_NAME", "_HANDLER",
             "LAMBDA_TASK_ROOT", "GREETING"]
    found = {name: os.environ.get(name) for name in names}
    found["cwd"] = os.getcwd()
    found["leaked"] = sorted(k for k in os.environ if k.startswith("_FAAS"))
    return found

def fails(event, context):
    raise ValueError("boom " + str(event.get("n")))

def logs(event, context):
    print("hello-from-print")
    logging.getLogger().warning("warned-by-logging")
    return "logged"

def sleeps(event, context):
    time.sleep(event.get("seconds", 0))
    return {"slept": event.get("seconds", 0)}

def returns_list(event, context):
    return [1, "two", None, {"three": 3.5}]
"""

MODES = ("native", "runtime-api", "awslambdaric")


@dataclass
class Door:
    """A server and the way functions reach it in one mode."""

    mode: str
    server: FaasServer
    client: Any

    def deploy(self, name: str, handler: str, **members: Any) -> None:
        files: dict[str, tuple[str, int]] = {"app.py": (HANDLERS, 0o644)}
        if self.mode == "awslambdaric":
            bootstrap = f'#!/bin/sh\nexec {sys.executable} -m awslambdaric "$_HANDLER"\n'
            files["bootstrap"] = (bootstrap, 0o755)
            runtime = "provided.al2023"
        else:
            runtime = "python3.12"
        self.client.create_function(
            FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
            Code={"ZipFile": make_zip(files)}, MemorySize=256, Timeout=members.pop("Timeout", 5),
            **members,
        )  # fmt: skip

    def invoke(self, name: str, event: Any = None, **members: Any) -> tuple[dict[str, Any], Any]:
        payload = json.dumps({} if event is None else event).encode()
        response = self.client.invoke(FunctionName=name, Payload=payload, **members)
        return response, json.loads(response["Payload"].read())


@pytest.fixture(scope="module", params=MODES)
def door(request: pytest.FixtureRequest, make_module_server: ServerFactory) -> Iterator[Door]:
    settings = {"python_transport": "runtime-api"} if request.param == "runtime-api" else {}
    server = make_module_server(**settings)
    client = lambda_client(server)
    door = Door(request.param, server, client)
    door.deploy("ctx", "app.context")
    door.deploy("env", "app.environment", Environment={"Variables": {"GREETING": "hi"}})
    door.deploy("fails", "app.fails")
    door.deploy("logs", "app.logs")
    door.deploy("sleeps", "app.sleeps", Timeout=1)
    door.deploy("lists", "app.returns_list")
    door.deploy("missing", "nosuchmodule.handler")
    yield door


def test_context_object(door: Door) -> None:
    custom = {"tenant": "t-1"}
    client_context = base64.b64encode(json.dumps({"custom": custom}).encode()).decode()
    response, body = door.invoke("ctx", {"k": "v"}, ClientContext=client_context)
    assert body["aws_request_id"] == response["ResponseMetadata"]["RequestId"]
    assert body["function_name"] == "ctx"
    assert body["function_version"] == "$LATEST"
    assert body["memory_limit_in_mb"] == "256"
    assert body["invoked_function_arn"] == "arn:aws:lambda:us-east-1:000000000000:function:ctx"
    assert body["log_group_name"] == "/aws/lambda/ctx"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", body["log_stream_name"])
    assert 0 < body["remaining_ms"] <= 5000
    assert body["custom"] == custom
    assert body["event"] == {"k": "v"}


def test_environment_variables(door: Door) -> None:
    _, body = door.invoke("env")
    assert body["AWS_LAMBDA_FUNCTION_NAME"] == "env"
    assert body["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert body["AWS_REGION"] == "us-east-1"
    assert body["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert body["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/env"
    assert body["_HANDLER"] == "app.environment"
    assert body["GREETING"] == "hi"
    assert body["LAMBDA_TASK_ROOT"] == body["cwd"]
    assert body["leaked"] == []


def test_handler_exception_shape(door: Door) -> None:
    response, body = door.invoke("fails", {"n": 7})
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "ValueError"
    assert body["errorMessage"] == "boom 7"
    assert body["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert any("raise ValueError" in frame for frame in body["stackTrace"])


def test_logs_reach_the_tail(door: Door) -> None:
    response, body = door.invoke("logs", LogType="Tail")
    assert body == "logged"
    tail = base64.b64decode(response["LogResult"]).decode()
    assert "hello-from-print" in tail
    assert re.search(r"\[WARNING\]\t\S+Z\t[0-9a-f-]{36}\twarned-by-logging", tail)
    assert tail.index("START RequestId") < tail.index("hello-from-print") < tail.index("END")
    assert tail.rstrip().splitlines()[-1].startswith("REPORT RequestId: ")


def test_timeout_then_recovery(door: Door) -> None:
    response, body = door.invoke("sleeps", {"seconds": 3})
    assert response["FunctionError"] == "Unhandled"
    assert re.search(r"Task timed out after 1\.\d\d seconds", body["errorMessage"])
    _, body = door.invoke("sleeps", {"seconds": 0})
    assert body == {"slept": 0}


def test_result_encoding(door: Door) -> None:
    _, body = door.invoke("lists")
    assert body == [1, "two", None, {"three": 3.5}]


def test_import_error(door: Door) -> None:
    response, body = door.invoke("missing")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'nosuchmodule'" in body["errorMessage"]
