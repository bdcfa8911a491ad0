"""Bad input and failing handlers: the right boto3 exception, or the right function error."""

from __future__ import annotations

import base64
import io
import json
import re
import stat
import struct
import time
import urllib.error
import urllib.request
import uuid
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError
from faas_support import (
    ROLE,
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

MAX_UNZIPPED_BYTES = 5_000_000
SYNC_LIMIT = 6 * 1024 * 1024
EVENT_LIMIT = 1024 * 1024

OK = """
def handler(event, context):
    return {"ok": True}
"""

SIZE_OF_EVENT = """
def handler(event, context):
    return {"length": len(event["blob"])}
"""

RAISES = """
import os

class PaymentDeclined(Exception):
    pass

def handler(event, context):
    if event.get("pay"):
        raise PaymentDeclined("card 4242 declined")
    return {"pid": os.getpid()}
"""

BEHAVES = """
import os
import sys
import time
from pathlib import Path

def handler(event, context):
    action = event.get("action")
    if action == "exit":
        os._exit(1)
    if action == "sleep":
        Path(os.environ["PID_DIR"], context.aws_request_id).write_text(str(os.getpid()))
        time.sleep(event["seconds"])
    if action == "flood":
        chunk = "x" * 1023 + "\\n"
        for _ in range(event["kib"]):
            sys.stdout.write(chunk)
        print("flood done")
    if action == "big-response":
        return "y" * event["bytes"]
    return {"pid": os.getpid(), "action": action}
"""


@pytest.fixture(scope="module")
def server(make_module_server: ServerFactory) -> FaasServer:
    return make_module_server(max_unzipped_bytes=MAX_UNZIPPED_BYTES)


@pytest.fixture(scope="module")
def client(server: FaasServer) -> Any:
    return lambda_client(server)


@pytest.fixture(scope="module")
def ok_function(client: Any) -> str:
    create_function(client, "err-ok", OK)
    return "err-ok"


@pytest.fixture(scope="module")
def behaves(client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    pid_dir = tmp_path_factory.mktemp("pids")
    create_function(
        client,
        "err-behaves",
        BEHAVES,
        Timeout=1,
        # A whole core (1,769 MB): these cases test error paths, not the CPU share, and
        # must finish well inside the 1 s timeout.
        MemorySize=1769,
        Environment={"Variables": {"PID_DIR": str(pid_dir)}},
    )
    return "err-behaves"


def error_code(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    return str(excinfo.value.response["Error"]["Code"])


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


# -- malformed requests ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"FunctionName": "x",'])
def test_malformed_control_plane_body(server: FaasServer, body: bytes) -> None:
    request = urllib.request.Request(
        f"{server.url}/2015-03-31/functions",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=10)
    error = excinfo.value
    assert error.code == 400
    assert error.headers["x-amzn-ErrorType"].split(":")[0] == "InvalidRequestContentException"
    assert error.headers["x-amzn-RequestId"]
    assert "message" in json.loads(error.read())


@pytest.mark.parametrize(
    "path",
    [
        "/2015-03-31/functions?MaxItems=%C2%B2",  # "²": a digit to str.isdigit, not to int()
        "/2015-03-31/functions?MaxItems=0",
        "/2018-10-31/layers?MaxItems=%D9%A3",  # an Arabic-Indic 3
        "/2018-10-31/layers/some-layer/versions/%C2%B2",
    ],
)
def test_bad_numbers_in_paths_and_queries(server: FaasServer, path: str) -> None:
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(f"{server.url}{path}", timeout=10)
    error = excinfo.value
    assert error.code == 400
    assert error.headers["x-amzn-ErrorType"].split(":")[0] == "ValidationException"


def test_unknown_function(client: Any) -> None:
    missing = "err-does-not-exist"
    calls: list[Callable[[], Any]] = [
        lambda: client.get_function(FunctionName=missing),
        lambda: client.get_function_configuration(FunctionName=missing),
        lambda: client.invoke(FunctionName=missing, Payload=b"{}"),
        lambda: client.invoke(FunctionName=missing, InvocationType="Event", Payload=b"{}"),
        lambda: client.invoke(FunctionName=missing, InvocationType="DryRun", Payload=b"{}"),
        lambda: client.update_function_configuration(FunctionName=missing, Timeout=5),
        lambda: client.update_function_code(FunctionName=missing, ZipFile=make_zip({"a.py": ""})),
        lambda: client.delete_function(FunctionName=missing),
    ]
    for call in calls:
        with pytest.raises(client.exceptions.ResourceNotFoundException) as excinfo:
            call()
        assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        assert missing in excinfo.value.response["Error"]["Message"]


@pytest.mark.parametrize("qualifier", ["7", "prod"])
def test_unknown_qualifier(client: Any, ok_function: str, qualifier: str) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=ok_function, Qualifier=qualifier, Payload=b"{}")
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=ok_function, Qualifier=qualifier)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function_configuration(FunctionName=ok_function, Qualifier=qualifier)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=f"{ok_function}:{qualifier}", Payload=b"{}")


@pytest.mark.parametrize(
    ("member", "value"),
    [("MemorySize", 20000), ("Timeout", 901)],
)
def test_out_of_range_settings(client: Any, ok_function: str, member: str, value: int) -> None:
    name = f"err-range-{member.lower()}-{value}"
    members: dict[str, Any] = {member: value}
    with pytest.raises(ClientError) as excinfo:
        create_function(client, name, OK, **members)
    assert error_code(excinfo) == "ValidationException"
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=name)

    with pytest.raises(ClientError) as excinfo:
        client.update_function_configuration(FunctionName=ok_function, **members)
    assert error_code(excinfo) == "ValidationException"
    config = client.get_function_configuration(FunctionName=ok_function)
    assert (config["MemorySize"], config["Timeout"]) == (128, 3)


@pytest.mark.parametrize("variable", ["AWS_REGION", "_HANDLER", "AWS_LAMBDA_FUNCTION_NAME"])
def test_reserved_environment_variable(client: Any, ok_function: str, variable: str) -> None:
    environment = {"Variables": {variable: "mine", "FINE": "yes"}}
    with pytest.raises(client.exceptions.InvalidParameterValueException) as excinfo:
        create_function(client, "err-reserved", OK, Environment=environment)
    assert variable in excinfo.value.response["Error"]["Message"]
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_configuration(FunctionName=ok_function, Environment=environment)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName="err-reserved")


def test_duplicate_create(client: Any, ok_function: str) -> None:
    with pytest.raises(client.exceptions.ResourceConflictException) as excinfo:
        create_function(client, ok_function, "def handler(e, c):\n    return 'other'\n")
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    _, payload = invoke_json(client, ok_function)
    assert payload == {"ok": True}, "the duplicate must not replace the code"


# -- hostile and broken zips ----------------------------------------------------------------


def _escape_names(tag: str) -> dict[str, Path]:
    """Zip entry names that try to leave the code directory, and where they would land."""
    return {
        f"../evil-{tag}.py": Path(f"evil-{tag}.py"),
        f"../../../../../../../../../../tmp/evil-{tag}.py": Path(f"/tmp/evil-{tag}.py"),
        f"/abs-{tag}.py": Path(f"/abs-{tag}.py"),
        f"/tmp/abs-{tag}.py": Path(f"/tmp/abs-{tag}.py"),
    }


@pytest.mark.parametrize("kind", ["not-a-zip", "parent", "deep-parent", "absolute", "abs-tmp"])
def test_bad_zip_is_refused(server: FaasServer, client: Any, ok_function: str, kind: str) -> None:
    tag = uuid.uuid4().hex
    names = list(_escape_names(tag))
    if kind == "not-a-zip":
        zip_bytes = b"this is plain text, not a zip archive" * 10
    else:
        index = ["parent", "deep-parent", "absolute", "abs-tmp"].index(kind)
        zip_bytes = make_zip({"app.py": OK, names[index]: "print('escaped')\n"})
    code_dir = server.data_dir / "code"
    before = set(code_dir.rglob("*"))
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.create_function(
            FunctionName=f"err-zip-{kind}",
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": zip_bytes},
        )
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_code(FunctionName=ok_function, ZipFile=zip_bytes)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=f"err-zip-{kind}")

    for landing in _escape_names(tag).values():
        anywhere = [landing] if landing.is_absolute() else []
        anywhere += list(server.data_dir.parent.rglob(landing.name))
        assert not any(p.exists() for p in anywhere), f"{landing} was written: {anywhere}"
    assert not (set(code_dir.rglob("*")) - before), "a refused zip left files behind"
    assert invoke_json(client, ok_function)[1] == {"ok": True}


def _symlink(archive: zipfile.ZipFile, name: str, target: str) -> None:
    info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive.writestr(info, target)


def _symlink_chain(archive: zipfile.ZipFile, depth: int) -> str:
    """Links l0 -> l1/.., l1 -> l2/.., ..., l<depth> -> "." (each one harmless on its own).

    Once the last link exists, ``l0`` points ``depth`` directories above the code root
    (the filesystem root, if ``depth`` is deep enough). Returns the prefix to use.
    """
    for index in range(depth):
        _symlink(archive, f"l{index}", f"l{index + 1}/..")
    _symlink(archive, f"l{depth}", ".")
    return "l0"


def hostile_symlink_zip(kind: str, outside: Path, depth: int) -> bytes:
    """A zip that uses symlinks to reach ``outside`` (an absolute directory).

    ``depth`` must reach ``/`` from the unpack directory yet stay under the kernel's limit
    of 40 links followed per lookup.
    """
    inside_root = str(outside).lstrip("/")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the deliberate duplicate name
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("app.py", OK)
            if kind == "absolute-link":
                _symlink(archive, "x", str(outside / "via-absolute-link"))
                archive.writestr("x", "escaped\n")
            elif kind == "parent-link":
                _symlink(archive, "x", "../" * depth + inside_root + "/via-parent-link")
                archive.writestr("x", "escaped\n")
            elif kind == "chain-file":
                # "x" is checked while l0 does not exist yet; the file "x" is written through it.
                _symlink(archive, "x", f"l0/{inside_root}/via-chain-file")
                _symlink_chain(archive, depth)
                archive.writestr("x", "escaped\n")
            elif kind == "chain-dir":
                prefix = _symlink_chain(archive, depth)
                archive.writestr(f"{prefix}/{inside_root}/via-chain-dir/", "")
            elif kind == "loop":
                # a -> b -> a, then a file written through "a": a broken zip, not a 500.
                _symlink(archive, "a", "b")
                _symlink(archive, "b", "a")
                archive.writestr("a", "content\n")
            elif kind == "chain-mkdir":
                prefix = _symlink_chain(archive, depth)
                archive.writestr(f"{prefix}/{inside_root}/via-chain-mkdir/file.txt", "escaped\n")
            else:
                raise ValueError(kind)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "kind", ["absolute-link", "parent-link", "loop", "chain-file", "chain-dir", "chain-mkdir"]
)
def test_symlinks_cannot_reach_outside_the_code_directory(
    server: FaasServer, client: Any, kind: str
) -> None:
    outside = server.data_dir.parent / f"outside-{kind}"
    outside.mkdir()
    # The code is unpacked in <data dir>/code/unpacked/<staging dir>.
    depth = len(server.data_dir.resolve().parts) + 3
    assert depth < 35
    zip_bytes = hostile_symlink_zip(kind, outside, depth)
    name = f"err-symlink-{kind}"
    try:
        with pytest.raises(client.exceptions.InvalidParameterValueException):
            client.create_function(
                FunctionName=name,
                Runtime="python3.12",
                Role=ROLE,
                Handler="app.handler",
                Code={"ZipFile": zip_bytes},
            )
    finally:
        escaped = sorted(str(path) for path in outside.rglob("*"))
        assert not escaped, f"the zip wrote outside the code directory: {escaped}"
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.get_function(FunctionName=name)


def test_symlinks_inside_the_code_directory_work(client: Any) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("lib/real.py", "VALUE = 'through a link'\n")
        _symlink(archive, "linked.py", "lib/real.py")
        archive.writestr("app.py", "import linked\n\ndef handler(e, c):\n    return linked.VALUE\n")
    client.create_function(
        FunctionName="err-symlink-ok",
        Runtime="python3.12",
        Role=ROLE,
        Handler="app.handler",
        Code={"ZipFile": buffer.getvalue()},
    )
    assert invoke_json(client, "err-symlink-ok")[1] == "through a link"


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """One 300 MB entry of zeros, deflated; built in chunks so memory stays bounded."""
    buffer = io.BytesIO()
    chunk = bytes(1024 * 1024)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("app.py", OK)
        with archive.open("zeros.bin", "w", force_zip64=True) as entry:
            for _ in range(300):
                entry.write(chunk)
    return buffer.getvalue()


def lying_zip(real_size: int, declared_size: int) -> bytes:
    """A zip whose headers claim ``declared_size`` for an entry that inflates to ``real_size``."""
    buffer = io.BytesIO()
    name = "zeros.bin"
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("app.py", OK)
        archive.writestr(name, bytes(real_size))
        local = archive.getinfo(name).header_offset
    data = bytearray(buffer.getvalue())
    central = data.find(b"PK\x01\x02")
    while data[central + 46 : central + 46 + len(name)] != name.encode():
        central = data.find(b"PK\x01\x02", central + 1)
        assert central > 0
    real, fake = struct.pack("<I", real_size), struct.pack("<I", declared_size)
    # The uncompressed size sits at offset 22 of a local header, 24 of a central one.
    for offset in (local + 22, central + 24):
        assert data[offset : offset + 4] == real
        data[offset : offset + 4] = fake
    return bytes(data)


@pytest.mark.timeout(180)
def test_zip_bomb_is_refused(
    server: FaasServer, client: Any, ok_function: str, zip_bomb: bytes
) -> None:
    assert len(zip_bomb) < 2 * 1024 * 1024
    before = directory_size(server.data_dir)
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.create_function(
            FunctionName="err-bomb",
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": zip_bomb},
        )
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.update_function_code(FunctionName=ok_function, ZipFile=zip_bomb)
    grown = directory_size(server.data_dir) - before
    assert grown < MAX_UNZIPPED_BYTES, f"the data dir grew by {grown} bytes"
    assert invoke_json(client, ok_function)[1] == {"ok": True}


def test_zip_with_lying_sizes_is_refused(server: FaasServer, client: Any) -> None:
    zip_bytes = lying_zip(real_size=3 * MAX_UNZIPPED_BYTES, declared_size=100)
    before = directory_size(server.data_dir)
    with pytest.raises(client.exceptions.InvalidParameterValueException):
        client.create_function(
            FunctionName="err-liar",
            Runtime="python3.12",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": zip_bytes},
        )
    assert directory_size(server.data_dir) - before < MAX_UNZIPPED_BYTES


def test_unzipped_size_just_under_the_cap_is_accepted(client: Any) -> None:
    files: dict[str, str | bytes] = {"app.py": OK, "data.bin": bytes(MAX_UNZIPPED_BYTES - 10_000)}
    create_function(client, "err-near-cap", files)
    assert invoke_json(client, "err-near-cap")[1] == {"ok": True}


# -- payload limits -------------------------------------------------------------------------


def _json_blob(total_bytes: int) -> bytes:
    """A JSON document of exactly ``total_bytes`` bytes: {"blob": "aaa..."}."""
    overhead = len(b'{"blob": ""}')
    return b'{"blob": "' + b"a" * (total_bytes - overhead) + b'"}'


@pytest.fixture(scope="module")
def sizer(client: Any) -> str:
    create_function(client, "err-sizer", SIZE_OF_EVENT)
    return "err-sizer"


def test_sync_payload_over_6_mb(client: Any, sizer: str) -> None:
    with pytest.raises(client.exceptions.RequestTooLargeException) as excinfo:
        client.invoke(FunctionName=sizer, Payload=_json_blob(SYNC_LIMIT + 1))
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    response = client.invoke(FunctionName=sizer, Payload=_json_blob(SYNC_LIMIT))
    assert response["StatusCode"] == 200
    assert json.loads(response["Payload"].read()) == {"length": SYNC_LIMIT - 12}


def test_event_payload_over_1_mb(client: Any, sizer: str) -> None:
    with pytest.raises(client.exceptions.RequestTooLargeException):
        client.invoke(
            FunctionName=sizer, InvocationType="Event", Payload=_json_blob(EVENT_LIMIT + 1)
        )
    accepted = client.invoke(
        FunctionName=sizer, InvocationType="Event", Payload=_json_blob(EVENT_LIMIT)
    )
    assert accepted["StatusCode"] == 202


@pytest.mark.parametrize("invocation_type", ["RequestResponse", "Event", "DryRun"])
@pytest.mark.parametrize("payload", [b"not json", b'{"a": ', b"\xff\xfe"])
def test_payload_that_is_not_json(
    client: Any, sizer: str, invocation_type: str, payload: bytes
) -> None:
    with pytest.raises(client.exceptions.InvalidRequestContentException) as excinfo:
        client.invoke(FunctionName=sizer, InvocationType=invocation_type, Payload=payload)
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_bad_invoke_headers(client: Any, sizer: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        client.invoke(FunctionName=sizer, InvocationType="Sometimes", Payload=b"{}")
    assert error_code(excinfo) == "ValidationException"
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName=sizer, ClientContext="%%% not base64 %%%", Payload=b"{}")
    not_an_object = base64.b64encode(b"[1, 2]").decode()
    with pytest.raises(client.exceptions.InvalidRequestContentException):
        client.invoke(FunctionName=sizer, ClientContext=not_an_object, Payload=b"{}")


# -- failing handlers -----------------------------------------------------------------------


def test_handler_exception_is_a_function_error(client: Any) -> None:
    create_function(client, "err-raises", RAISES)
    warm_pid = invoke_json(client, "err-raises")[1]["pid"]
    response = client.invoke(FunctionName="err-raises", Payload=b'{"pay": 1}', LogType="Tail")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert response["ExecutedVersion"] == "$LATEST"
    error = json.loads(response["Payload"].read())
    assert error["errorType"] == "PaymentDeclined"
    assert error["errorMessage"] == "card 4242 declined"
    assert error["requestId"] == response["ResponseMetadata"]["RequestId"]
    assert isinstance(error["stackTrace"], list) and error["stackTrace"]
    assert any("app.py" in frame and "in handler" in frame for frame in error["stackTrace"])
    assert not any("faas_python_runtime" in frame for frame in error["stackTrace"])
    log = base64.b64decode(response["LogResult"]).decode()
    assert "[ERROR] PaymentDeclined: card 4242 declined" in log
    assert log.splitlines()[-1].startswith(f"REPORT RequestId: {error['requestId']}\t")
    # A handled exception leaves the environment warm, as on Lambda.
    assert invoke_json(client, "err-raises")[1]["pid"] == warm_pid


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        (
            {"app.py": "import nonexistent_module_xyz\n\ndef handler(e, c):\n    return 1\n"},
            "app.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'app': No module named 'nonexistent_module_xyz'",
        ),
        ({"app.py": OK}, "missing.handler", "Runtime.ImportModuleError", "Unable to import"),
        (
            {"app.py": OK},
            "app.no_such_function",
            "Runtime.HandlerNotFound",
            "Handler 'no_such_function' missing on module 'app'",
        ),
        (
            {"app.py": "def handler(e, c)\n    return 1\n"},
            "app.handler",
            "Runtime.UserCodeSyntaxError",
            "Syntax error in module 'app'",
        ),
    ],
    ids=["import-error", "missing-module", "missing-handler", "syntax-error"],
)
def test_init_failures(
    client: Any, files: dict[str, str], handler: str, error_type: str, message: str
) -> None:
    name = f"err-init-{error_type.split('.')[-1].lower()}-{uuid.uuid4().hex[:6]}"
    create_function(client, name, files, handler=handler)
    for _ in range(2):  # the failed environment is discarded; the next invoke fails the same way
        response = client.invoke(FunctionName=name, Payload=b"{}", LogType="Tail")
        assert response["StatusCode"] == 200
        assert response["FunctionError"] == "Unhandled"
        error = json.loads(response["Payload"].read())
        assert error["errorType"] == error_type
        assert message in error["errorMessage"]
        log = base64.b64decode(response["LogResult"]).decode().splitlines()
        assert any(line.startswith(f"[ERROR] {error_type}: ") for line in log), log
        rid = response["ResponseMetadata"]["RequestId"]
        assert log[-1].startswith(f"REPORT RequestId: {rid}\t")
        assert log[-1].endswith(f"\tStatus: error\tError Type: {error_type}\t"), log[-1]
    client.update_function_code(FunctionName=name, ZipFile=make_zip({"app.py": OK}))
    if handler != "app.handler":
        client.update_function_configuration(FunctionName=name, Handler="app.handler")
    assert invoke_json(client, name)[1] == {"ok": True}, "fixing the code must heal the function"


def test_exit_during_init_is_a_runtime_exit_error(client: Any) -> None:
    create_function(client, "err-init-exit", "import os\n\nos._exit(3)\n")
    response, error = invoke_json(client, "err-init-exit")
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.ExitError"
    assert "Runtime exited with error: exit status 3" in error["errorMessage"]
    # lambda-compat.md B: "RequestId: <id> Error: Runtime exited with error: exit status N".
    request_id = response["ResponseMetadata"]["RequestId"]
    assert error["errorMessage"].startswith(f"RequestId: {request_id} Error:"), error


def test_os_exit_is_a_runtime_exit_error(client: Any, behaves: str) -> None:
    _, before = invoke_json(client, behaves, {"action": "ping"})
    response, error = invoke_json(client, behaves, {"action": "exit"}, LogType="Tail")
    report = base64.b64decode(response["LogResult"]).decode().splitlines()[-1]
    assert report.startswith(f"REPORT RequestId: {response['ResponseMetadata']['RequestId']}\t")
    assert report.endswith("\tStatus: error\tError Type: Runtime.ExitError\t"), report
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Runtime.ExitError"
    assert "exit status 1" in error["errorMessage"]
    assert response["ResponseMetadata"]["RequestId"] in error["errorMessage"]
    response, after = invoke_json(client, behaves, {"action": "ping"})
    assert "FunctionError" not in response
    assert after["action"] == "ping"
    assert after["pid"] != before["pid"]


def test_timeout(client: Any, behaves: str, ok_function: str) -> None:
    pid_dir = Path(
        client.get_function_configuration(FunctionName=behaves)["Environment"]["Variables"][
            "PID_DIR"
        ]
    )
    started = time.monotonic()
    response, error = invoke_json(client, behaves, {"action": "sleep", "seconds": 5})
    elapsed = time.monotonic() - started
    request_id = response["ResponseMetadata"]["RequestId"]
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert re.search(r"Task timed out after 1\.\d\d seconds", error["errorMessage"]), error
    assert request_id in error["errorMessage"]
    assert elapsed < 4, "the caller must not wait for the sleeping handler"
    pid = int((pid_dir / request_id).read_text())
    try:
        stuck = capture_process(pid)
    except psutil.NoSuchProcess:
        pass  # already gone
    else:
        wait_until(lambda: process_is_gone(stuck), 5, what="the timed-out environment to die")

    response, payload = invoke_json(client, behaves, {"action": "ping"})
    assert "FunctionError" not in response
    assert payload["pid"] != pid
    assert invoke_json(client, ok_function)[1] == {"ok": True}


def test_timeout_log_has_status(client: Any, behaves: str) -> None:
    response = client.invoke(
        FunctionName=behaves,
        Payload=json.dumps({"action": "sleep", "seconds": 3}).encode(),
        LogType="Tail",
    )
    log = base64.b64decode(response["LogResult"]).decode().splitlines()
    rid = response["ResponseMetadata"]["RequestId"]
    assert any(re.search(rf"{rid} Task timed out after 1\.\d\d seconds", line) for line in log)
    assert log[-1].startswith(f"REPORT RequestId: {rid}\t")
    assert "Status: timeout" in log[-1]


@pytest.mark.timeout(180)
def test_fifty_megabytes_of_output(server: FaasServer, client: Any, behaves: str) -> None:
    client.update_function_configuration(FunctionName=behaves, Timeout=60)
    try:
        response = client.invoke(
            FunctionName=behaves,
            Payload=json.dumps({"action": "flood", "kib": 50 * 1024}).encode(),
            LogType="Tail",
        )
        assert "FunctionError" not in response, response["Payload"].read()
        assert json.loads(response["Payload"].read())["action"] == "flood"
        rid = response["ResponseMetadata"]["RequestId"]
        log = base64.b64decode(response["LogResult"])
        assert len(log) <= 4096
        lines = log.decode().splitlines()
        assert lines[-1].startswith(f"REPORT RequestId: {rid}\t")
        assert lines[-2] == f"END RequestId: {rid}"
        assert "flood done" in lines
        with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as health:
            assert health.status == 200
        assert invoke_json(client, behaves, {"action": "ping"})[1]["action"] == "ping"
        logs_dir = server.data_dir / "logs" / behaves
        if logs_dir.exists():
            assert directory_size(logs_dir) < 10 * 1024 * 1024, "the log file kept everything"
    finally:
        client.update_function_configuration(FunctionName=behaves, Timeout=1)


RESPONSE_LIMIT = 6 * 1024 * 1024 + 100  # 6291556 bytes, as the Runtime API states


def test_response_too_large(client: Any, behaves: str) -> None:
    # A JSON string result is its characters plus two quotes.
    at_limit = client.invoke(
        FunctionName=behaves,
        Payload=json.dumps({"action": "big-response", "bytes": RESPONSE_LIMIT - 2}).encode(),
    )
    assert "FunctionError" not in at_limit
    assert len(at_limit["Payload"].read()) == RESPONSE_LIMIT

    response, error = invoke_json(
        client, behaves, {"action": "big-response", "bytes": RESPONSE_LIMIT - 1}
    )
    assert response["StatusCode"] == 200
    assert response["FunctionError"] == "Unhandled"
    assert error["errorType"] == "Function.ResponseSizeTooLarge"
    assert invoke_json(client, behaves, {"action": "ping"})[1]["action"] == "ping"
