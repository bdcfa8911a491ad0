"""Limits enforced by the kernel: memory, pids, private /tmp, rlimits, the environment's tree."""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from faas_support import (
    ROLE,
    FaasServer,
    ServerFactory,
    create_function,
    lambda_client,
    wait_until,
)

needs_cgroups = pytest.mark.skipif(
    not os.path.isdir("/sys/fs/cgroup/memory")
    and not os.path.isfile("/sys/fs/cgroup/cgroup.controllers"),
    reason="no cgroup hierarchy on this machine",
)


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> Iterator[FaasServer]:
    yield make_module_server()


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


def invoke(client: Any, name: str, event: Any = None, **members: Any) -> tuple[dict[str, Any], Any]:
    response = client.invoke(FunctionName=name, Payload=json.dumps(event or {}).encode(), **members)
    return response, json.loads(response["Payload"].read())


HOG = """
import os
def handler(event, context):
    blocks = []
    for _ in range(event.get("mb", 0) // 8):
        blocks.append(bytearray(8 * 1024 * 1024))
    return {"pid": os.getpid(), "held_mb": len(blocks) * 8}
"""


@needs_cgroups
def test_memory_hog_is_killed_and_reported_then_the_next_invoke_succeeds(client: Any) -> None:
    create_function(client, "hog", HOG, MemorySize=128, Timeout=20)
    response, body = invoke(client, "hog", {"mb": 400}, LogType="Tail")
    assert response["FunctionError"] == "Unhandled"
    assert body["errorType"] == "Runtime.OutOfMemory"
    assert "Runtime exited with error: signal: killed" in body["errorMessage"]
    report = base64.b64decode(response["LogResult"]).decode().rstrip().splitlines()[-1]
    assert "Status: error\tError Type: Runtime.OutOfMemory" in report
    response, body = invoke(client, "hog", {"mb": 16}, LogType="Tail")
    assert response.get("FunctionError") is None
    assert body["held_mb"] == 16
    report = base64.b64decode(response["LogResult"]).decode().rstrip().splitlines()[-1]
    used = int(re.search(r"Max Memory Used: (\d+) MB", report).group(1))  # type: ignore[union-attr]
    assert 16 < used <= 128


FORK_BOMB = """
import os, time
def handler(event, context):
    children = 0
    try:
        for _ in range(5000):
            if os.fork() == 0:
                time.sleep(30)
                os._exit(0)
            children += 1
    except OSError as exc:
        return {"children": children, "stopped_by": exc.strerror}
    return {"children": children, "stopped_by": None}
"""


@needs_cgroups
def test_fork_bomb_is_stopped_by_the_pids_limit(client: Any) -> None:
    create_function(client, "forker", FORK_BOMB, MemorySize=1024, Timeout=30)
    response, body = invoke(client, "forker")
    assert response.get("FunctionError") is None
    assert body["stopped_by"] is not None
    assert body["children"] < 1024
    client.update_function_configuration(FunctionName="forker", Description="retire it")
    # Retiring the environment kills every process of its tree.
    assert invoke(client, "forker")[1]["stopped_by"] is not None


ORPHAN = """
import os, subprocess
def handler(event, context):
    child = subprocess.Popen(["setsid", "sleep", "300"])
    with open(os.path.join(os.environ["WORK_DIR"], "child"), "w") as f:
        f.write(str(child.pid))
    os._exit(1)
"""


def test_children_that_escape_the_process_group_die_with_the_environment(
    client: Any, tmp_path: Any
) -> None:
    create_function(
        client, "orphaner", ORPHAN, Environment={"Variables": {"WORK_DIR": str(tmp_path)}}
    )
    _, body = invoke(client, "orphaner")
    assert body["errorType"] == "Runtime.ExitError"
    child_pid = int((tmp_path / "child").read_text())
    wait_until(
        lambda: (
            not psutil.pid_exists(child_pid)
            or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
        ),
        10,
        what="the setsid child to be killed",
    )


TMP = """
import os, resource
def handler(event, context):
    if event.get("write"):
        with open("/tmp/secret", "w") as f:
            f.write(event["write"])
    try:
        with open("/tmp/secret") as f:
            seen = f.read()
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
    return {"seen": seen, "too_big": too_big,
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}
"""


def test_tmp_is_private_per_environment_and_bounded(client: Any) -> None:
    create_function(client, "tmp-a", TMP, MemorySize=1024, Timeout=20)
    create_function(client, "tmp-b", TMP, MemorySize=1024, Timeout=20)
    assert invoke(client, "tmp-a", {"write": "alpha"})[1]["seen"] == "alpha"
    _, body = invoke(client, "tmp-b")
    assert body["seen"] is None  # another environment's /tmp is not visible
    assert body["too_big"] == "File too large"  # one file can't pass EphemeralStorage (512 MB)
    assert body["nofile"] == 1024
    assert invoke(client, "tmp-a")[1]["seen"] == "alpha"  # persists across warm invokes
    assert not os.path.exists("/tmp/secret")  # never the host's /tmp


ID_BOOTSTRAP = """#!/bin/bash
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  curl -sS -D "$HEADERS" "$API/invocation/next" > /dev/null
  ID=$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  curl -sS -X POST "$API/invocation/$ID/response" -d "{\\"uid\\": $(id -u), \\"gid\\": $(id -g)}"
done
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only a root node drops environments to a user")
def test_environments_run_as_an_unprivileged_user(make_server: ServerFactory) -> None:
    import io
    import shutil
    import tempfile
    import zipfile
    from pathlib import Path

    # A data directory the unprivileged user can traverse (pytest's own are 0700).
    root = Path(tempfile.mkdtemp(prefix="faas-users-", dir="/var/tmp"))
    try:
        root.chmod(0o755)
        server = make_server(data_dir=root / "data")
        client = lambda_client(server)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            info = zipfile.ZipInfo("bootstrap")
            info.external_attr = 0o755 << 16
            archive.writestr(info, ID_BOOTSTRAP)
        client.create_function(
            FunctionName="who", Runtime="provided.al2023", Role=ROLE, Handler="x",
            Code={"ZipFile": buffer.getvalue()},
        )  # fmt: skip
        _, body = invoke(client, "who")
        assert body == {"uid": 65534, "gid": 65534}  # nobody:nogroup
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


CPU_QUOTA_PROBE = """
import os

def cpu_limit():
    # (quota, period) in microseconds of this process's cgroup; quota -1 means unlimited.
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            quota, period = open(f"/sys/fs/cgroup{path}/cpu.max").read().split()
            return (-1 if quota == "max" else int(quota)), int(period)
        if "cpu" in controllers.split(","):
            base = "/sys/fs/cgroup/" + controllers
            if not os.path.isdir(base):
                base = "/sys/fs/cgroup/cpu"
            read = lambda name: int(open(f"{base}{path}/{name}").read())
            return read("cpu.cfs_quota_us"), read("cpu.cfs_period_us")

AT_INIT = cpu_limit()

def handler(event, context):
    return {"init": AT_INIT, "invoke": cpu_limit()}
"""


@needs_cgroups
def test_init_runs_unthrottled_and_invokes_at_the_memory_share(client: Any) -> None:
    create_function(client, "cpu-share-885", CPU_QUOTA_PROBE, MemorySize=885)

    def invoke_at_share() -> dict[str, Any] | None:
        _, body = invoke(client, "cpu-share-885")
        assert body["init"][0] == -1, f"Init ran with a CPU quota: {body}"
        return body if body["invoke"][0] != -1 else None

    body = wait_until(invoke_at_share, 10, what="the CPU share restored after Init")
    quota, period = body["invoke"]
    assert abs(quota / period - 885 / 1769) < 0.01
