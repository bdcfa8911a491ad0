"""The concurrency model through real boto3: reserved concurrency, account settings, throttles,
the node memory budget, the per-function scaling rate and waiting for a free environment."""

from __future__ import annotations

import itertools
import json
import re
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from faas_support import (
    FaasServer,
    ServerFactory,
    create_function,
    invoke_json,
    lambda_client,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

# Sleeps as long as the event says and reports which environment ran it, and how it started.
SLEEPER = """
import os
import time

def handler(event, context):
    time.sleep(event.get("seconds", 0))
    return {"pid": os.getpid(), "init": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"]}
"""

_names = itertools.count()


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def books(server: FaasServer) -> dict[str, Any]:
    with urllib.request.urlopen(f"{server.url}/faas/v1/pool", timeout=10) as response:
        return dict(json.loads(response.read()))


def metric(server: FaasServer, metric_name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.fullmatch(rf"{metric_name}\{{(.*)\}} (\S+)", line)
        if match is None:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(key) == value for key, value in labels.items()):
            total += float(match.group(2))
    return total


def hold(server: FaasServer, name: str, seconds: float) -> threading.Thread:
    """Start an invoke that keeps one environment busy for ``seconds``."""
    thread = threading.Thread(
        target=invoke_json, args=(lambda_client(server), name, {"seconds": seconds}), daemon=True
    )
    thread.start()
    return thread


def busy_count(server: FaasServer, name: str) -> int:
    return sum(
        1 for env in books(server)["environments"] if env["function"] == name
        and env["place"] == "busy"
    )  # fmt: skip


@pytest.fixture(scope="module")
def shared(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server()


def test_reserved_concurrency_put_get_delete(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name = _name("reserve")
    create_function(client, name, SLEEPER)
    assert (
        client.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
        is None
    )
    assert "Concurrency" not in client.get_function(FunctionName=name)
    limit = client.get_account_settings()["AccountLimit"]
    assert limit["ConcurrentExecutions"] == 1000
    assert limit["UnreservedConcurrentExecutions"] == 1000

    put = client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=150)
    assert put["ReservedConcurrentExecutions"] == 150
    assert client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 150
    assert client.get_function(FunctionName=name)["Concurrency"] == {
        "ReservedConcurrentExecutions": 150
    }
    assert client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 850

    # More than would leave 100 unreserved is refused, and nothing changes.
    with pytest.raises(ClientError) as refused:
        client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=901)
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValueException"
    assert "below its minimum value of [100]" in refused.value.response["Error"]["Message"]
    assert client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 850
    assert (
        client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=900)[
            "ReservedConcurrentExecutions"
        ]
        == 900
    )

    client.delete_function_concurrency(FunctionName=name)
    assert (
        client.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
        is None
    )
    assert client.get_account_settings()["AccountLimit"]["UnreservedConcurrentExecutions"] == 1000


def test_reserved_concurrency_errors(shared: FaasServer) -> None:
    client = lambda_client(shared)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_function_concurrency(FunctionName="no-such-fn", ReservedConcurrentExecutions=1)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_concurrency(FunctionName="no-such-fn")
    name = _name("reserve-bad")
    create_function(client, name, SLEEPER)
    request = urllib.request.Request(
        f"{shared.url}/2017-10-31/functions/{name}/concurrency",
        data=b'{"ReservedConcurrentExecutions": -1}', method="PUT",
    )  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as negative:
        urllib.request.urlopen(request, timeout=10)
    assert negative.value.code == 400
    assert negative.value.headers["x-amzn-ErrorType"].startswith("ValidationException")
    request = urllib.request.Request(
        f"{shared.url}/2017-10-31/functions/{name}/concurrency", data=b"{}", method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=10)
    assert missing.value.code == 400
    assert b"Value null at 'reservedConcurrentExecutions'" in missing.value.read()
    request = urllib.request.Request(
        f"{shared.url}/2017-10-31/functions/{name}/concurrency", data=b"{not json", method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as malformed:
        urllib.request.urlopen(request, timeout=10)
    assert malformed.value.code == 400


def test_reserved_zero_throttles_every_invoke(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name = _name("runaway")
    create_function(client, name, SLEEPER)
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    with pytest.raises(client.exceptions.TooManyRequestsException) as throttled:
        client.invoke(FunctionName=name, Payload=b"{}")
    error = throttled.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert error["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert error["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "1"
    assert metric(shared, "faas_throttles_total", function=name,
                  reason="ReservedFunctionConcurrentInvocationLimitExceeded") == 1  # fmt: skip
    assert metric(shared, "faas_invocations_total", function=name) == 0
    client.delete_function_concurrency(FunctionName=name)
    assert invoke_json(client, name)[1]["init"] == "on-demand"


def test_reserved_is_a_ceiling_and_a_guarantee(make_server: ServerFactory) -> None:
    # Account 101: reserving 1 leaves exactly the minimum of 100 to everyone else.
    server = make_server(account_concurrency=101)
    client = lambda_client(server)
    capped, other = _name("capped"), _name("other")
    create_function(client, capped, SLEEPER, Timeout=30)
    create_function(client, other, SLEEPER, Timeout=30)
    client.put_function_concurrency(FunctionName=capped, ReservedConcurrentExecutions=1)
    holder = hold(server, capped, 3)
    wait_until(lambda: busy_count(server, capped) == 1, 20, what="the reserved unit in use")
    with pytest.raises(client.exceptions.TooManyRequestsException) as throttled:
        client.invoke(FunctionName=capped, Payload=b"{}")
    assert throttled.value.response["Reason"] == (
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    )
    # Other functions draw on the unreserved pool and are not affected.
    assert invoke_json(client, other)[0]["StatusCode"] == 200
    holder.join(30)
    assert invoke_json(client, capped)[0]["StatusCode"] == 200


def test_changing_reserved_under_load_fails_no_invoke_in_flight(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name = _name("shrink")
    create_function(client, name, SLEEPER, Timeout=30)
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=4)
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(invoke_json, lambda_client(shared), name, {"seconds": 1.5})
                   for _ in range(4)]  # fmt: skip
        wait_until(lambda: busy_count(shared, name) == 4, 20, what="four invokes running")
        client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        with pytest.raises(client.exceptions.TooManyRequestsException):
            client.invoke(FunctionName=name, Payload=b"{}")
        results = [future.result(30) for future in running]
    assert [response["StatusCode"] for response, _ in results] == [200] * 4
    assert all("FunctionError" not in response for response, _ in results)
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    assert invoke_json(client, name)[0]["StatusCode"] == 200
    assert books(shared)["in_flight"] == 0


def test_reserved_concurrency_survives_a_restart(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server)
    name = _name("durable-reserve")
    create_function(client, name, SLEEPER)
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    server.restart()
    client = lambda_client(server)
    assert client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 0
    with pytest.raises(client.exceptions.TooManyRequestsException):
        client.invoke(FunctionName=name, Payload=b"{}")
    client.delete_function(FunctionName=name)
    create_function(client, name, SLEEPER)  # a new function of the same name starts clean
    assert (
        client.get_function_concurrency(FunctionName=name).get("ReservedConcurrentExecutions")
        is None
    )
    assert invoke_json(client, name)[0]["StatusCode"] == 200


def test_memory_budget_evicts_least_recently_used_idle(make_server: ServerFactory) -> None:
    server = make_server(memory_budget_mb=256)
    client = lambda_client(server)
    first, second, third = _name("lru-a"), _name("lru-b"), _name("lru-c")
    for name in (first, second, third):
        create_function(client, name, SLEEPER, MemorySize=128)
    pid_first = invoke_json(client, first)[1]["pid"]
    pid_second = invoke_json(client, second)[1]["pid"]
    assert books(server)["committed_memory_mb"] == 256
    # A third 128 MB environment only fits once the least recently used idle one is gone.
    assert invoke_json(client, third)[0]["StatusCode"] == 200
    state = books(server)
    assert state["committed_memory_mb"] <= 256
    functions = {env["function"] for env in state["environments"] if env["place"] != "stopping"}
    assert first not in functions and {second, third} <= functions
    assert invoke_json(client, second)[1]["pid"] == pid_second  # still warm
    assert invoke_json(client, first)[1]["pid"] != pid_first  # came back cold
    assert books(server)["committed_memory_mb"] <= 256


def test_memory_budget_throttles_rather_than_oversubscribes(make_server: ServerFactory) -> None:
    server = make_server(memory_budget_mb=256, scale_wait_s=0.5)
    client = lambda_client(server)
    busy, extra = _name("mem-busy"), _name("mem-extra")
    create_function(client, busy, SLEEPER, MemorySize=256, Timeout=30)
    create_function(client, extra, SLEEPER, MemorySize=128)
    holder = hold(server, busy, 3)
    wait_until(lambda: busy_count(server, busy) == 1, 20, what="the budget in use")
    with pytest.raises(client.exceptions.TooManyRequestsException) as throttled:
        client.invoke(FunctionName=extra, Payload=b"{}")
    error = throttled.value.response
    assert error["Reason"] == "ConcurrentInvocationLimitExceeded"
    assert "memory budget (256 MB)" in error["message"]
    assert books(server)["committed_memory_mb"] == 256
    holder.join(30)
    # Once the big one is idle it can be evicted to make room.
    assert invoke_json(client, extra)[0]["StatusCode"] == 200
    # A function larger than the whole budget can never run here.
    huge = _name("mem-huge")
    create_function(client, huge, SLEEPER, MemorySize=512)
    with pytest.raises(client.exceptions.TooManyRequestsException):
        client.invoke(FunctionName=huge, Payload=b"{}")


def test_scaling_rate_limits_new_environments(make_server: ServerFactory) -> None:
    server = make_server(burst_environments=2, burst_window_s=600, scale_wait_s=0.5)
    client = lambda_client(server)
    name = _name("rate")
    create_function(client, name, SLEEPER, Timeout=30)
    holders = [hold(server, name, 4) for _ in range(2)]
    wait_until(lambda: busy_count(server, name) == 2, 20, what="two environments busy")
    with pytest.raises(client.exceptions.TooManyRequestsException) as throttled:
        client.invoke(FunctionName=name, Payload=b"{}")
    assert throttled.value.response["Reason"] == "FunctionInvocationRateLimitExceeded"
    assert metric(server, "faas_throttles_total", function=name,
                  reason="FunctionInvocationRateLimitExceeded") == 1  # fmt: skip
    for holder in holders:
        holder.join(30)
    # Warm environments are reused without new tokens.
    assert invoke_json(client, name)[0]["StatusCode"] == 200


def test_invoke_waits_for_an_environment_instead_of_a_duplicate(
    make_server: ServerFactory,
) -> None:
    # One token: the second concurrent invoke must wait for the first environment.
    server = make_server(burst_environments=1, burst_window_s=600, scale_wait_s=20)
    client = lambda_client(server)
    name = _name("handover")
    create_function(client, name, SLEEPER, Timeout=30)
    with ThreadPoolExecutor(3) as pool:
        results = list(
            pool.map(lambda _: invoke_json(lambda_client(server), name, {"seconds": 0.5}),
                     range(3))
        )  # fmt: skip
    assert [response["StatusCode"] for response, _ in results] == [200] * 3
    assert len({payload["pid"] for _, payload in results}) == 1
    assert len(books(server)["environments"]) == 1


def test_concurrent_executions_metric_counts_running_invokes(shared: FaasServer) -> None:
    name = _name("gauge")
    create_function(lambda_client(shared), name, SLEEPER)
    invoke_json(lambda_client(shared), name, {})  # warm, then idle
    assert metric(shared, "faas_concurrent_executions", function=name) == 0
    holders = [hold(shared, name, 3) for _ in range(2)]
    wait_until(lambda: busy_count(shared, name) == 2, timeout_s=30)
    assert metric(shared, "faas_concurrent_executions", function=name) == 2
    for holder in holders:
        holder.join(30)
    assert metric(shared, "faas_concurrent_executions", function=name) == 0
