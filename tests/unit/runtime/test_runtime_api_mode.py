"""The native Python runtime in Runtime API mode, driven by a stub Runtime API in the test."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faas_python_runtime
import pytest
from aiohttp import web
from multidict import CIMultiDictProxy

RUNTIME_PYTHONPATH = str(Path(faas_python_runtime.__file__).resolve().parent.parent)
WAIT_S = 10.0
REQUEST_ID = "3f2a1b4c-0000-4000-8000-000000000001"
ARN = "arn:aws:lambda:us-east-1:123456789012:function:fn"
PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"


@dataclass(frozen=True, slots=True)
class Post:
    """One request the runtime sent to the stub, other than `next`."""

    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    client_port: int

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class NextAnswer:
    """What the stub answers to one `next`."""

    body: bytes = b"{}"
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    status: int = 200


class StubRuntimeApi:
    """A Runtime API on 127.0.0.1 port 0 that serves queued invocations and records posts."""

    def __init__(self, keepalive_timeout_s: float = 75.0) -> None:
        self.keepalive_timeout_s = keepalive_timeout_s
        self.answers: asyncio.Queue[NextAnswer | None] = asyncio.Queue()
        self.posts: asyncio.Queue[Post] = asyncio.Queue()
        self.next_ports: list[int] = []
        self.next_called = asyncio.Condition()
        self.post_status = 202
        self.runner: web.AppRunner | None = None
        self.address = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(PREFIX + "/invocation/next", self._next)
        app.router.add_post(PREFIX + "/invocation/{id}/{kind}", self._record)
        app.router.add_post(PREFIX + "/init/error", self._record)
        self.runner = web.AppRunner(app, keepalive_timeout=self.keepalive_timeout_s)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        host, port = self.runner.addresses[0][:2]
        self.address = f"{host}:{port}"

    async def stop(self) -> None:
        self.answers.put_nowait(None)  # releases every `next` still waiting
        assert self.runner is not None
        await self.runner.cleanup()

    @staticmethod
    def _client_port(request: web.Request) -> int:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        return int(peer[1]) if peer else -1

    async def _next(self, request: web.Request) -> web.Response:
        async with self.next_called:
            self.next_ports.append(self._client_port(request))
            self.next_called.notify_all()
        answer = await self.answers.get()
        if answer is None:
            self.answers.put_nowait(None)
            return web.Response(status=500, text='{"errorType":"InternalServerError"}')
        if answer.status != 200:
            return web.Response(status=answer.status, text="{}")
        return web.Response(
            body=answer.body, content_type=answer.content_type, headers=answer.headers
        )

    async def _record(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts.put_nowait(Post(request.path, request.headers, body, self._client_port(request)))
        return web.Response(status=self.post_status, text='{"status":"OK"}')

    async def invoke(
        self, body: bytes = b"{}", request_id: str = REQUEST_ID, **headers: str
    ) -> Post:
        """Queue one invocation and wait for the runtime's answer to it."""
        lambda_headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
            "Lambda-Runtime-Invoked-Function-Arn": ARN,
        }
        lambda_headers.update({name.replace("_", "-"): value for name, value in headers.items()})
        self.answers.put_nowait(NextAnswer(body, lambda_headers))
        return await self.next_post()

    async def wait_next_calls(self, count: int) -> None:
        """Wait until `next` has been called `count` times in all."""
        async with asyncio.timeout(WAIT_S), self.next_called:
            await self.next_called.wait_for(lambda: len(self.next_ports) >= count)

    async def next_post(self) -> Post:
        return await asyncio.wait_for(self.posts.get(), WAIT_S)


@dataclass(slots=True)
class RuntimeProcess:
    """A runtime subprocess and everything it wrote to stdout."""

    process: asyncio.subprocess.Process
    code_dir: Path
    reader: asyncio.Task[bytes]

    async def wait(self) -> int:
        return await asyncio.wait_for(self.process.wait(), WAIT_S)

    async def output(self) -> str:
        """Stop the runtime if it still runs; everything it wrote to fd 1 and fd 2."""
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        return (await self.reader).decode()


Start = Callable[..., Awaitable[RuntimeProcess]]


@pytest.fixture
async def api(request: pytest.FixtureRequest) -> AsyncIterator[StubRuntimeApi]:
    """The stub; indirect parametrization sets its keep-alive timeout in seconds."""
    stub = StubRuntimeApi(getattr(request, "param", 75.0))
    await stub.start()
    yield stub
    await stub.stop()


@pytest.fixture
async def start_runtime(tmp_path: Path, api: StubRuntimeApi) -> AsyncIterator[Start]:
    """Factory: write code files, spawn the runtime against the stub, kill it at teardown."""
    started: list[RuntimeProcess] = []

    async def start(
        files: dict[str, str], handler: str = "app.handler", env: dict[str, str] | None = None
    ) -> RuntimeProcess:
        code_dir = tmp_path / f"code{len(started)}"
        code_dir.mkdir()
        for name, text in files.items():
            (code_dir / name).write_text(textwrap.dedent(text))
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": RUNTIME_PYTHONPATH,
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "_HANDLER": handler,
            "AWS_LAMBDA_FUNCTION_NAME": "fn",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]abc",
            **(env or {}),
        }
        # -S as the node starts it: no site-packages, so this mode needs nothing but stdlib.
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-S",
            "-m",
            "faas_python_runtime",
            cwd=code_dir,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        reader = asyncio.create_task(process.stdout.read())
        runtime = RuntimeProcess(process, code_dir.resolve(), reader)
        started.append(runtime)
        return runtime

    yield start
    for runtime in started:
        await runtime.output()


ECHO = """
def handler(event, context):
    return event
"""


async def test_result_post_and_warm_invokes_on_one_connection(
    start_runtime: Start, api: StubRuntimeApi
) -> None:
    runtime = await start_runtime(
        {
            "app.py": """
            from decimal import Decimal
            calls = []
            def handler(event, context):
                calls.append(context.aws_request_id)
                return {"echo": event, "calls": calls, "n": Decimal("12"), "f": Decimal("1.5")}
            """
        }
    )
    first = await api.invoke(b'{"k": [1, 2]}', request_id="a")
    assert first.path == PREFIX + "/invocation/a/response"
    assert first.headers["Content-Type"] == "application/json"
    assert (
        first.body
        == json.dumps({"echo": {"k": [1, 2]}, "calls": ["a"], "n": 12, "f": 1.5}).encode()
    )
    second = await api.invoke(b"{}", request_id="b")
    assert second.path == PREFIX + "/invocation/b/response"
    assert second.json()["calls"] == ["a", "b"]
    # One persistent connection: every request came from the same client port.
    await api.wait_next_calls(3)
    assert {first.client_port, second.client_port, *api.next_ports} == {first.client_port}
    assert await runtime.output() == ""


async def test_bytes_result_and_non_json_event_content_type(
    start_runtime: Start, api: StubRuntimeApi
) -> None:
    await start_runtime(
        {"app.py": "def handler(e, c):\n    return e if isinstance(e, bytes) else b'\\x00raw'\n"}
    )
    post = await api.invoke()
    assert (post.body, post.headers["Content-Type"]) == (b"\x00raw", "application/unknown")
    # As awslambdaric: an event not sent as exactly application/json reaches the handler raw.
    api.answers.put_nowait(
        NextAnswer(b"plain", {"Lambda-Runtime-Aws-Request-Id": "t"}, content_type="text/plain")
    )
    post = await api.next_post()
    assert (post.path, post.body) == (PREFIX + "/invocation/t/response", b"plain")


async def test_exception_posts_error_with_header_and_logs_it(
    start_runtime: Start, api: StubRuntimeApi
) -> None:
    runtime = await start_runtime(
        {
            "app.py": """
            def inner():
                raise ValueError("bad value")

            def handler(event, context):
                inner()
            """
        }
    )
    post = await api.invoke()
    assert post.path == PREFIX + f"/invocation/{REQUEST_ID}/error"
    assert post.headers[ERROR_TYPE_HEADER] == "ValueError"
    assert post.headers["Content-Type"] == "application/json"
    app = str(runtime.code_dir / "app.py")
    assert list(post.json()) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert post.json() == {
        "errorMessage": "bad value",
        "errorType": "ValueError",
        "requestId": REQUEST_ID,
        "stackTrace": [
            f'  File "{app}", line 6, in handler\n    inner()\n',
            f'  File "{app}", line 3, in inner\n    raise ValueError("bad value")\n',
        ],
    }
    nbsp = "\u00a0"
    assert await runtime.output() == (
        "[ERROR] ValueError: bad value\rTraceback (most recent call last):\r"
        f'{nbsp * 2}File "{app}", line 6, in handler\r{nbsp * 4}inner()\r'
        f'{nbsp * 2}File "{app}", line 3, in inner\r{nbsp * 4}raise ValueError("bad value")\n'
    )


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        (
            {"app.py": "import x\n"},
            "app.handler",
            "Runtime.ImportModuleError",
            "Unable to import module 'app': No module named 'x'",
        ),
        (
            {"app.py": ECHO},
            "app.f",
            "Runtime.HandlerNotFound",
            "Handler 'f' missing on module 'app'",
        ),
    ],
)
async def test_init_error_posted_then_exit_1(
    start_runtime: Start,
    api: StubRuntimeApi,
    files: dict[str, str],
    handler: str,
    error_type: str,
    message: str,
) -> None:
    runtime = await start_runtime(files, handler=handler)
    post = await api.next_post()
    assert post.path == PREFIX + "/init/error"
    assert post.headers[ERROR_TYPE_HEADER] == error_type
    assert list(post.json()) == ["errorMessage", "errorType", "requestId", "stackTrace"]
    assert post.json() == {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": "",
        "stackTrace": [],
    }
    assert await runtime.wait() == 1
    output = await runtime.output()
    assert "LAMBDA_WARNING: Unhandled exception." in output
    assert f"[ERROR] {error_type}: {message}\r" in output
    assert api.next_ports == []


async def test_context_fields_from_headers(start_runtime: Start, api: StubRuntimeApi) -> None:
    await start_runtime(
        {
            "app.py": """
            import time
            def handler(event, context):
                first = context.get_remaining_time_in_millis()
                time.sleep(0.05)
                cc = context.client_context
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
                    "client_context": None if cc is None else [cc.custom, cc.client.app_title],
                    "remaining": [first, context.get_remaining_time_in_millis()],
                }
            """
        }
    )
    client_context = {"custom": {"k": "v"}, "client": {"app_title": "t"}}
    post = await api.invoke(
        Lambda_Runtime_Deadline_Ms=str(int(time.time() * 1000) + 10_000),
        Lambda_Runtime_Client_Context=json.dumps(client_context),
        Lambda_Runtime_Cognito_Identity=json.dumps(
            {"cognitoIdentityId": "id", "cognitoIdentityPoolId": "pool"}
        ),
    )
    result = post.json()
    first, second = result.pop("remaining")
    assert 9_000 < first <= 10_000
    assert second <= first - 40
    assert result == {
        "aws_request_id": REQUEST_ID,
        "invoked_function_arn": ARN,
        "function_name": "fn",
        "function_version": "$LATEST",
        "memory_limit_in_mb": "128",
        "log_group_name": "/aws/lambda/fn",
        "log_stream_name": "2024/01/01/[$LATEST]abc",
        "identity": ["id", "pool"],
        "client_context": [{"k": "v"}, "t"],
    }
    api.answers.put_nowait(NextAnswer(headers={"Lambda-Runtime-Aws-Request-Id": "bare"}))
    result = (await api.next_post()).json()
    assert result["remaining"] == [0, 0]
    assert (result["invoked_function_arn"], result["client_context"]) == ("", None)
    assert result["identity"] == [None, None]
    post = await api.invoke(Lambda_Runtime_Client_Context="{not json")
    assert post.headers[ERROR_TYPE_HEADER] == "Runtime.LambdaContextUnmarshalError"


async def test_trace_id_env_per_invoke_and_private_vars_hidden(
    start_runtime: Start, api: StubRuntimeApi
) -> None:
    await start_runtime(
        {
            "app.py": """
            import os
            def handler(event, context):
                return {
                    "private": sorted(k for k in os.environ if k.startswith("_FAAS_")),
                    "trace": os.environ.get("_X_AMZN_TRACE_ID"),
                    "api": os.environ.get("AWS_LAMBDA_RUNTIME_API"),
                }
            """
        },
        # The explicit switch wins over a control fd.
        env={"_FAAS_TRANSPORT": "runtime-api", "_FAAS_CONTROL_FD": "99"},
    )
    trace = "Root=1-5e34a614-10bdxmplf1fb44f07bc535a1;Parent=07f5xmpl2d1f6f85;Sampled=1"
    post = await api.invoke(Lambda_Runtime_Trace_Id=trace)
    assert post.json() == {"private": [], "trace": trace, "api": api.address}
    post = await api.invoke()
    assert post.json()["trace"] is None


async def test_print_and_logging_go_to_stdout(start_runtime: Start, api: StubRuntimeApi) -> None:
    runtime = await start_runtime(
        {
            "app.py": """
            import logging, sys
            print("importing")
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
    post = await api.invoke()
    assert post.body == b"1"
    lines = (await runtime.output()).split("\n")
    assert lines[:3] == ["importing", "to stdout", "to stderr"]
    level, timestamp, request_id, message = lines[3].split("\t")
    assert (level, request_id, message) == ("[WARNING]", REQUEST_ID, "careful 42")
    time.strptime(timestamp[:-5], "%Y-%m-%dT%H:%M:%S")
    assert lines[4:] == ["via context", "no newline"]


@pytest.mark.parametrize(
    ("env", "limit"), [({"_FAAS_MAX_RESPONSE_BYTES": "1000"}, 1000), ({}, 6291556)]
)
async def test_oversize_result_posted_as_error(
    start_runtime: Start, api: StubRuntimeApi, env: dict[str, str], limit: int
) -> None:
    await start_runtime({"app.py": f"def handler(e, c):\n    return 'x' * {limit}\n"}, env=env)
    post = await api.invoke()
    assert post.path == PREFIX + f"/invocation/{REQUEST_ID}/error"
    assert post.headers[ERROR_TYPE_HEADER] == "Function.ResponseSizeTooLarge"
    assert post.json() == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size "
        f"({limit} bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }


async def test_marshal_and_unmarshal_errors(start_runtime: Start, api: StubRuntimeApi) -> None:
    await start_runtime({"app.py": "def handler(e, c):\n    return {1, 2} if e else 1\n"})
    post = await api.invoke(b"not json")
    assert post.headers[ERROR_TYPE_HEADER] == "Runtime.UnmarshalError"
    assert post.json() == {
        "errorMessage": "Unable to unmarshal input: Expecting value: line 1 column 1 (char 0)",
        "errorType": "Runtime.UnmarshalError",
        "requestId": REQUEST_ID,
        "stackTrace": [],
    }
    post = await api.invoke(b"true")
    assert post.headers[ERROR_TYPE_HEADER] == "Runtime.MarshalError"
    assert post.json()["errorMessage"] == (
        "Unable to marshal response: Object of type set is not JSON serializable"
    )


async def test_500_on_next_exits_1(start_runtime: Start, api: StubRuntimeApi) -> None:
    runtime = await start_runtime({"app.py": ECHO})
    api.answers.put_nowait(NextAnswer(status=500))
    assert await runtime.wait() == 1
    assert "Reason: '500'" in await runtime.output()


async def test_rejected_result_post_exits_1(start_runtime: Start, api: StubRuntimeApi) -> None:
    runtime = await start_runtime({"app.py": ECHO})
    api.post_status = 400
    await api.invoke()
    assert await runtime.wait() == 1
    assert "Reason: '400'" in await runtime.output()


async def test_next_without_request_id_exits_1(start_runtime: Start, api: StubRuntimeApi) -> None:
    runtime = await start_runtime({"app.py": ECHO})
    api.answers.put_nowait(NextAnswer())
    assert await runtime.wait() == 1
    assert "Lambda-Runtime-Aws-Request-Id" in await runtime.output()


async def test_api_gone_ends_the_runtime(start_runtime: Start) -> None:
    runtime = await start_runtime({"app.py": ECHO}, env={"AWS_LAMBDA_RUNTIME_API": "127.0.0.1:1"})
    assert await runtime.wait() == 1


@pytest.mark.parametrize("api", [0.1], indirect=True)
async def test_result_posted_after_the_api_closed_the_idle_connection(
    start_runtime: Start, api: StubRuntimeApi
) -> None:
    await start_runtime(
        {"app.py": "import time\ndef handler(e, c):\n    time.sleep(0.5)\n    return e\n"}
    )
    post = await api.invoke(b'{"slow": true}')
    assert (post.path, post.body) == (
        PREFIX + f"/invocation/{REQUEST_ID}/response",
        b'{"slow": true}',
    )
    assert post.client_port != api.next_ports[0]
    post = await api.invoke(b"2", request_id="again")
    assert post.body == b"2"


async def test_non_latin_error_type_header(start_runtime: Start, api: StubRuntimeApi) -> None:
    await start_runtime(
        {
            "app.py": """
            class Ошибка(Exception):
                pass
            def handler(e, c):
                raise Ошибка("x")
            """
        }
    )
    post = await api.invoke()
    assert post.headers[ERROR_TYPE_HEADER] == post.json()["errorType"] == "Ошибка"
