"""Provisioned concurrency through real boto3: the configuration operations, environments
initialized ahead of invokes, routing to them first, spillover, replacement and failure."""

from __future__ import annotations

import base64
import itertools
import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError
from faas_support import (
    ARN_PREFIX,
    FaasServer,
    ServerFactory,
    capture_process,
    create_function,
    invoke_json,
    lambda_client,
    make_zip,
    process_is_gone,
    wait_until,
)
from test_concurrency import SLEEPER, books, metric

pytestmark = pytest.mark.timeout(120)

_names = itertools.count()


def _name(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


def provisioned_envs(server: FaasServer, name: str) -> list[dict[str, Any]]:
    return [
        env for env in books(server)["environments"]
        if env["function"] == name and env["provisioned"]
        and env["place"] in ("provisioned_idle", "busy")
    ]  # fmt: skip


def wait_ready(client: Any, name: str, qualifier: str) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        config = client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=qualifier)
        assert config["Status"] != "FAILED", config
        return config if config["Status"] == "READY" else None

    result: dict[str, Any] = wait_until(ready, 60, interval_s=0.1, what="READY")
    return result


@pytest.fixture(scope="module")
def shared(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server()


def _published(client: Any, prefix: str, source: str = SLEEPER, **members: Any) -> tuple[str, str]:
    name = _name(prefix)
    create_function(client, name, source, Timeout=30, **members)
    return name, client.publish_version(FunctionName=name)["Version"]


def test_environments_are_initialized_before_any_invoke(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name, version = _published(client, "pc")
    put = client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert put["RequestedProvisionedConcurrentExecutions"] == 2
    assert put["Status"] in ("IN_PROGRESS", "READY")
    ready = wait_ready(client, name, version)
    assert ready["AllocatedProvisionedConcurrentExecutions"] == 2
    assert ready["AvailableProvisionedConcurrentExecutions"] == 2
    assert "LastModified" in ready
    provisioned = provisioned_envs(shared, name)
    assert len(provisioned) == 2 and all(env["invocations"] == 0 for env in provisioned)

    response, payload = invoke_json(client, name, Qualifier=version, LogType="Tail")
    assert payload["init"] == "provisioned-concurrency"
    assert payload["pid"] in {env["pid"] for env in provisioned}
    report = base64.b64decode(response["LogResult"]).decode()
    assert "REPORT" in report and "Init Duration" not in report
    assert metric(shared, "faas_cold_starts_total", function=name) == 0
    # $LATEST is not provisioned: it starts on demand.
    assert invoke_json(client, name)[1]["init"] == "on-demand"

    listed = client.list_provisioned_concurrency_configs(FunctionName=name)
    assert [c["FunctionArn"] for c in listed["ProvisionedConcurrencyConfigs"]] == [
        f"{ARN_PREFIX}{name}:{version}"
    ]
    assert metric(shared, "faas_provisioned_concurrency_allocated", function=name) == 2

    client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    with pytest.raises(client.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    wait_until(lambda: not provisioned_envs(shared, name), 10, what="the allocation released")
    assert (
        client.list_provisioned_concurrency_configs(FunctionName=name)[
            "ProvisionedConcurrencyConfigs"
        ]
        == []
    )


def test_configuration_errors(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name, version = _published(client, "pc-bad")
    with pytest.raises(ClientError) as latest:
        client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="$LATEST", ProvisionedConcurrentExecutions=1
        )
    assert latest.value.response["Error"]["Code"] == "InvalidParameterValueException"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="42", ProvisionedConcurrentExecutions=1
        )
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="no-alias", ProvisionedConcurrentExecutions=1
        )
    with pytest.raises(client.exceptions.ProvisionedConcurrencyConfigNotFoundException):
        client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
    # More than the function's reservation is refused.
    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    with pytest.raises(ClientError) as over:
        client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2
        )
    assert over.value.response["Error"]["Code"] == "InvalidParameterValueException"
    # A version may be covered by one configuration only.
    client.delete_function_concurrency(FunctionName=name)
    client.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1
    )
    with pytest.raises(client.exceptions.ResourceConflictException):
        client.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=1
        )
    client.delete_function(FunctionName=name)
    wait_until(lambda: not provisioned_envs(shared, name), 10, what="environments gone")


def test_spillover_beyond_the_allocation(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name, version = _published(client, "pc-spill")
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1
    )
    wait_ready(client, name, version)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(
            lambda _: invoke_json(lambda_client(shared), name, {"seconds": 1}, Qualifier=version),
            range(3),
        ))  # fmt: skip
    kinds = sorted(payload["init"] for _, payload in results)
    assert kinds == ["on-demand", "on-demand", "provisioned-concurrency"]
    assert metric(shared, "faas_provisioned_concurrency_spillover_invocations_total",
                  function=name) == 2  # fmt: skip
    assert len(provisioned_envs(shared, name)) == 1


def test_a_provisioned_environment_that_dies_is_replaced(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name, version = _published(client, "pc-die")
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=2
    )
    wait_ready(client, name, version)
    victim = provisioned_envs(shared, name)[0]
    process = capture_process(victim["pid"])
    os.killpg(victim["pid"], signal.SIGKILL)
    wait_until(lambda: process_is_gone(process), 10, what="the environment to die")

    def replaced() -> bool:
        pids = {env["pid"] for env in provisioned_envs(shared, name)}
        return len(pids) == 2 and victim["pid"] not in pids

    wait_until(replaced, 30, what="a replacement environment")
    assert wait_ready(client, name, version)["AllocatedProvisionedConcurrentExecutions"] == 2
    assert invoke_json(client, name, Qualifier=version)[1]["init"] == "provisioned-concurrency"


def test_provisioning_that_fails_init_reports_failed(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name, version = _published(client, "pc-fail", "raise RuntimeError('no config')\n")
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1
    )

    def failed() -> dict[str, Any] | None:
        config = client.get_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
        return config if config["Status"] == "FAILED" else None

    config = wait_until(failed, 30, what="FAILED")
    assert "FUNCTION_ERROR_INIT_FAILURE" in config["StatusReason"]
    assert "no config" in config["StatusReason"]
    assert config["AllocatedProvisionedConcurrentExecutions"] == 0


def test_alias_allocation_follows_the_alias(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name, first = _published(client, "pc-alias")
    client.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": SLEEPER + "\n"}))
    second = client.publish_version(FunctionName=name)["Version"]
    client.create_alias(FunctionName=name, Name="live", FunctionVersion=first)
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier="live", ProvisionedConcurrentExecutions=2
    )
    wait_ready(client, name, "live")
    assert {env["version"] for env in provisioned_envs(shared, name)} == {first}
    assert invoke_json(client, name, Qualifier="live")[1]["init"] == "provisioned-concurrency"

    client.update_alias(FunctionName=name, Name="live", FunctionVersion=second)

    def moved() -> bool:
        envs = provisioned_envs(shared, name)
        return len(envs) == 2 and {env["version"] for env in envs} == {second}

    wait_until(moved, 30, what="the allocation to move to the new version")
    assert wait_ready(client, name, "live")["AllocatedProvisionedConcurrentExecutions"] == 2
    assert invoke_json(client, name, Qualifier="live")[1]["init"] == "provisioned-concurrency"
    client.delete_alias(FunctionName=name, Name="live")
    wait_until(lambda: not provisioned_envs(shared, name), 10, what="the allocation released")


def test_provisioned_concurrency_survives_a_restart(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server)
    name, version = _published(client, "pc-durable")
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1
    )
    wait_ready(client, name, version)
    server.restart()
    client = lambda_client(server)
    wait_ready(client, name, version)
    assert invoke_json(client, name, Qualifier=version)[1]["init"] == "provisioned-concurrency"


def test_provisioning_makes_room_by_evicting_idle_environments(make_server: ServerFactory) -> None:
    server = make_server(memory_budget_mb=256)
    client = lambda_client(server)
    create_function(client, "pc-idle-hog", SLEEPER, MemorySize=256)
    invoke_json(client, "pc-idle-hog")  # its environment now idles on the whole budget
    name, version = _published(client, "pc-room", MemorySize=128)
    client.put_provisioned_concurrency_config(
        FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1
    )
    assert wait_ready(client, name, version)["AllocatedProvisionedConcurrentExecutions"] == 1
    functions = {env["function"] for env in books(server)["environments"]}
    assert "pc-idle-hog" not in functions
    assert books(server)["committed_memory_mb"] <= 256


def test_changing_provisioned_concurrency_under_load_fails_nothing(shared: FaasServer) -> None:
    client = lambda_client(shared)
    name, version = _published(client, "pc-load")
    stop = threading.Event()
    outcomes: list[Any] = []

    def load() -> None:
        own = lambda_client(shared)
        while not stop.is_set():
            response, payload = invoke_json(own, name, {"seconds": 0.05}, Qualifier=version)
            outcomes.append((response["StatusCode"], response.get("FunctionError"), payload))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(outcomes) >= 10, 30, what="load to run")
        for count in (2, 4, 1):
            client.put_provisioned_concurrency_config(
                FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=count
            )
            wait_ready(client, name, version)
        client.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=version)
        seen = len(outcomes)
        wait_until(lambda: len(outcomes) >= seen + 10, 30, what="load after the changes")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert all(status == 200 and error is None for status, error, _ in outcomes), [
        outcome for outcome in outcomes if outcome[0] != 200 or outcome[1] is not None
    ][:3]
    kinds = {payload["init"] for _, _, payload in outcomes}
    assert kinds == {"on-demand", "provisioned-concurrency"}
