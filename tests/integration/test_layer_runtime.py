"""What a handler finds from its layers at /opt, and external extensions from a layer."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faas_support import ROLE, FaasServer, ServerFactory, lambda_client, make_zip, wait_until


def publish(client: Any, name: str, files: dict[str, tuple[str, int]]) -> str:
    response = client.publish_layer_version(LayerName=name, Content={"ZipFile": make_zip(files)})
    return str(response["LayerVersionArn"])


def invoke(client: Any, name: str, event: Any = None) -> tuple[dict[str, Any], Any]:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode())
    return response, json.loads(response["Payload"].read())


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Iterator[FaasServer]:
    yield make_module_server()


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


HANDLER = """
import os, subprocess
import shared_helper

def handler(event, context):
    tool = subprocess.run(["layer-tool"], capture_output=True, text=True)
    try:
        open("/opt/python/new-file", "w").write("x")
        opt_writable = True
    except OSError:
        opt_writable = False
    return {"helper": shared_helper.VALUE, "which": shared_helper.__file__,
            "tool": tool.stdout.strip(), "opt_writable": opt_writable}
"""


def test_python_modules_and_binaries_from_layers_later_layer_wins(client: Any) -> None:
    first = publish(client, "lr-base", {
        "python/shared_helper.py": ("VALUE = 'from the first layer'\n", 0o644),
        "bin/layer-tool": ("#!/bin/sh\necho first tool\n", 0o755),
    })  # fmt: skip
    second = publish(client, "lr-override", {
        "python/shared_helper.py": ("VALUE = 'from the second layer'\n", 0o644),
    })  # fmt: skip
    client.create_function(
        FunctionName="layered", Runtime="python3.12", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": (HANDLER, 0o644)})}, Layers=[first, second],
    )  # fmt: skip
    response, body = invoke(client, "layered")
    assert response.get("FunctionError") is None, body
    assert body["helper"] == "from the second layer"
    assert body["which"].endswith("python/shared_helper.py")
    assert body["tool"] == "first tool"
    assert body["opt_writable"] is False


def test_bootstrap_from_a_layer(client: Any) -> None:
    runtime_layer = publish(client, "lr-runtime", {
        "bootstrap": (
            "#!/bin/bash\n"
            'API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"\n'
            "while true; do H=$(mktemp); curl -sS -D $H $API/invocation/next >/dev/null;"
            " ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id $H | tr -d '[:space:]' | cut -d: -f2);"
            " curl -sS -X POST $API/invocation/$ID/response -d '\"layer runtime\"' >/dev/null;"
            " done\n",
            0o755,
        ),
    })  # fmt: skip
    client.create_function(
        FunctionName="layer-runtime", Runtime="provided.al2023", Role=ROLE, Handler="x",
        Code={"ZipFile": make_zip({"README": ("code without a bootstrap", 0o644)})},
        Layers=[runtime_layer],
    )  # fmt: skip
    assert invoke(client, "layer-runtime")[1] == "layer runtime"


EXTENSION = """#!{python}
import json, os, sys, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2020-01-01/extension"
log_path = os.path.join(os.environ["EXTENSION_LOG_DIR"], "events.jsonl")
request = urllib.request.Request(api + "/register", data=json.dumps(
    {{"events": ["INVOKE", "SHUTDOWN"]}}).encode(), headers={{"Lambda-Extension-Name": "logger"}})
with urllib.request.urlopen(request) as response:
    identifier = response.headers["Lambda-Extension-Identifier"]
    registered = json.loads(response.read())
with open(log_path, "a") as log:
    seen = {{"registered": registered, "handler_env": "_HANDLER" in os.environ}}
    log.write(json.dumps(seen) + "\\n")
while True:
    request = urllib.request.Request(api + "/event/next",
                                     headers={{"Lambda-Extension-Identifier": identifier}})
    with urllib.request.urlopen(request) as response:
        event = json.loads(response.read())
    with open(log_path, "a") as log:
        log.write(json.dumps(event) + "\\n")
    if event["eventType"] == "SHUTDOWN":
        sys.exit(0)
"""


def _events(directory: Path) -> list[dict[str, Any]]:
    path = directory / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_external_extension_gets_invoke_and_shutdown_events(client: Any, tmp_path: Path) -> None:
    extension = EXTENSION.format(python=sys.executable)
    layer = publish(client, "lr-extension", {"extensions/logger": (extension, 0o755)})
    client.create_function(
        FunctionName="with-extension", Runtime="python3.12", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": ("def handler(e, c):\n    return 'ran'\n", 0o644)})},
        Layers=[layer], Environment={"Variables": {"EXTENSION_LOG_DIR": str(tmp_path)}},
    )  # fmt: skip
    first, body = invoke(client, "with-extension")
    assert body == "ran"
    second, _ = invoke(client, "with-extension")

    def invokes() -> list[dict[str, Any]]:
        return [e for e in _events(tmp_path) if e.get("eventType") == "INVOKE"]

    wait_until(lambda: len(invokes()) >= 2, 10, what="two INVOKE events")
    registered = next(e for e in _events(tmp_path) if "registered" in e)
    assert registered["registered"]["functionName"] == "with-extension"
    assert registered["registered"]["handler"] == "app.handler"
    assert registered["handler_env"] is False
    assert sorted(event["requestId"] for event in invokes()) == sorted(
        [first["ResponseMetadata"]["RequestId"], second["ResponseMetadata"]["RequestId"]]
    )
    assert invokes()[0]["deadlineMs"] > time.time() * 1000 - 60_000
    # A configuration change retires the environment: its extension hears SHUTDOWN (spindown).
    client.update_function_configuration(FunctionName="with-extension", Description="v2")
    wait_until(
        lambda: any(e.get("eventType") == "SHUTDOWN" for e in _events(tmp_path)), 10,
        what="the SHUTDOWN event",
    )  # fmt: skip
    shutdown = next(e for e in _events(tmp_path) if e.get("eventType") == "SHUTDOWN")
    assert shutdown["shutdownReason"] == "spindown"


def test_extension_that_never_registers_fails_init(client: Any) -> None:
    layer = publish(client, "lr-silent", {"extensions/silent": ("#!/bin/sh\nsleep 60\n", 0o755)})
    client.create_function(
        FunctionName="silent-extension", Runtime="python3.12", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": ("def handler(e, c):\n    return 1\n", 0o644)})},
        Layers=[layer],
    )  # fmt: skip
    response, body = invoke(client, "silent-extension")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"].startswith("Extension.")


def test_extension_hears_timeout_as_the_shutdown_reason(client: Any, tmp_path: Path) -> None:
    layer = publish(
        client, "lr-extension-timeout",
        {"extensions/logger": (EXTENSION.format(python=sys.executable), 0o755)},
    )  # fmt: skip
    sleeper = "import time\ndef handler(e, c):\n    time.sleep(5)\n"
    client.create_function(
        FunctionName="extension-timeout", Runtime="python3.12", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": (sleeper, 0o644)})}, Timeout=1,
        Layers=[layer], Environment={"Variables": {"EXTENSION_LOG_DIR": str(tmp_path)}},
    )  # fmt: skip
    _, body = invoke(client, "extension-timeout")
    assert "Task timed out" in body["errorMessage"]
    wait_until(
        lambda: any(e.get("eventType") == "SHUTDOWN" for e in _events(tmp_path)), 10,
        what="the SHUTDOWN event",
    )  # fmt: skip
    shutdown = next(e for e in _events(tmp_path) if e.get("eventType") == "SHUTDOWN")
    assert shutdown["shutdownReason"] == "timeout"


def test_extension_hears_failure_when_the_runtime_crashes(client: Any, tmp_path: Path) -> None:
    layer = publish(
        client, "lr-extension-failure",
        {"extensions/logger": (EXTENSION.format(python=sys.executable), 0o755)},
    )  # fmt: skip
    crasher = "import os\ndef handler(e, c):\n    os._exit(2)\n"
    client.create_function(
        FunctionName="extension-failure", Runtime="python3.12", Role=ROLE, Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": (crasher, 0o644)})},
        Layers=[layer], Environment={"Variables": {"EXTENSION_LOG_DIR": str(tmp_path)}},
    )  # fmt: skip
    _, body = invoke(client, "extension-failure")
    assert body["errorType"] == "Runtime.ExitError"
    wait_until(
        lambda: any(e.get("eventType") == "SHUTDOWN" for e in _events(tmp_path)), 10,
        what="the SHUTDOWN event",
    )  # fmt: skip
    shutdown = next(e for e in _events(tmp_path) if e.get("eventType") == "SHUTDOWN")
    assert shutdown["shutdownReason"] == "failure"
