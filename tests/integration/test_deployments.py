"""Traffic-shifting deployments: canary and linear shifts, automatic rollback, hooks,
restarts, the /faas/v1/deployments API and `faas deploy-alias`."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from faas_support import (
    FaasServer,
    ServerFactory,
    create_function,
    lambda_client,
    make_zip,
    wait_until,
)

HEALTHY = "def handler(event, context):\n    return {'ok': True}\n"
BROKEN = "def handler(event, context):\n    raise RuntimeError('broken release')\n"


def api(server: FaasServer, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{server.url}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def publish(client: Any, name: str, source: str) -> str:
    return str(client.update_function_code(FunctionName=name, ZipFile=make_zip(
        {"app.py": source}), Publish=True)["Version"])  # fmt: skip


def prepare_function(client: Any, name: str, second: str) -> tuple[str, str]:
    create_function(client, name, HEALTHY, Publish=True)
    target = publish(client, name, second)
    client.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    return "1", target


def deploy(server: FaasServer, name: str, target: str, preference: str, **extra: Any) -> Any:
    status, body = api(server, "POST", "/faas/v1/deployments", {
        "FunctionName": name, "Alias": "live", "TargetVersion": target,
        "Preference": preference, **extra,
    })  # fmt: skip
    assert status == 201, body
    return body


def finished(server: FaasServer, deployment_id: str, timeout_s: float = 30) -> Any:
    def state() -> Any:
        _, body = api(server, "GET", f"/faas/v1/deployments/{deployment_id}")
        return body if body["State"] != "InProgress" else None

    return wait_until(state, timeout_s, what=f"deployment {deployment_id} to end")


class Load:
    """Threads invoking an alias continuously, counting (executed version, error)."""

    def __init__(self, server: FaasServer, name: str, threads: int = 4) -> None:
        self.seen: collections.Counter[tuple[str, str | None]] = collections.Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(server, name))
                         for _ in range(threads)]  # fmt: skip

    def _run(self, server: FaasServer, name: str) -> None:
        client = lambda_client(server)
        while not self._stop.is_set():
            response = client.invoke(FunctionName=name, Qualifier="live", Payload=b"{}")
            response["Payload"].read()
            key = (response["ExecutedVersion"], response.get("FunctionError"))
            with self._lock:
                self.seen[key] += 1

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Iterator[FaasServer]:
    yield make_module_server()


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


def test_failing_canary_rolls_back_to_exactly_where_it_began(
    server: FaasServer, client: Any
) -> None:
    original, target = prepare_function(client, "canary-bad", BROKEN)
    before = client.get_alias(FunctionName="canary-bad", Name="live")
    with Load(server, "canary-bad") as load:
        deployment = deploy(server, "canary-bad", target, "Canary:20:5")
        result = finished(server, deployment["DeploymentId"])
    assert result["State"] == "RolledBack"
    assert "Error rate of version" in result["Reason"]
    after = client.get_alias(FunctionName="canary-bad", Name="live")
    assert after["FunctionVersion"] == before["FunctionVersion"] == original
    assert "RoutingConfig" not in after
    assert load.seen[(target, "Unhandled")] > 0  # the canary did receive traffic


def test_healthy_canary_ends_on_the_target(server: FaasServer, client: Any) -> None:
    _, target = prepare_function(client, "canary-good", HEALTHY.replace("True", "'v2'"))
    with Load(server, "canary-good") as load:
        deployment = deploy(server, "canary-good", target, "Canary:20:1")
        result = finished(server, deployment["DeploymentId"])
    assert result["State"] == "Succeeded"
    after = client.get_alias(FunctionName="canary-good", Name="live")
    assert after["FunctionVersion"] == target and "RoutingConfig" not in after
    assert all(error is None for _, error in load.seen)


def test_linear_deployment_under_load_never_fails_an_invoke(
    server: FaasServer, client: Any
) -> None:
    _, target = prepare_function(client, "linear", HEALTHY.replace("True", "'v2'"))
    with Load(server, "linear") as load:
        deployment = deploy(server, "linear", target, "Linear:25:1")
        seen_weights = set()

        def done() -> Any:
            _, body = api(server, "GET", f"/faas/v1/deployments/{deployment['DeploymentId']}")
            seen_weights.add(body["TargetWeight"])
            return body if body["State"] != "InProgress" else None

        result = wait_until(done, 30, what="the linear deployment to end")
    assert result["State"] == "Succeeded"
    assert {0.25, 0.5, 0.75} & seen_weights  # intermediate steps were observed
    assert all(error is None for _, error in load.seen), load.seen
    assert {version for version, _ in load.seen} == {"1", target}


def test_stop_rolls_back_and_bad_requests_are_refused(server: FaasServer, client: Any) -> None:
    _, target = prepare_function(client, "stoppable", HEALTHY.replace("True", "2"))
    deployment = deploy(server, "stoppable", target, "Linear10PercentEvery10Minutes")
    wait_until(lambda: client.get_alias(FunctionName="stoppable", Name="live").get(
        "RoutingConfig"), 10, what="the first step")  # fmt: skip
    status, body = api(server, "POST", f"/faas/v1/deployments/{deployment['DeploymentId']}/stop")
    assert status == 200 and body["State"] == "Stopped"
    alias = client.get_alias(FunctionName="stoppable", Name="live")
    assert alias["FunctionVersion"] == "1" and "RoutingConfig" not in alias
    bad = {"FunctionName": "stoppable", "Alias": "live", "TargetVersion": target}
    assert api(server, "POST", "/faas/v1/deployments", {**bad, "Preference": "Sometimes"})[0] == 400
    assert (
        api(server, "POST", "/faas/v1/deployments", {**bad, "TargetVersion": "$LATEST"})[0] == 400
    )
    assert api(server, "POST", "/faas/v1/deployments", {**bad, "Alias": "nope"})[0] == 404
    assert api(server, "POST", "/faas/v1/deployments", {**bad, "TargetVersion": "99"})[0] == 404
    assert api(server, "GET", "/faas/v1/deployments/d-missing")[0] == 404


HOOK = """
def handler(event, context):
    return {"status": "Failed"} if event["Alias"] == "live" and FAIL else {"status": "Succeeded"}
FAIL = True
"""


def test_failing_pre_traffic_hook_rolls_back(server: FaasServer, client: Any) -> None:
    _, target = prepare_function(client, "hooked", HEALTHY.replace("True", "2"))
    create_function(client, "hook-fails", HOOK)
    deployment = deploy(server, "hooked", target, "AllAtOnce", PreTrafficHook="hook-fails")
    result = finished(server, deployment["DeploymentId"])
    assert result["State"] == "RolledBack" and "PreTraffic" in result["Reason"]
    create_function(client, "hook-passes", HOOK.replace("FAIL = True", "FAIL = False"))
    deployment = deploy(server, "hooked", target, "AllAtOnce", PostTrafficHook="hook-passes")
    assert finished(server, deployment["DeploymentId"])["State"] == "Succeeded"


def test_cli_follows_the_deployment_and_reports_rollback(server: FaasServer, client: Any) -> None:
    _, target = prepare_function(client, "cli-bad", BROKEN)
    with Load(server, "cli-bad", threads=2):
        process = subprocess.run(
            [sys.executable, "-m", "faas", "deploy-alias", "cli-bad", "live", target,
             "--preference", "Canary:30:5", "--endpoint", server.url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert process.returncode == 1, process.stdout + process.stderr
    assert "RolledBack" in process.stdout


def test_deployment_resumes_after_the_node_is_killed(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server)
    _, target = prepare_function(client, "resumed", HEALTHY.replace("True", "2"))
    deployment = deploy(server, "resumed", target, "Linear:50:3")
    wait_until(lambda: client.get_alias(FunctionName="resumed", Name="live").get(
        "RoutingConfig"), 10, what="the first step")  # fmt: skip
    server.restart(kill=True)
    client = lambda_client(server)
    _, body = api(server, "GET", f"/faas/v1/deployments/{deployment['DeploymentId']}")
    assert body["State"] == "InProgress"  # the record survived and says where it stands
    result = finished(server, deployment["DeploymentId"])
    assert result["State"] == "Succeeded"
    assert client.get_alias(FunctionName="resumed", Name="live")["FunctionVersion"] == target
