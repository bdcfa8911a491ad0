"""Server lifecycle: restarts keep functions and queued events; stopping leaves no process."""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
from faas_support import (
    ServerFactory,
    capture_process,
    code_sha256,
    create_function,
    invoke_json,
    lambda_client,
    make_zip,
    process_is_gone,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)

VERSIONED = """
import os

def handler(event, context):
    return {{"version": "{version}", "pid": os.getpid(), "event": event}}
"""

# Records its pid and start, sleeps, then leaves a marker named after the event's id.
SLOW = """
import os
import time
from pathlib import Path

def handler(event, context):
    work = Path(os.environ["WORK_DIR"])
    (work / "started" / event["id"]).write_text(str(os.getpid()))
    time.sleep(event["seconds"])
    (work / "markers" / event["id"]).write_text(context.aws_request_id)
    return {"pid": os.getpid(), "id": event["id"]}
"""


def _work_dir(tmp_path: Path) -> Path:
    for sub in ("started", "markers"):
        (tmp_path / sub).mkdir(parents=True, exist_ok=True)
    return tmp_path


def _started_pids(work: Path) -> dict[str, int]:
    pids = {}
    for path in (work / "started").iterdir():
        text = path.read_text()
        if text:
            pids[path.name] = int(text)
    return pids


def _capture_all(pids: list[int]) -> list[psutil.Process]:
    captured = []
    for pid in pids:
        try:
            captured.append(capture_process(pid))
        except psutil.NoSuchProcess:
            pass  # already gone, which is what the callers check for
    return captured


@pytest.mark.parametrize("kill", [False, True], ids=["sigterm", "sigkill"])
def test_functions_survive_a_restart(make_server: ServerFactory, kill: bool) -> None:
    server = make_server()
    client = lambda_client(server)
    zips = {name: make_zip({"app.py": VERSIONED.format(version=name)}) for name in ("a", "b")}
    for name, zip_bytes in zips.items():
        client.create_function(
            FunctionName=f"keep-{name}",
            Runtime="python3.12",
            Role="arn:aws:iam::000000000000:role/faas-test",
            Handler="app.handler",
            Code={"ZipFile": zip_bytes},
            Timeout=9,
            MemorySize=160,
            Environment={"Variables": {"NAME": name}},
        )
        assert invoke_json(client, f"keep-{name}")[1]["version"] == name
    before = {name: client.get_function_configuration(FunctionName=f"keep-{name}") for name in zips}

    returncode = server.restart(kill=kill)
    assert returncode == (-signal.SIGKILL if kill else 0)

    client = lambda_client(server)
    listed = sorted(f["FunctionName"] for f in client.list_functions()["Functions"])
    assert listed == ["keep-a", "keep-b"]
    for name, zip_bytes in zips.items():
        after = client.get_function(FunctionName=f"keep-{name}")
        config = after["Configuration"]
        for member in ("CodeSha256", "CodeSize", "RevisionId", "Timeout", "MemorySize",
                       "Environment", "LastModified", "Handler", "Runtime"):  # fmt: skip
            assert config[member] == before[name][member], member
        assert config["CodeSha256"] == code_sha256(zip_bytes)
        with urllib.request.urlopen(after["Code"]["Location"], timeout=10) as download:
            assert download.read() == zip_bytes
        assert invoke_json(client, f"keep-{name}", {"n": 1})[1] == {
            "version": name,
            "pid": invoke_json(client, f"keep-{name}")[1]["pid"],
            "event": {"n": 1},
        }

    # Code replaced after a restart is what the next incarnation serves.
    client.update_function_code(
        FunctionName="keep-a", ZipFile=make_zip({"app.py": VERSIONED.format(version="a2")})
    )
    server.restart(kill=kill)
    client = lambda_client(server)
    assert invoke_json(client, "keep-a")[1]["version"] == "a2"
    assert invoke_json(client, "keep-b")[1]["version"] == "b"


@pytest.mark.timeout(150)
def test_event_accepted_before_sigkill_runs_after_restart(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    work = _work_dir(tmp_path)
    server = make_server()
    client = lambda_client(server)
    create_function(client, "idle-pid", VERSIONED.format(version="idle"))
    idle_pid = invoke_json(client, "idle-pid")[1]["pid"]
    create_function(
        client, "slow-event", SLOW, Timeout=60, Environment={"Variables": {"WORK_DIR": str(work)}}
    )
    ids = [f"event-{index}" for index in range(4)]
    request_ids = {}
    for event_id in ids:
        response = client.invoke(
            FunctionName="slow-event",
            InvocationType="Event",
            Payload=json.dumps({"id": event_id, "seconds": 5}).encode(),
        )
        assert response["StatusCode"] == 202
        request_ids[event_id] = response["ResponseMetadata"]["RequestId"]
    # Let the dispatcher start them (so there are busy environments to orphan), but kill
    # the server long before a 5 s handler can finish.
    try:
        wait_until(lambda: len(_started_pids(work)) == len(ids), 3, what="events to start")
    except AssertionError:
        pass  # kill anyway: the events are durable whether or not they started
    environments = _capture_all([idle_pid, *_started_pids(work).values()])
    server.kill()
    assert not list((work / "markers").iterdir()), "an event finished before the kill"

    for environment in environments:
        wait_until(
            functools.partial(process_is_gone, environment),
            10,
            what=f"environment {environment.pid} to die with its server",
        )
    assert not list((work / "markers").iterdir()), "an orphaned environment kept running"

    server.start()
    wait_until(
        lambda: all((work / "markers" / event_id).exists() for event_id in ids),
        45,
        what="every accepted event to run after the restart",
    )
    for event_id in ids:
        assert (work / "markers" / event_id).read_text() == request_ids[event_id]


def test_sigkill_takes_the_environments_with_it(make_server: ServerFactory, tmp_path: Path) -> None:
    work = _work_dir(tmp_path)
    server = make_server()
    client = lambda_client(server)
    create_function(client, "idle", VERSIONED.format(version="idle"))
    create_function(
        client, "busy", SLOW, Timeout=60, Environment={"Variables": {"WORK_DIR": str(work)}}
    )
    idle_pid = invoke_json(client, "idle")[1]["pid"]

    def busy_invoke() -> None:
        try:
            lambda_client(server).invoke(
                FunctionName="busy", Payload=json.dumps({"id": "busy", "seconds": 30}).encode()
            )
        except Exception:  # the server is killed under this call, so it must fail somehow
            pass

    caller = threading.Thread(target=busy_invoke, daemon=True)
    caller.start()
    busy_pid = wait_until(lambda: _started_pids(work).get("busy"), 15, what="the busy invoke")
    environments = _capture_all([idle_pid, busy_pid])
    assert len(environments) == 2
    server.kill()
    for environment in environments:
        wait_until(
            functools.partial(process_is_gone, environment),
            10,
            what=f"environment {environment.pid} to die with its server",
        )
    caller.join(30)


def test_sigterm_leaves_no_environment_behind(make_server: ServerFactory) -> None:
    server = make_server()
    client = lambda_client(server, max_pool_connections=8)
    create_function(client, "stay-a", VERSIONED.format(version="a"))
    create_function(
        client,
        "stay-b",
        "import os, time\n\ndef handler(event, context):\n"
        "    time.sleep(0.3)\n    return {'pid': os.getpid()}\n",
    )
    pids = {invoke_json(client, "stay-a")[1]["pid"]}
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: invoke_json(client, "stay-b")[1]["pid"], range(4)))
    pids.update(results)
    assert len(pids) >= 3, "expected several environments"
    environments = _capture_all(sorted(pids))
    assert len(environments) == len(pids)

    assert server.stop() == 0
    alive = [env.pid for env in environments if not process_is_gone(env)]
    assert not alive, f"environments outlived the server: {alive}"


def test_sigterm_drains_an_in_flight_invoke(make_server: ServerFactory, tmp_path: Path) -> None:
    work = _work_dir(tmp_path)
    server = make_server()
    client = lambda_client(server)
    create_function(
        client, "drain", SLOW, Timeout=30, Environment={"Variables": {"WORK_DIR": str(work)}}
    )
    with ThreadPoolExecutor(1) as pool:
        pending: Future[tuple[dict[str, Any], Any]] = pool.submit(
            invoke_json, lambda_client(server), "drain", {"id": "sync", "seconds": 1.5}
        )
        pid = wait_until(lambda: _started_pids(work).get("sync"), 15, what="the invoke to start")
        environment = capture_process(pid)
        stop_requested = time.monotonic()
        server.signal(signal.SIGTERM)
        response, payload = pending.result(timeout=60)
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response, payload
    assert payload == {"pid": pid, "id": "sync"}
    assert server.wait(60) == 0
    assert time.monotonic() - stop_requested < 30
    assert process_is_gone(environment)


def test_sigterm_drains_a_running_event(make_server: ServerFactory, tmp_path: Path) -> None:
    work = _work_dir(tmp_path)
    server = make_server()
    client = lambda_client(server)
    create_function(
        client, "drain-event", SLOW, Timeout=30, Environment={"Variables": {"WORK_DIR": str(work)}}
    )
    response = client.invoke(
        FunctionName="drain-event",
        InvocationType="Event",
        Payload=json.dumps({"id": "async", "seconds": 1.5}).encode(),
    )
    assert response["StatusCode"] == 202
    wait_until(lambda: _started_pids(work).get("async"), 15, what="the event to start")
    assert server.stop() == 0
    marker = work / "markers" / "async"
    assert marker.exists(), "a running event was cut off by a graceful stop"
    assert marker.read_text() == response["ResponseMetadata"]["RequestId"]


def test_second_sigterm_skips_the_drain(make_server: ServerFactory, tmp_path: Path) -> None:
    work = _work_dir(tmp_path)
    server = make_server()
    client = lambda_client(server)
    create_function(
        client, "stuck", SLOW, Timeout=120, Environment={"Variables": {"WORK_DIR": str(work)}}
    )

    def stuck_invoke() -> None:
        try:
            lambda_client(server).invoke(
                FunctionName="stuck", Payload=json.dumps({"id": "stuck", "seconds": 60}).encode()
            )
        except Exception:  # the server stops under this call
            pass

    caller = threading.Thread(target=stuck_invoke, daemon=True)
    caller.start()
    pid = wait_until(lambda: _started_pids(work).get("stuck"), 15, what="the invoke to start")
    environment = capture_process(pid)
    server.signal(signal.SIGTERM)
    wait_until(lambda: "received SIGTERM: stopping" in server.log_tail(80), 10,
               what="the node to start draining")  # fmt: skip
    assert server.is_running, "the first SIGTERM must wait for the in-flight invoke"
    stop_requested = time.monotonic()
    server.signal(signal.SIGTERM)
    returncode = server.wait(20)
    assert time.monotonic() - stop_requested < 15
    assert returncode == 0
    wait_until(lambda: process_is_gone(environment), 5, what="the stuck environment to die")
    assert not (work / "markers" / "stuck").exists()
    caller.join(30)


def test_idle_environments_are_reaped(make_server: ServerFactory) -> None:
    server = make_server(idle_timeout_s=1)
    client = lambda_client(server)
    create_function(client, "reaped", VERSIONED.format(version="r"))
    first = invoke_json(client, "reaped")[1]["pid"]
    assert invoke_json(client, "reaped")[1]["pid"] == first, "a warm environment is reused"
    environment = capture_process(first)
    wait_until(lambda: process_is_gone(environment), 15, what="the idle environment to be reaped")
    response, payload = invoke_json(client, "reaped")
    assert "FunctionError" not in response
    assert payload["pid"] != first


# A handler that leaves a background child process in its environment (same process group).
SPAWNS = """
import os
import subprocess
import time

def handler(event, context):
    child = subprocess.Popen(["sleep", "300"])
    time.sleep(event.get("seconds", 0))
    return {"pid": os.getpid(), "child": child.pid}
"""


def _spawning_function(client: Any, name: str) -> None:
    create_function(client, name, SPAWNS, Timeout=2)


@pytest.mark.parametrize("how", ["timeout", "sigterm", "sigkill"])
def test_child_processes_of_a_handler_do_not_outlive_the_environment(
    make_server: ServerFactory, how: str
) -> None:
    server = make_server()
    client = lambda_client(server)
    _spawning_function(client, "spawner")
    _, payload = invoke_json(client, "spawner")
    environment, child = _capture_all([payload["pid"], payload["child"]])
    assert child.pid == payload["child"]
    if how == "timeout":
        # The next invoke of the same (now warm) environment runs past its timeout: the
        # whole environment, including the child the previous invoke left, is killed.
        _, error = invoke_json(client, "spawner", {"seconds": 10})
        assert "Task timed out" in error["errorMessage"]
    elif how == "sigterm":
        assert server.stop() == 0
    else:
        server.kill()
    for process in (environment, child):
        wait_until(
            functools.partial(process_is_gone, process),
            5,
            what=f"{process.pid} ({'runtime' if process is environment else 'child'}) to die",
        )


def test_a_relative_data_directory_serves_python_functions(
    make_server: ServerFactory, tmp_path: Path
) -> None:
    # `make run` passes --data-dir ./.faas: environments forked from the zygote (whose
    # cwd is not the node's) must still find their code and /tmp.
    relative = Path(os.path.relpath(tmp_path / "relative-data"))
    assert not relative.is_absolute()
    server = make_server(data_dir=relative)
    client = lambda_client(server)
    client.create_function(
        FunctionName="relative",
        Runtime="python3.12",
        Role="arn:aws:iam::000000000000:role/faas-test",
        Handler="app.handler",
        Code={"ZipFile": make_zip({"app.py": "def handler(event, context):\n    return 'ok'\n"})},
    )
    response, payload = invoke_json(client, "relative")
    assert "FunctionError" not in response, payload
    assert payload == "ok"
