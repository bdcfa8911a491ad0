"""Runtimes over the Runtime API: Node.js, custom `provided` bootstraps, and their faults."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from faas_support import ROLE, FaasServer, ServerFactory, lambda_client, make_zip

NODE_MISSING = shutil.which("node") is None


def deploy(client: Any, name: str, runtime: str, files: dict[str, tuple[str | bytes, int]],
           handler: str = "index.handler", **members: Any) -> None:  # fmt: skip
    client.create_function(
        FunctionName=name, Runtime=runtime, Role=ROLE, Handler=handler,
        Code={"ZipFile": make_zip(files)}, **members,
    )  # fmt: skip


def invoke(client: Any, name: str, event: Any = None, **members: Any) -> tuple[dict[str, Any], Any]:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **members)
    body = response["Payload"].read()
    return response, json.loads(body) if body else None


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Iterator[FaasServer]:
    yield make_module_server(init_timeout_s=2)


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


NODE_HANDLERS = """
let calls = 0;
exports.asyncHandler = async (event, context) => {
  calls += 1;
  console.log("node saw", JSON.stringify(event));
  return { calls, requestId: context.awsRequestId, fn: context.functionName,
           remaining: context.getRemainingTimeInMillis(), memory: context.memoryLimitInMB };
};
exports.callbackHandler = (event, context, callback) => {
  setTimeout(() => callback(null, { doubled: event.n * 2 }), 5);
};
exports.throws = async () => { const e = new TypeError("bad type"); throw e; };
"""


@pytest.mark.skipif(NODE_MISSING, reason="Node.js is not installed")
def test_nodejs_async_callback_and_errors(client: Any) -> None:
    files = {"index.js": (NODE_HANDLERS, 0o644)}
    deploy(client, "node-async", "nodejs20.x", files, "index.asyncHandler", MemorySize=256)
    deploy(client, "node-callback", "nodejs22.x", files, "index.callbackHandler")
    deploy(client, "node-throws", "nodejs18.x", files, "index.throws")
    response, body = invoke(client, "node-async", {"k": 1}, LogType="Tail")
    assert body["calls"] == 1
    assert body["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert body["fn"] == "node-async"
    assert body["memory"] == "256"
    assert 0 < body["remaining"] <= 3000
    tail = base64.b64decode(response["LogResult"]).decode()
    assert '\tINFO\tnode saw {"k":1}' in tail
    _, body = invoke(client, "node-async")
    assert body["calls"] == 2  # the same warm process
    _, body = invoke(client, "node-callback", {"n": 21})
    assert body == {"doubled": 42}
    response, body = invoke(client, "node-throws")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == "bad type"
    assert isinstance(body["trace"], list)


@pytest.mark.skipif(NODE_MISSING, reason="Node.js is not installed")
def test_nodejs_missing_handler(client: Any) -> None:
    deploy(client, "node-missing", "nodejs20.x", {"index.js": ("exports.x = 1;", 0o644)})
    response, body = invoke(client, "node-missing")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.HandlerNotFound"


CURL_BOOTSTRAP = """#!/bin/bash
set -euo pipefail
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  echo "bash handling $ID"
  curl -sS -X POST "$API/invocation/$ID/response" -d "{\\"echo\\": $EVENT}" > /dev/null
done
"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_bash_bootstrap_with_curl(client: Any) -> None:
    deploy(client, "bash", "provided.al2023", {"bootstrap": (CURL_BOOTSTRAP, 0o755)}, "unused")
    for n in range(3):
        response, body = invoke(client, "bash", {"n": n}, LogType="Tail")
        assert response.get("FunctionError") is None
        assert body == {"echo": {"n": n}}
    assert "bash handling " in base64.b64decode(response["LogResult"]).decode()


def _bootstrap(script: str) -> dict[str, tuple[str | bytes, int]]:
    return {"bootstrap": ("#!/bin/bash\n" + script, 0o755)}


FAULTS = {
    "not-executable": ({"bootstrap": ("#!/bin/sh\necho hi\n", 0o644)}, "Runtime.InvalidEntrypoint"),
    "no-bootstrap": ({"README": ("nothing here", 0o644)}, "Runtime.InvalidEntrypoint"),
    "exits-at-once": (_bootstrap("exit 3\n"), "Runtime.ExitError"),
    "never-calls-next": (_bootstrap("sleep 30\n"), "Runtime.InitTimeout"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_broken_bootstraps_fail_like_lambda_and_the_node_keeps_serving(
    client: Any, fault: str
) -> None:
    files, error_type = FAULTS[fault]
    name = f"fault-{fault}"
    deploy(client, name, "provided.al2", files, "unused")
    response, body = invoke(client, name)
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == error_type
    # The node keeps serving, and the same function fails the same way again.
    assert invoke(client, name)[1]["errorType"] == error_type


FOREIGN_ID_BOOTSTRAP = """
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
PREVIOUS=none
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  CODE=$(curl -s -o /dev/null -w "%{http_code}" -X POST "$API/invocation/not-$ID/response" -d 1)
  echo "foreign id answered $CODE"
  CODE=$(curl -s -o /dev/null -w "%{http_code}" -X POST "$API/invocation/$PREVIOUS/response" -d 2)
  echo "finished id answered $CODE"
  curl -sS -X POST "$API/invocation/$ID/response" -d '"ok"' > /dev/null
  PREVIOUS=$ID
done
"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_foreign_and_finished_request_ids_are_refused(client: Any) -> None:
    deploy(client, "foreign", "provided", _bootstrap(FOREIGN_ID_BOOTSTRAP), "unused")
    for _ in range(2):
        response, body = invoke(client, "foreign", LogType="Tail")
        assert body == "ok"
        log_text = base64.b64decode(response["LogResult"]).decode()
        assert "foreign id answered 400" in log_text
        assert "finished id answered 400" in log_text


BIG_RESPONSE_BOOTSTRAP = """
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
head -c 7340032 /dev/zero | tr '\\0' 'a' | sed 's/.*/"&"/' > /tmp/faas-big-$$.json
while true; do
  HEADERS="$(mktemp)"
  curl -sS -D "$HEADERS" "$API/invocation/next" > /dev/null
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  CODE=$(curl -s -o /dev/null -w "%{http_code}" -X POST "$API/invocation/$ID/response" \\
         --data-binary @/tmp/faas-big-$$.json)
  echo "big response got $CODE"
done
"""


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_oversize_response_is_refused_with_lambdas_error(client: Any) -> None:
    deploy(client, "big", "provided", _bootstrap(BIG_RESPONSE_BOOTSTRAP), "unused")
    response, body = invoke(client, "big")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Function.ResponseSizeTooLarge"
    assert "6291556 bytes" in body["errorMessage"]
