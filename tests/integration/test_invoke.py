"""Invoke through real boto3: results, Event/DryRun, logs, concurrency, context, warm reuse."""

from __future__ import annotations

import base64
import json
import math
import re
import threading
import urllib.request
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from faas_support import (
    ARN_PREFIX,
    REGION,
    SERVER_CANARY,
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

pytestmark = pytest.mark.timeout(120)

ECHO = """
import os

def handler(event, context):
    return {"event": event, "pid": os.getpid(), "request_id": context.aws_request_id}
"""

MARKER = """
import os
from pathlib import Path

def handler(event, context):
    Path(os.environ["MARKER_DIR"], event["id"]).write_text(context.aws_request_id)
    return {"ok": True}
"""

LOGGING = """
import logging

def handler(event, context):
    print("handler says hi")
    logging.getLogger().warning("a warning from %s", "logging")
    return "done"
"""

# Writes "start"/"end" records with O_APPEND so every record lands whole and in order.
SERIALISED = """
import os
import time

def _record(kind, context):
    line = f"{kind} {os.getpid()} {time.monotonic_ns()} {context.aws_request_id}\\n"
    fd = os.open(os.environ["TRACE_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)

def handler(event, context):
    _record("start", context)
    time.sleep(0.05)
    _record("end", context)
    return {"echo": event, "pid": os.getpid(), "request_id": context.aws_request_id}
"""

CONTEXT = """
import os

ENV_KEYS = [
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_EXECUTION_ENV", "LAMBDA_TASK_ROOT", "_HANDLER",
    "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME", "_X_AMZN_TRACE_ID", "USER_SETTING",
    "TZ", "LANG",
]

def handler(event, context):
    client_context = context.client_context
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "identity": [context.identity.cognito_identity_id,
                     context.identity.cognito_identity_pool_id],
        "client_context": None if client_context is None else {
            "custom": client_context.custom,
            "env": client_context.env,
            "installation_id": None if client_context.client is None
            else client_context.client.installation_id,
        },
        "env": {key: os.environ.get(key) for key in ENV_KEYS},
        "private": sorted(key for key in os.environ if key.startswith("_FAAS_")),
        "canary": os.environ.get("CANARY_NAME"),
        "cwd": os.getcwd(),
        "task_root_files": sorted(os.listdir(os.environ["LAMBDA_TASK_ROOT"])),
    }
""".replace("CANARY_NAME", SERVER_CANARY)

FAILS_ON_DEMAND = """
def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail")
    return "fine"
"""

REPORT_COLD = (
    r"REPORT RequestId: {rid}\tDuration: (?P<duration>\d+\.\d\d) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\tMemory Size: {memory} MB\t"
    r"Max Memory Used: (?P<used>\d+) MB\tInit Duration: (?P<init>\d+\.\d\d) ms\t"
)
REPORT_WARM = (
    r"REPORT RequestId: {rid}\tDuration: (?P<duration>\d+\.\d\d) ms\t"
    r"Billed Duration: (?P<billed>\d+) ms\tMemory Size: {memory} MB\t"
    r"Max Memory Used: (?P<used>\d+) MB\t"
)
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    # 64 simultaneous cold starts share 2 cores here, so each Init gets a generous limit;
    # the Init limit itself is tested in test_runtimes.py.
    return make_module_server(init_timeout_s=60)


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


@pytest.fixture(scope="module")
def echo(client: Any) -> str:
    create_function(client, "inv-echo", ECHO)
    return "inv-echo"


def test_invoke_returns_the_handler_result(client: Any, echo: str) -> None:
    response, payload = invoke_json(client, echo, {"hello": ["world", 1, None]})
    assert response["StatusCode"] == 200
    assert response["ExecutedVersion"] == "$LATEST"
    assert "FunctionError" not in response
    assert "LogResult" not in response
    assert payload["event"] == {"hello": ["world", 1, None]}
    assert UUID.fullmatch(payload["request_id"])
    # The invocation's request id is the API request id (lambda-compat.md A.1).
    assert response["ResponseMetadata"]["RequestId"] == payload["request_id"]


def test_empty_payload_is_an_empty_object(client: Any, echo: str) -> None:
    response = client.invoke(FunctionName=echo)
    assert json.loads(response["Payload"].read())["event"] == {}


def test_qualified_latest_invoke(client: Any, echo: str) -> None:
    response, payload = invoke_json(client, echo, {"q": 1}, Qualifier="$LATEST")
    assert response["ExecutedVersion"] == "$LATEST"
    assert payload["event"] == {"q": 1}


def test_dry_run_and_event(client: Any, tmp_path: Path) -> None:
    create_function(
        client,
        "inv-marker",
        MARKER,
        Environment={"Variables": {"MARKER_DIR": str(tmp_path)}},
    )
    dry = client.invoke(
        FunctionName="inv-marker", InvocationType="DryRun", Payload=b'{"id": "dry"}'
    )
    assert dry["StatusCode"] == 204
    assert dry["Payload"].read() == b""

    event = client.invoke(
        FunctionName="inv-marker", InvocationType="Event", Payload=b'{"id": "event"}'
    )
    assert event["StatusCode"] == 202
    assert event["Payload"].read() == b""
    marker = tmp_path / "event"
    wait_until(marker.exists, 20, what="the Event invocation to run")
    assert marker.read_text() == event["ResponseMetadata"]["RequestId"]
    assert not (tmp_path / "dry").exists(), "DryRun must not run the function"


def _decoded_log(response: dict[str, Any]) -> str:
    return base64.b64decode(response["LogResult"]).decode()


def test_log_tail_has_lambda_platform_lines(client: Any) -> None:
    create_function(client, "inv-logs", LOGGING, MemorySize=192)
    cold = client.invoke(FunctionName="inv-logs", Payload=b"{}", LogType="Tail")
    assert json.loads(cold["Payload"].read()) == "done"
    rid = cold["ResponseMetadata"]["RequestId"]
    lines = _decoded_log(cold).splitlines()
    start = lines.index(f"START RequestId: {rid} Version: $LATEST")
    end = lines.index(f"END RequestId: {rid}")
    assert start < lines.index("handler says hi") < end
    warning = [line for line in lines[start:end] if line.startswith("[WARNING]")]
    assert len(warning) == 1
    assert re.fullmatch(
        rf"\[WARNING\]\t\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z\t{rid}\ta warning from logging",
        warning[0],
    ), warning[0]
    assert end == len(lines) - 2
    report = re.fullmatch(REPORT_COLD.format(rid=rid, memory=192), lines[-1])
    assert report, lines[-1]
    assert int(report["billed"]) == max(1, math.ceil(float(report["duration"])))
    assert int(report["used"]) >= 1
    assert float(report["init"]) > 0

    warm = client.invoke(FunctionName="inv-logs", Payload=b"{}", LogType="Tail")
    warm_rid = warm["ResponseMetadata"]["RequestId"]
    warm_lines = _decoded_log(warm).splitlines()
    assert warm_lines[0] == f"START RequestId: {warm_rid} Version: $LATEST"
    assert warm_lines[-2] == f"END RequestId: {warm_rid}"
    assert rid not in _decoded_log(warm), "the tail must hold only this invocation's log"
    assert re.fullmatch(REPORT_WARM.format(rid=warm_rid, memory=192), warm_lines[-1]), warm_lines[
        -1
    ]
    assert "Init Duration" not in _decoded_log(warm)


@pytest.mark.parametrize("handler", ["pkg.sub.mod.handler", "pkg/sub/mod.handler"])
def test_handler_in_a_package(client: Any, handler: str) -> None:
    name = "inv-package-" + ("dots" if "/" not in handler else "slashes")
    files: dict[str, str | bytes] = {
        "pkg/__init__.py": "",
        "pkg/sub/__init__.py": "",
        "pkg/sub/helper.py": "WHO = 'helper'\n",
        "pkg/sub/mod.py": "from pkg.sub import helper\n\n"
        "def handler(event, context):\n    return {'who': helper.WHO, 'event': event}\n",
    }
    create_function(client, name, files, handler=handler)
    assert invoke_json(client, name, {"x": 1})[1] == {"who": "helper", "event": {"x": 1}}


# -- concurrency ---------------------------------------------------------------------------

CONCURRENCY = 64


@pytest.fixture(scope="module")
def concurrent_run(
    server: FaasServer, client: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """64 simultaneous invokes, one client per thread; the responses and the trace file."""
    trace_file = tmp_path_factory.mktemp("trace") / "trace.log"
    create_function(
        client,
        "inv-concurrent",
        SERIALISED,
        Timeout=60,
        Environment={"Variables": {"TRACE_FILE": str(trace_file)}},
    )
    session = boto3.session.Session()
    clients = [
        session.client(
            "lambda",
            endpoint_url=server.url,
            region_name=REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(
                retries={"max_attempts": 1}, read_timeout=120, max_pool_connections=CONCURRENCY
            ),
        )
        for _ in range(CONCURRENCY)
    ]
    barrier = threading.Barrier(CONCURRENCY)
    events = [{"index": index, "nonce": uuid.uuid4().hex} for index in range(CONCURRENCY)]

    def call(index: int) -> tuple[dict[str, Any], Any]:
        barrier.wait(30)
        response = clients[index].invoke(
            FunctionName="inv-concurrent", Payload=json.dumps(events[index]).encode()
        )
        return response, json.loads(response["Payload"].read())

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(call, range(CONCURRENCY)))
    return {"events": events, "results": results, "trace": trace_file.read_text()}


def test_concurrent_invokes_get_their_own_responses(concurrent_run: dict[str, Any]) -> None:
    request_ids = set()
    for event, (response, payload) in zip(
        concurrent_run["events"], concurrent_run["results"], strict=True
    ):
        assert response["StatusCode"] == 200
        assert "FunctionError" not in response, payload
        assert payload["echo"] == event
        assert payload["request_id"] == response["ResponseMetadata"]["RequestId"]
        request_ids.add(payload["request_id"])
    assert len(request_ids) == CONCURRENCY


def test_an_environment_runs_one_invocation_at_a_time(concurrent_run: dict[str, Any]) -> None:
    records = [line.split() for line in concurrent_run["trace"].splitlines()]
    succeeded = {
        payload["request_id"]: payload["pid"]
        for response, payload in concurrent_run["results"]
        if "FunctionError" not in response
    }
    assert succeeded, "no invocation succeeded"
    # Every successful invocation left exactly its two records (failed ones may leave none).
    assert len(records) == 2 * len(succeeded)
    by_pid: dict[int, list[tuple[str, int, str]]] = defaultdict(list)
    for kind, pid, stamp, request_id in records:
        by_pid[int(pid)].append((kind, int(stamp), request_id))
    for pid, entries in by_pid.items():
        # In append order, one environment's records must alternate start/end of one request.
        previous_end = -1
        for index in range(0, len(entries), 2):
            (kind_a, start, rid_a), (kind_b, end, rid_b) = entries[index : index + 2]
            assert (kind_a, kind_b) == ("start", "end"), f"pid {pid} overlapped: {entries}"
            assert rid_a == rid_b, f"pid {pid} interleaved two invocations: {entries}"
            assert previous_end <= start < end, f"pid {pid} intervals overlap: {entries}"
            previous_end = end
            assert succeeded[rid_a] == pid


# -- context object ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context_function(client: Any) -> str:
    create_function(
        client,
        "inv-context",
        CONTEXT,
        MemorySize=256,
        Timeout=7,
        Environment={"Variables": {"USER_SETTING": "from-config"}},
    )
    return "inv-context"


def test_context_and_environment_variables(client: Any, context_function: str) -> None:
    name = context_function
    response, ctx = invoke_json(client, name, {})
    assert ctx["aws_request_id"] == response["ResponseMetadata"]["RequestId"]
    assert ctx["function_name"] == name
    assert ctx["function_version"] == "$LATEST"
    assert ctx["invoked_function_arn"] == f"{ARN_PREFIX}{name}"
    assert ctx["memory_limit_in_mb"] == "256"
    assert ctx["log_group_name"] == f"/aws/lambda/{name}"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", ctx["log_stream_name"])
    assert ctx["identity"] == [None, None]
    assert ctx["client_context"] is None

    env = ctx["env"]
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == name
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "256"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_REGION"] == REGION
    assert env["AWS_DEFAULT_REGION"] == REGION
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
    assert env["_HANDLER"] == "app.handler"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{name}"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == ctx["log_stream_name"]
    assert env["USER_SETTING"] == "from-config"
    assert env["LANG"] == "en_US.UTF-8"
    assert re.fullmatch(r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=[01]",
                        env["_X_AMZN_TRACE_ID"] or ""), env["_X_AMZN_TRACE_ID"]  # fmt: skip
    assert Path(env["LAMBDA_TASK_ROOT"]).resolve() == Path(ctx["cwd"]).resolve()
    assert "app.py" in ctx["task_root_files"]
    assert ctx["private"] == [], "the runtime's own _FAAS_* settings must be hidden"
    assert ctx["canary"] is None, "the server's environment leaked into the function"

    _, qualified = invoke_json(client, name, {}, Qualifier="$LATEST")
    assert qualified["invoked_function_arn"] == f"{ARN_PREFIX}{name}:$LATEST"
    assert qualified["log_stream_name"] == ctx["log_stream_name"], "a warm environment is reused"


def test_remaining_time_is_within_the_timeout(client: Any, context_function: str) -> None:
    for _ in range(2):  # cold or warm, the deadline is the function's timeout from now
        _, ctx = invoke_json(client, context_function, {})
        assert 5000 < ctx["remaining_ms"] <= 7000


def test_client_context_reaches_the_handler(client: Any, context_function: str) -> None:
    custom = {"customer": "c-42", "nested": {"list": [1, 2]}}
    client_context = {
        "custom": custom,
        "env": {"platform": "tests"},
        "client": {"installation_id": "install-1", "app_title": "faas tests"},
    }
    encoded = base64.b64encode(json.dumps(client_context).encode()).decode()
    _, ctx = invoke_json(client, context_function, {}, ClientContext=encoded)
    assert ctx["client_context"] == {
        "custom": custom,
        "env": {"platform": "tests"},
        "installation_id": "install-1",
    }


# -- warm reuse ----------------------------------------------------------------------------


def test_warm_environment_is_reused_until_the_code_changes(client: Any) -> None:
    name = "inv-warm"
    create_function(client, name, ECHO)
    _, first = invoke_json(client, name, {"n": 1})
    _, second = invoke_json(client, name, {"n": 2})
    assert first["pid"] == second["pid"]
    old_environment = capture_process(second["pid"])

    client.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": ECHO + "\n#2\n"}))
    _, third = invoke_json(client, name, {"n": 3})
    assert third["pid"] != second["pid"]
    wait_until(lambda: process_is_gone(old_environment), 10, what="the retired environment")

    _, fourth = invoke_json(client, name, {"n": 4})
    assert fourth["pid"] == third["pid"]
    client.update_function_configuration(FunctionName=name, Description="changed")
    _, fifth = invoke_json(client, name, {"n": 5})
    assert fifth["pid"] != fourth["pid"], "a configuration change retires warm environments"


# -- operational endpoints -----------------------------------------------------------------


def _metric_samples(text: str, metric: str) -> dict[frozenset[tuple[str, str]], float]:
    samples = {}
    for line in text.splitlines():
        match = re.fullmatch(rf"{metric}\{{(?P<labels>[^}}]*)\}} (?P<value>\S+)", line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
            samples[labels] = float(match["value"])
    return samples


def test_metrics_count_invocations(server: FaasServer, client: Any) -> None:
    name = "inv-metrics"
    create_function(client, name, FAILS_ON_DEMAND)
    for event in ({}, {}, {"fail": True}):
        invoke_json(client, name, event)
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    labels = frozenset({("function", name), ("version", "$LATEST"), ("alias", "")})
    assert _metric_samples(text, "faas_invocations_total")[labels] == 3
    assert _metric_samples(text, "faas_errors_total")[labels] == 1
    assert "# TYPE faas_invocations_total counter" in text


def test_healthz(server: FaasServer) -> None:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as response:
        assert response.status == 200


def test_simultaneous_cold_starts_all_initialise(server: FaasServer, client: Any) -> None:
    """Many environments starting at once: every one must finish Init, none time out."""
    name = "inv-cold-burst"
    create_function(client, name, ECHO)
    clients = [lambda_client(server) for _ in range(32)]
    failures = []
    for round_index in range(3):
        # A configuration change retires the warm set, so every invoke below is a cold start.
        client.update_function_configuration(FunctionName=name, Description=f"round {round_index}")
        barrier = threading.Barrier(len(clients))

        def call(index: int, barrier: threading.Barrier = barrier) -> Any:
            barrier.wait(30)
            return invoke_json(clients[index], name, {"index": index})

        with ThreadPoolExecutor(len(clients)) as pool:
            for response, payload in pool.map(call, range(len(clients))):
                if "FunctionError" in response:
                    failures.append((round_index, payload))
        if failures:
            break  # each failed Init costs the init timeout; one failing round is enough
    assert not failures, f"{len(failures)} of {3 * len(clients)} cold starts failed: {failures[:3]}"
