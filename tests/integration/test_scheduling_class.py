"""Environments run in SCHED_BATCH (they do not preempt the node when an invoke wakes them),
whichever way they started: forked from the zygote, exec'd, or as a custom runtime."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from faas_support import ServerFactory, create_function, lambda_client

POLICY = """
import os

def handler(event, context):
    return {"policy": os.sched_getscheduler(0), "ppid": os.getppid()}
"""

# A custom runtime: bash over the Runtime API, reporting its own scheduling policy.
BOOTSTRAP = """#!/bin/bash
set -euo pipefail
api="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation"
while true; do
    headers=$(mktemp)
    curl -sS -D "$headers" -o /dev/null "$api/next"
    id=$(grep -i '^lambda-runtime-aws-request-id:' "$headers" | tr -d '\\r' | awk '{print $2}')
    policy=$(python3 -c 'import os; print(os.sched_getscheduler(0))')
    curl -sS -X POST "$api/$id/response" -d "{\\"policy\\": $policy}" >/dev/null
done
"""


def _policy(client: Any, name: str) -> int:
    response = client.invoke(FunctionName=name, Payload=b"{}")
    body = json.loads(response["Payload"].read())
    assert "FunctionError" not in response, body
    return int(body["policy"])


@pytest.mark.parametrize("zygote", ["true", "false"])
def test_python_environments_run_in_the_batch_class(
    make_server: ServerFactory, zygote: str
) -> None:
    client = lambda_client(make_server(zygote=zygote))
    create_function(client, "batch-python", POLICY)
    assert _policy(client, "batch-python") == os.SCHED_BATCH


def test_custom_runtimes_run_in_the_batch_class(make_server: ServerFactory) -> None:
    client = lambda_client(make_server())
    create_function(
        client, "batch-provided", {"bootstrap": (BOOTSTRAP, 0o755)},  # type: ignore[dict-item], handler="unused",
        runtime="provided.al2023",
    )  # fmt: skip
    assert _policy(client, "batch-provided") == os.SCHED_BATCH
