"""Python environments forked from the zygote behave as exec'd ones do, through the real server.

Every test here checks what a handler can see or suffer (variables, /tmp, /opt, limits,
timeouts, errors, randomness) and that the environment was indeed forked: its parent is
the server's zygote. A server that does not start the zygote skips them.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from faas_support import (
    ROLE,
    SERVER_CANARY,
    FaasServer,
    ServerFactory,
    create_function,
    lambda_client,
    make_zip,
    process_is_gone,
    wait_until,
)

ZYGOTE_MODULE = "faas_python_runtime.zygote"

# Writes (and removes) 600 MB under /tmp on every invoke: its functions get Timeout=20, as a
# slow disk takes seconds.
PROBE = """
import os, random, resource, sys
def handler(event, context):
    if event.get("write"):
        with open("/tmp/secret", "w") as f:
            f.write(event["write"])
    try:
        seen = open("/tmp/secret").read()
    except FileNotFoundError:
        seen = None
    try:
        with open("/tmp/too-big", "wb") as f:
            f.write(b"x" * (600 * 1024 * 1024))
        too_big = "written"
    except OSError as exc:
        too_big = exc.strerror
    finally:
        if os.path.exists("/tmp/too-big"):
            os.remove("/tmp/too-big")
    return {"pid": os.getpid(), "ppid": os.getppid(), "env": dict(os.environ), "seen": seen,
            "too_big": too_big, "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
            "random": random.random(), "argv": sys.orig_argv}
"""


def zygote_pids(server: FaasServer) -> list[int]:
    """The server's zygote (normally one)."""
    found = []
    for child in psutil.Process(server.pid).children():
        try:
            if ZYGOTE_MODULE in child.cmdline():
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for_zygote(server: FaasServer) -> None:
    wait_until(lambda: zygote_pids(server), 5,
               what="a zygote (without one, environments would all be exec'd)")  # fmt: skip


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Iterator[FaasServer]:
    started = make_module_server()
    wait_for_zygote(started)
    yield started


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


def invoke(client: Any, name: str, event: Any = None, **members: Any) -> tuple[dict[str, Any], Any]:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **members)
    return response, json.loads(response["Payload"].read())


def test_environments_are_forked_and_see_lambdas_variables(client: Any, server: FaasServer) -> None:
    create_function(client, "fk-env", PROBE, MemorySize=1024, Timeout=20,
                    Environment={"Variables": {"GREETING": "hello"}})  # fmt: skip
    _, body = invoke(client, "fk-env")
    assert body["ppid"] in zygote_pids(server)
    env = body["env"]
    assert env["GREETING"] == "hello"
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "fk-env"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "1024"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
    assert env["LAMBDA_TASK_ROOT"] == env["PWD"]
    assert SERVER_CANARY not in env
    assert not any(name.startswith("_FAAS_") for name in env)
    assert body["argv"][-3:] == ["-S", "-m", "faas_python_runtime"]
    shown = psutil.Process(body["pid"])
    assert shown.cmdline()[-1] == "faas_python_runtime"
    assert shown.environ()["AWS_LAMBDA_FUNCTION_NAME"] == "fk-env"


def test_tmp_is_private_per_environment_with_lambdas_limits(client: Any) -> None:
    create_function(client, "fk-tmp-a", PROBE, MemorySize=1024, Timeout=20)
    create_function(client, "fk-tmp-b", PROBE, MemorySize=1024, Timeout=20)
    assert invoke(client, "fk-tmp-a", {"write": "alpha"})[1]["seen"] == "alpha"
    _, body = invoke(client, "fk-tmp-b")
    assert body["seen"] is None  # another environment's /tmp is not visible
    assert body["too_big"] == "File too large"  # no file beyond EphemeralStorage (512 MB)
    assert body["nofile"] == [1024, 1024]
    assert invoke(client, "fk-tmp-a")[1]["seen"] == "alpha"  # kept across warm invokes
    assert not os.path.exists("/tmp/secret")  # never the host's /tmp


def test_two_environments_draw_different_random_numbers(client: Any) -> None:
    create_function(client, "fk-rand-a", PROBE, MemorySize=1024, Timeout=20)
    create_function(client, "fk-rand-b", PROBE, MemorySize=1024, Timeout=20)
    assert invoke(client, "fk-rand-a")[1]["random"] != invoke(client, "fk-rand-b")[1]["random"]


LAYER_HANDLER = """
import os
import layer_helper
def handler(event, context):
    try:
        open("/opt/python/new-file", "w").write("x")
        opt_writable = True
    except OSError:
        opt_writable = False
    return {"helper": layer_helper.VALUE, "opt_writable": opt_writable, "ppid": os.getppid(),
            "libs": sorted(os.listdir("/opt/lib")) if os.path.isdir("/opt/lib") else None}
"""


def test_layers_are_on_opt_read_only(client: Any, server: FaasServer) -> None:
    layer = client.publish_layer_version(
        LayerName="fk-layer",
        Content={"ZipFile": make_zip({"python/layer_helper.py": "VALUE = 'from a layer'\n"})},
    )["LayerVersionArn"]
    create_function(client, "fk-layered", LAYER_HANDLER, Layers=[layer])
    response, body = invoke(client, "fk-layered")
    assert response.get("FunctionError") is None, body
    assert body == {"helper": "from a layer", "opt_writable": False,
                    "ppid": body["ppid"], "libs": None}  # fmt: skip
    assert body["ppid"] in zygote_pids(server)


def test_a_layer_with_native_libraries_is_execd(client: Any, server: FaasServer) -> None:
    """The dynamic loader of a fork would never search the layer's lib/: exec instead."""
    layer = client.publish_layer_version(
        LayerName="fk-native",
        Content={"ZipFile": make_zip({"python/layer_helper.py": "VALUE = 'native'\n",
                                      "lib/libnothing.so.txt": "not a library\n"})},
    )["LayerVersionArn"]  # fmt: skip
    create_function(client, "fk-native", LAYER_HANDLER, Layers=[layer])
    _, body = invoke(client, "fk-native")
    assert body["helper"] == "native" and body["libs"] == ["libnothing.so.txt"]
    assert body["ppid"] == server.pid


def test_a_start_up_only_python_variable_is_execd(client: Any, server: FaasServer) -> None:
    create_function(client, "fk-warnings", PROBE, MemorySize=1024, Timeout=20,
                    Environment={"Variables": {"PYTHONWARNINGS": "ignore"}})  # fmt: skip
    _, body = invoke(client, "fk-warnings")
    assert body["ppid"] == server.pid
    assert body["env"]["PYTHONWARNINGS"] == "ignore"


HOG = """
import os
def handler(event, context):
    blocks = [bytearray(8 * 1024 * 1024) for _ in range(event.get("mb", 0) // 8)]
    return {"ppid": os.getppid(), "held_mb": len(blocks) * 8}
"""


def test_memory_past_memory_size_is_killed(client: Any, server: FaasServer) -> None:
    create_function(client, "fk-hog", HOG, MemorySize=128, Timeout=20)
    response, body = invoke(client, "fk-hog", {"mb": 400}, LogType="Tail")
    assert body["errorType"] == "Runtime.OutOfMemory"
    report = base64.b64decode(response["LogResult"]).decode().rstrip().splitlines()[-1]
    assert "Status: error\tError Type: Runtime.OutOfMemory" in report
    response, body = invoke(client, "fk-hog", {"mb": 16})
    assert body["held_mb"] == 16 and body["ppid"] in zygote_pids(server)


SLEEPER = """
import os, time
def handler(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}
"""


def test_a_timeout_kills_the_environment(client: Any) -> None:
    create_function(client, "fk-sleep", SLEEPER, Timeout=1)
    first = invoke(client, "fk-sleep")[1]["pid"]
    _, body = invoke(client, "fk-sleep", {"sleep": 5})
    assert "Task timed out after 1." in body["errorMessage"]
    wait_until(lambda: not psutil.pid_exists(first) or process_is_gone(psutil.Process(first)),
               10, what="the timed-out environment to be killed")  # fmt: skip
    assert invoke(client, "fk-sleep")[1]["pid"] != first


@pytest.mark.parametrize(
    ("source", "error_type"),
    [("import not_a_module\n", "Runtime.ImportModuleError"),
     ("def handler(:\n", "Runtime.UserCodeSyntaxError"),
     ("x = 1\n", "Runtime.HandlerNotFound")],
)  # fmt: skip
def test_init_errors_are_reported_as_lambda_does(client: Any, source: str, error_type: str) -> None:
    name = f"fk-init-{error_type.split('.')[-1].lower()}"
    create_function(client, name, source)
    response, body = invoke(client, name)
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == error_type


def test_a_killed_zygote_is_replaced(client: Any, server: FaasServer) -> None:
    create_function(client, "fk-zygote-dies", SLEEPER)
    before = invoke(client, "fk-zygote-dies")[1]["pid"]
    old = zygote_pids(server)
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not psutil.pid_exists(before) or process_is_gone(psutil.Process(before)),
               10, what="the environment to die with its zygote")  # fmt: skip
    response, body = invoke(client, "fk-zygote-dies")
    assert response.get("FunctionError") is None, body
    assert body["pid"] != before
    new = zygote_pids(server)
    assert new and not set(new) & set(old)


def test_killing_the_server_leaves_no_process_behind(make_server: ServerFactory) -> None:
    node = make_server()
    wait_for_zygote(node)
    client = lambda_client(node)
    client.create_function(
        FunctionName="fk-orphans",
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": SLEEPER})},
    )
    invoke(client, "fk-orphans")
    tree = psutil.Process(node.pid).children(recursive=True)
    assert any(ZYGOTE_MODULE in " ".join(p.cmdline()) for p in tree)
    node.kill()
    wait_until(lambda: all(process_is_gone(p) for p in tree), 10,
               what="every process of the server to end")  # fmt: skip
