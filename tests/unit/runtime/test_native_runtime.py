"""The native Python runtime, started for real and driven over its msgpack frame protocol."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import faas_python_runtime
import msgpack
import pytest

RUNTIME_PYTHONPATH = str(Path(faas_python_runtime.__file__).resolve().parent.parent)
RECEIVE_TIMEOUT_S = 20.0
REQUEST_ID = "3f2a1b4c-0000-4000-8000-000000000001"
LOG_CHUNK_BYTES = 64 * 1024

Frame = dict[str, Any]


class RuntimeUnderTest:
    """One runtime subprocess plus the node's end of its control socket."""

    def __init__(
        self, process: subprocess.Popen[bytes], sock: socket.socket, code_dir: Path
    ) -> None:
        self.process = process
        self.sock = sock
        self.code_dir = code_dir
        self.unpacker = msgpack.Unpacker(raw=False)
        self.packer = msgpack.Packer(use_bin_type=True)

    def send(self, frame: Frame) -> None:
        self.sock.sendall(self.packer.pack(frame))

    def receive(self) -> Frame:
        while True:
            try:
                frame: Frame = next(self.unpacker)
                return frame
            except StopIteration:
                pass
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError("runtime closed the socket")
            self.unpacker.feed(data)

    def receive_until(self, *kinds: str) -> tuple[Frame, list[bytes]]:
        """Collect log chunks until a frame of one of `kinds` arrives."""
        logs: list[bytes] = []
        while True:
            frame = self.receive()
            if frame["t"] == "log":
                logs.append(frame["data"])
            elif frame["t"] in kinds:
                return frame, logs
            else:
                raise AssertionError(f"unexpected frame {frame!r}")

    def ready(self) -> list[bytes]:
        _, logs = self.receive_until("ready")
        return logs

    def invoke(
        self,
        payload: bytes = b"{}",
        request_id: str = REQUEST_ID,
        **fields: Any,
    ) -> tuple[Frame, str]:
        frame: Frame = {
            "t": "invoke",
            "id": request_id,
            "payload": payload,
            "deadline_ms": int(time.time() * 1000) + 30_000,
            "arn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
            "trace_id": None,
            "client_context": None,
            "cognito_identity": None,
        }
        frame.update(fields)
        self.send(frame)
        answer, logs = self.receive_until("result", "error")
        assert answer["id"] == request_id
        assert isinstance(answer["max_rss_kb"], int) and answer["max_rss_kb"] > 0
        return answer, b"".join(logs).decode()

    def wait(self) -> int:
        return self.process.wait(timeout=RECEIVE_TIMEOUT_S)


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[Any]:
    """Factory: write code files, spawn the runtime on a socketpair, kill it at teardown."""
    started: list[RuntimeUnderTest] = []

    def start(
        files: dict[str, str], handler: str = "app.handler", env: dict[str, str] | None = None
    ) -> RuntimeUnderTest:
        code_dir = tmp_path / f"code{len(started)}"
        for name, text in files.items():
            path = code_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        code_dir.mkdir(exist_ok=True)
        node_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        node_end.settimeout(RECEIVE_TIMEOUT_S)
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": RUNTIME_PYTHONPATH,
            "PYTHONDONTWRITEBYTECODE": "1",
            "_HANDLER": handler,
            "_FAAS_CONTROL_FD": str(runtime_end.fileno()),
            "_FAAS_SECRET": "hidden",
            "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]abc",
            **(env or {}),
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "faas_python_runtime"],
            cwd=code_dir,
            pass_fds=[runtime_end.fileno()],
            env=environment,
        )
        runtime_end.close()
        runtime = RuntimeUnderTest(process, node_end, code_dir.resolve())
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        if runtime.process.poll() is None:
            runtime.process.kill()
        runtime.process.wait()
        runtime.sock.close()


ECHO = """
import json, os
def handler(event, context):
    return event
"""


def test_ready_after_import_and_import_output_logged(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": "print('importing')\n" + ECHO})
    logs = runtime.ready()
    assert b"".join(logs) == b"importing\n"


def test_dotted_and_slashed_handler_modules(start_runtime: Any) -> None:
    files = {"pkg/__init__.py": "", "pkg/mod.py": ECHO}
    for handler in ("pkg.mod.handler", "pkg/mod.handler"):
        runtime = start_runtime(files, handler=handler)
        runtime.ready()
        answer, _ = runtime.invoke(b'{"a": 1}')
        assert answer["payload"] == b'{"a": 1}'


@pytest.mark.parametrize(
    ("files", "handler", "expected"),
    [
        (
            {"app.py": "import x\n"},
            "app.handler",
            {
                "errorMessage": "Unable to import module 'app': No module named 'x'",
                "errorType": "Runtime.ImportModuleError",
                "requestId": "",
                "stackTrace": [],
            },
        ),
        (
            {"other.py": ""},
            "app.handler",
            {
                "errorMessage": "Unable to import module 'app': No module named 'app'",
                "errorType": "Runtime.ImportModuleError",
                "requestId": "",
                "stackTrace": [],
            },
        ),
        (
            {"app.py": ECHO},
            "app.f",
            {
                "errorMessage": "Handler 'f' missing on module 'app'",
                "errorType": "Runtime.HandlerNotFound",
                "requestId": "",
                "stackTrace": [],
            },
        ),
        (
            {"app.py": ECHO},
            "x",
            {
                "errorMessage": "Bad handler 'x': not enough values to unpack (expected 2, got 1)",
                "errorType": "Runtime.MalformedHandlerName",
                "requestId": "",
                "stackTrace": [],
            },
        ),
        (
            {"app.py": ECHO},
            "sys.handler",
            {
                "errorMessage": "Cannot use built-in module sys as a handler module",
                "errorType": "Runtime.BuiltInModuleConflict",
                "requestId": "",
                "stackTrace": [],
            },
        ),
    ],
)
def test_init_errors(
    start_runtime: Any, files: dict[str, str], handler: str, expected: dict[str, Any]
) -> None:
    runtime = start_runtime(files, handler=handler)
    frame, logs = runtime.receive_until("init_error")
    assert json.loads(frame["payload"]) == expected
    assert list(json.loads(frame["payload"])) == [
        "errorMessage",
        "errorType",
        "requestId",
        "stackTrace",
    ]
    text = b"".join(logs).decode()
    assert "LAMBDA_WARNING: Unhandled exception." in text
    assert f"[ERROR] {expected['errorType']}: {expected['errorMessage']}\r" in text
    assert runtime.wait() == 1


def test_syntax_error(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": "def handler(:\n"})
    frame, _ = runtime.receive_until("init_error")
    error = json.loads(frame["payload"])
    assert error["errorType"] == "Runtime.UserCodeSyntaxError"
    assert error["errorMessage"].startswith("Syntax error in module 'app': ")
    assert "app.py, line 1" in error["errorMessage"]
    assert error["requestId"] == ""
    assert error["stackTrace"][0].startswith('  File "') and " Line 1\n" in error["stackTrace"][0]
    assert runtime.wait() == 1


def test_exception_at_import_reports_its_class(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": "raise RuntimeError('boom at import')\n"})
    frame, _ = runtime.receive_until("init_error")
    error = json.loads(frame["payload"])
    assert (error["errorType"], error["errorMessage"]) == ("RuntimeError", "boom at import")
    assert not any("faas_python_runtime" in line for line in error["stackTrace"])
    assert "app.py" in error["stackTrace"][-1]
    assert runtime.wait() == 1


def test_invoke_returns_json_with_default_separators_and_decimal(start_runtime: Any) -> None:
    runtime = start_runtime(
        {
            "app.py": """
            from decimal import Decimal
            def handler(event, context):
                return {"echo": event, "n": Decimal("12"), "f": Decimal("1.5"), "s": "é"}
            """
        }
    )
    runtime.ready()
    answer, _ = runtime.invoke(b'{"k": [1, 2]}')
    assert answer["t"] == "result"
    assert (
        answer["payload"]
        == json.dumps({"echo": {"k": [1, 2]}, "n": 12, "f": 1.5, "s": "é"}).encode()
    )


def test_bytes_result_passes_through(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": "def handler(e, c):\n    return b'\\x00raw'\n"})
    runtime.ready()
    answer, _ = runtime.invoke()
    assert answer["payload"] == b"\x00raw"


def test_handler_exception_gives_lambda_error_json(start_runtime: Any) -> None:
    runtime = start_runtime(
        {
            "app.py": """
            def inner():
                raise ValueError("bad value")

            def handler(event, context):
                inner()
            """
        }
    )
    runtime.ready()
    answer, logs = runtime.invoke()
    assert answer["t"] == "error"
    assert answer["error_type"] == "ValueError"
    error = json.loads(answer["payload"])
    assert list(error) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    app = str(runtime.code_dir / "app.py")
    assert error == {
        "errorMessage": "bad value",
        "errorType": "ValueError",
        "requestId": REQUEST_ID,
        "stackTrace": [
            f'  File "{app}", line 6, in handler\n    inner()\n',
            f'  File "{app}", line 3, in inner\n    raise ValueError("bad value")\n',
        ],
    }
    nbsp = "\u00a0"
    assert logs == (
        "[ERROR] ValueError: bad value\rTraceback (most recent call last):\r"
        f'{nbsp * 2}File "{app}", line 6, in handler\r{nbsp * 4}inner()\r'
        f'{nbsp * 2}File "{app}", line 3, in inner\r{nbsp * 4}raise ValueError("bad value")\n'
    )


def test_context_fields(start_runtime: Any) -> None:
    runtime = start_runtime(
        {
            "app.py": """
            import time
            def handler(event, context):
                first = context.get_remaining_time_in_millis()
                time.sleep(0.05)
                return {
                    "aws_request_id": context.aws_request_id,
                    "invoked_function_arn": context.invoked_function_arn,
                    "function_name": context.function_name,
                    "function_version": context.function_version,
                    "memory_limit_in_mb": context.memory_limit_in_mb,
                    "log_group_name": context.log_group_name,
                    "log_stream_name": context.log_stream_name,
                    "identity": [context.identity.cognito_identity_id,
                                 context.identity.cognito_identity_pool_id],
                    "client_context": context.client_context,
                    "remaining": [first, context.get_remaining_time_in_millis()],
                }
            """
        }
    )
    runtime.ready()
    answer, _ = runtime.invoke(deadline_ms=int(time.time() * 1000) + 10_000)
    result = json.loads(answer["payload"])
    first, second = result.pop("remaining")
    assert 9_000 < first <= 10_000
    assert second <= first - 40
    assert result == {
        "aws_request_id": REQUEST_ID,
        "invoked_function_arn": "arn:aws:lambda:us-east-1:123456789012:function:fn",
        "function_name": "fn",
        "function_version": "$LATEST",
        "memory_limit_in_mb": "128",
        "log_group_name": "/aws/lambda/fn",
        "log_stream_name": "2024/01/01/[$LATEST]abc",
        "identity": [None, None],
        "client_context": None,
    }
    answer, _ = runtime.invoke(deadline_ms=int(time.time() * 1000) - 5_000)
    assert json.loads(answer["payload"])["remaining"] == [0, 0]


def test_client_context_and_identity_objects(start_runtime: Any) -> None:
    runtime = start_runtime(
        {
            "app.py": """
            def handler(event, context):
                cc = context.client_context
                client = cc.client
                return {
                    "identity": [context.identity.cognito_identity_id,
                                 context.identity.cognito_identity_pool_id],
                    "custom": cc.custom, "env": cc.env,
                    "client": [client.installation_id, client.app_title,
                               client.app_version_name, client.app_version_code,
                               client.app_package_name],
                }
            """
        }
    )
    runtime.ready()
    client_context = {
        "custom": {"k": "v"},
        "env": {"platform": "android"},
        "client": {"installation_id": "i", "app_title": "t", "app_package_name": "p"},
    }
    answer, _ = runtime.invoke(
        client_context=json.dumps(client_context),
        cognito_identity=json.dumps({"cognitoIdentityId": "id", "cognitoIdentityPoolId": "pool"}),
    )
    assert json.loads(answer["payload"]) == {
        "identity": ["id", "pool"],
        "custom": {"k": "v"},
        "env": {"platform": "android"},
        "client": ["i", "t", None, None, "p"],
    }
    answer, _ = runtime.invoke(client_context="{not json")
    error = json.loads(answer["payload"])
    assert error["errorType"] == "Runtime.LambdaContextUnmarshalError"
    assert error["errorMessage"].startswith("Unable to parse Client Context JSON: ")


def test_print_and_logging_arrive_before_result(start_runtime: Any) -> None:
    runtime = start_runtime(
        {
            "app.py": """
            import logging, sys
            logger = logging.getLogger()
            def handler(event, context):
                print("to stdout")
                sys.stderr.write("to stderr\\n")
                logger.info("not shown: root stays at WARNING")
                logger.warning("careful %s", 42)
                context.log("via context\\n")
                print("no newline", end="")
                return 1
            """
        }
    )
    runtime.ready()
    answer, logs = runtime.invoke()
    assert answer["t"] == "result"
    lines = logs.split("\n")
    assert lines[0] == "to stdout"
    assert lines[1] == "to stderr"
    level, timestamp, request_id, message = lines[2].split("\t")
    assert (level, request_id, message) == ("[WARNING]", REQUEST_ID, "careful 42")
    time.strptime(timestamp[:-5], "%Y-%m-%dT%H:%M:%S")
    assert timestamp[-5] == "." and timestamp.endswith("Z")
    assert lines[3:] == ["via context", "no newline"]


def test_ten_megabytes_of_prints_stream_in_bounded_chunks(start_runtime: Any) -> None:
    runtime = start_runtime(
        {
            "app.py": """
            def handler(event, context):
                line = "é" * 511
                for _ in range(5 * 1024):
                    print(line)
                print("x" * (5 * 1024 * 1024), end="")
                return "done"
            """
        }
    )
    runtime.ready()
    runtime.send({"t": "invoke", "id": REQUEST_ID, "payload": b"{}", "deadline_ms": 0, "arn": ""})
    answer, chunks = runtime.receive_until("result")
    assert answer["payload"] == b'"done"'
    assert max(len(chunk) for chunk in chunks) <= LOG_CHUNK_BYTES
    for chunk in chunks:
        chunk.decode()  # every chunk is whole UTF-8 characters
    total = b"".join(chunks).decode()
    assert len(total) == 5 * 1024 * 512 + 5 * 1024 * 1024


def test_response_too_large(start_runtime: Any) -> None:
    runtime = start_runtime(
        {"app.py": "def handler(e, c):\n    return 'x' * 2000\n"},
        env={"_FAAS_MAX_RESPONSE_BYTES": "1000"},
    )
    runtime.ready()
    answer, _ = runtime.invoke()
    assert answer["error_type"] == "Function.ResponseSizeTooLarge"
    assert json.loads(answer["payload"]) == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size (1000 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }


def test_default_response_limit(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": "def handler(e, c):\n    return 'x' * 6291556\n"})
    runtime.ready()
    answer, _ = runtime.invoke()
    assert json.loads(answer["payload"])["errorMessage"] == (
        "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
    )


def test_unserialisable_result_is_marshal_error(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": "def handler(e, c):\n    return {1, 2}\n"})
    runtime.ready()
    answer, logs = runtime.invoke()
    assert json.loads(answer["payload"]) == {
        "errorMessage": "Unable to marshal response: Object of type set is not JSON serializable",
        "errorType": "Runtime.MarshalError",
        "requestId": REQUEST_ID,
        "stackTrace": [],
    }
    assert logs.startswith("[ERROR] Runtime.MarshalError: Unable to marshal response: ")


def test_non_json_payload_is_unmarshal_error(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": ECHO})
    runtime.ready()
    answer, _ = runtime.invoke(b"not json")
    assert answer["error_type"] == "Runtime.UnmarshalError"
    assert json.loads(answer["payload"]) == {
        "errorMessage": "Unable to unmarshal input: Expecting value: line 1 column 1 (char 0)",
        "errorType": "Runtime.UnmarshalError",
        "requestId": REQUEST_ID,
        "stackTrace": [],
    }


def test_globals_survive_between_invokes(start_runtime: Any) -> None:
    runtime = start_runtime(
        {
            "app.py": """
            import sys
            calls = []
            def handler(event, context):
                calls.append(context.aws_request_id)
                return {"calls": calls, "modules": len(sys.modules)}
            """
        }
    )
    runtime.ready()
    first, _ = runtime.invoke(request_id="a")
    second, _ = runtime.invoke(request_id="b")
    first_result = json.loads(first["payload"])
    second_result = json.loads(second["payload"])
    assert second_result["calls"] == ["a", "b"]
    assert second_result["modules"] == first_result["modules"]


def test_shutdown_exits_zero(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": ECHO})
    runtime.ready()
    runtime.send({"t": "shutdown"})
    assert runtime.wait() == 0


def test_closing_the_socket_ends_the_runtime(start_runtime: Any) -> None:
    runtime = start_runtime({"app.py": ECHO})
    runtime.ready()
    runtime.sock.close()
    runtime.wait()


def test_private_vars_hidden_and_trace_id_per_invoke(start_runtime: Any) -> None:
    runtime = start_runtime(
        {
            "app.py": """
            import os
            def handler(event, context):
                return {
                    "private": sorted(k for k in os.environ if k.startswith("_FAAS_")),
                    "trace": os.environ.get("_X_AMZN_TRACE_ID"),
                    "handler": os.environ.get("_HANDLER"),
                }
            """
        }
    )
    runtime.ready()
    trace = "Root=1-5e34a614-10bdxmplf1fb44f07bc535a1;Parent=07f5xmpl2d1f6f85;Sampled=1"
    answer, _ = runtime.invoke(trace_id=trace)
    assert json.loads(answer["payload"]) == {
        "private": [],
        "trace": trace,
        "handler": "app.handler",
    }
    answer, _ = runtime.invoke(trace_id=None)
    assert json.loads(answer["payload"])["trace"] is None
