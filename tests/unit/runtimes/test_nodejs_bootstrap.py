"""runtimes/nodejs/bootstrap.js, run on the machine's node against a stub Runtime API.

Each test writes handler files into a temporary task root, starts a stub Runtime API
(aiohttp on 127.0.0.1, port 0) that serves queued invocations on ``/next`` and records
every POST, then runs ``node bootstrap.js`` there as Lambda does and checks what it posts,
what it logs and how it exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import struct
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

BOOTSTRAP = Path(__file__).resolve().parents[3] / "runtimes" / "nodejs" / "bootstrap.js"
WAIT_S = 10.0
FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:fn-node"
TRACE_ID = "Root=1-5e34a614-10bdc3f1f1fb44f07bc535a1;Parent=07f5c2d1f6f85a1b;Sampled=1"
LOG_RECORD = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)\t([^\t]*)\t([A-Z]+)\t(.*)$")

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")


@dataclass
class Post:
    kind: str  # "response", "error" or "init_error"
    request_id: str | None
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class StubRuntimeApi:
    """Serves queued invocations (or bare statuses) on /next and records every POST."""

    invocations: asyncio.Queue[tuple[bytes, dict[str, str]] | int] = field(
        default_factory=asyncio.Queue
    )
    posts: asyncio.Queue[Post] = field(default_factory=asyncio.Queue)
    post_status: int = 202
    next_calls: int = 0
    client_ports: list[int] = field(default_factory=list)  # the runtime's port, per request
    runner: web.AppRunner | None = None
    address: str = ""

    async def start(self) -> None:
        app = web.Application()
        prefix = "/2018-06-01/runtime"
        app.router.add_get(f"{prefix}/invocation/next", self._next)
        app.router.add_post(f"{prefix}/invocation/{{id}}/response", self._record("response"))
        app.router.add_post(f"{prefix}/invocation/{{id}}/error", self._record("error"))
        app.router.add_post(f"{prefix}/init/error", self._record("init_error"))
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.address = f"{host}:{port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def push(
        self,
        event: Any = None,
        *,
        request_id: str | None = None,
        deadline_ms: int | None = None,
        raw: bytes | None = None,
        **extra_headers: str,
    ) -> str:
        request_id = request_id or str(uuid.uuid4())
        if deadline_ms is None:
            deadline_ms = int(time.time() * 1000) + 30_000
        headers = {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
            "Lambda-Runtime-Trace-Id": TRACE_ID,
        }
        headers.update({name.replace("_", "-"): value for name, value in extra_headers.items()})
        body = raw if raw is not None else json.dumps(event if event is not None else {}).encode()
        self.invocations.put_nowait((body, headers))
        return request_id

    def push_status(self, status: int) -> None:
        self.invocations.put_nowait(status)

    async def wait_next_calls(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while self.next_calls < count:
            assert time.monotonic() < deadline, f"only {self.next_calls} calls of /next"
            await asyncio.sleep(0.01)

    async def next_post(self) -> Post:
        return await asyncio.wait_for(self.posts.get(), WAIT_S)

    def _note_client(self, request: web.Request) -> None:
        assert request.transport is not None
        self.client_ports.append(request.transport.get_extra_info("peername")[1])

    async def _next(self, request: web.Request) -> web.StreamResponse:
        self.next_calls += 1
        self._note_client(request)
        item = await self.invocations.get()
        if isinstance(item, int):
            body = json.dumps({"errorType": "InternalServerError", "errorMessage": "stub"})
            return web.Response(status=item, body=body.encode(), content_type="application/json")
        body, headers = item
        return web.Response(body=body, content_type="application/json", headers=headers)

    def _record(self, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            self._note_client(request)
            post = Post(
                kind=kind,
                request_id=request.match_info.get("id"),
                headers=dict(request.headers),
                body=await request.read(),
            )
            self.posts.put_nowait(post)
            if self.post_status == 202:
                return web.Response(status=202, body=b'{"status":"OK"}')
            return web.Response(status=self.post_status, body=b'{"errorType":"InvalidRequestID"}')

        return handler


class NodeRuntime:
    """One `node bootstrap.js` process, its stdout/stderr collected as it runs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stdout = bytearray()
        self.stderr = bytearray()
        assert process.stdout is not None and process.stderr is not None
        self._readers = [
            asyncio.create_task(self._drain(process.stdout, self.stdout)),
            asyncio.create_task(self._drain(process.stderr, self.stderr)),
        ]

    @staticmethod
    async def _drain(stream: asyncio.StreamReader, into: bytearray) -> None:
        while chunk := await stream.read(65536):
            into.extend(chunk)

    async def wait_exit(self) -> int:
        code = await asyncio.wait_for(self.process.wait(), WAIT_S)
        await asyncio.gather(*self._readers)
        return code

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        await asyncio.gather(*self._readers)

    def log_records(self) -> list[tuple[str, str, str, str]]:
        """Parsed `time\\trequest id\\tLEVEL\\tmessage` lines of stdout."""
        records = []
        for line in self.stdout.decode().split("\n"):
            match = LOG_RECORD.match(line)
            if match:
                records.append(match.groups())
        return records


Start = Callable[..., Awaitable[NodeRuntime]]


@pytest.fixture
async def api() -> AsyncIterator[StubRuntimeApi]:
    stub = StubRuntimeApi()
    await stub.start()
    yield stub
    await stub.close()


@pytest.fixture
async def start(api: StubRuntimeApi, tmp_path: Path) -> AsyncIterator[Start]:
    runtimes: list[NodeRuntime] = []

    async def start_runtime(
        files: dict[str, str],
        handler: str = "app.handler",
        pass_fds: tuple[int, ...] = (),
        **env: str,
    ) -> NodeRuntime:
        task_root = tmp_path / "task"
        for name, text in files.items():
            target = task_root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(text))
        task_root.mkdir(exist_ok=True)
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": api.address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": str(task_root),
            "AWS_LAMBDA_FUNCTION_NAME": "fn-node",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/fn-node",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2024/01/01/[$LATEST]0123456789abcdef0123456789abcdef",
            "AWS_REGION": "us-east-1",
            **env,
        }
        process = await asyncio.create_subprocess_exec(
            "node",
            str(BOOTSTRAP),
            cwd=task_root,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=pass_fds,
        )
        runtime = NodeRuntime(process)
        runtimes.append(runtime)
        return runtime

    yield start_runtime
    for runtime in runtimes:
        await runtime.stop()


# ----------------------------------------------------------------------------- results


async def test_async_handler_result(api: StubRuntimeApi, start: Start) -> None:
    await start({"app.js": "exports.handler = async (event) => ({ got: event, ok: true });"})
    request_id = api.push({"a": 1, "b": [1, 2]})
    post = await api.next_post()
    assert (post.kind, post.request_id) == ("response", request_id)
    assert post.json() == {"got": {"a": 1, "b": [1, 2]}, "ok": True}
    assert post.headers["Content-Type"] == "application/json"


async def test_callback_handler_waits_for_empty_event_loop(
    api: StubRuntimeApi, start: Start
) -> None:
    await start(
        {
            "app.js": """
            exports.handler = (event, context, callback) => {
              context.callbackWaitsForEmptyEventLoop = event.wait;
              setTimeout(() => {}, event.timerMs);
              callback(null, { x: event.x });
            };
            """
        }
    )
    # Default: the result is posted only once the pending timer has run.
    started = time.monotonic()
    api.push({"x": 1, "wait": True, "timerMs": 400})
    post = await api.next_post()
    assert post.kind == "response"
    assert post.json() == {"x": 1}
    assert time.monotonic() - started >= 0.35
    # callbackWaitsForEmptyEventLoop = false: posted at once despite a 60 s timer.
    started = time.monotonic()
    api.push({"x": 2, "wait": False, "timerMs": 60_000})
    post = await api.next_post()
    assert post.json() == {"x": 2}
    assert time.monotonic() - started < 5


async def test_legacy_context_succeed_and_promise_returning_function(
    api: StubRuntimeApi, start: Start
) -> None:
    await start(
        {
            "app.js": """
            exports.handler = function (event, context) {
              if (event.mode === 'succeed') { context.succeed({ via: 'succeed' }); return; }
              return Promise.resolve({ via: 'promise' });
            };
            """
        }
    )
    api.push({"mode": "succeed"})
    assert (await api.next_post()).json() == {"via": "succeed"}
    api.push({"mode": "promise"})
    assert (await api.next_post()).json() == {"via": "promise"}


async def test_undefined_result_is_null(api: StubRuntimeApi, start: Start) -> None:
    await start({"app.js": "exports.handler = async () => undefined;"})
    api.push({})
    post = await api.next_post()
    assert post.kind == "response"
    assert post.body == b"null"


async def test_non_async_handler_that_never_calls_back_returns_null(
    api: StubRuntimeApi, start: Start
) -> None:
    await start({"app.js": "exports.handler = (event, context, callback) => 'ignored';"})
    api.push({})
    post = await api.next_post()
    assert (post.kind, post.body) == ("response", b"null")


async def test_two_invokes_reuse_the_process(api: StubRuntimeApi, start: Start) -> None:
    runtime = await start(
        {
            "app.js": """
            let count = 0;
            exports.handler = async () => ({ count: ++count, pid: process.pid });
            """
        }
    )
    api.push({})
    first = (await api.next_post()).json()
    api.push({})
    second = (await api.next_post()).json()
    assert (first["count"], second["count"]) == (1, 2)
    assert first["pid"] == second["pid"] == runtime.process.pid
    assert runtime.process.returncode is None
    # next, response, next, response, next: all over one keep-alive connection.
    await api.wait_next_calls(3)
    assert len(api.client_ports) == 5
    assert len(set(api.client_ports)) == 1


@pytest.mark.parametrize(
    ("files", "handler"),
    [
        ({"src/app.js": "exports.handler = async () => 'js';"}, "src/app.handler"),
        ({"lib/index.cjs": "module.exports.main = async () => 'cjs';"}, "lib/index.main"),
        ({"app.mjs": "export const handler = async () => 'mjs';"}, "app.handler"),
        (
            {
                "package.json": '{"type": "module"}',
                "app.js": "export const handler = async () => 'esm-js';",
            },
            "app.handler",
        ),
        ({"app.js": "exports.ns = { deep: async () => 'nested' };"}, "app.ns.deep"),
    ],
    ids=["subdirectory", "cjs", "mjs", "type-module-js", "nested-path"],
)
async def test_handler_file_kinds(
    api: StubRuntimeApi, start: Start, files: dict[str, str], handler: str
) -> None:
    await start(files, handler=handler)
    api.push({})
    post = await api.next_post()
    assert post.kind == "response", post.body
    assert post.json() in {"js", "cjs", "mjs", "esm-js", "nested"}


# ----------------------------------------------------------------------------- context


async def test_context_fields(api: StubRuntimeApi, start: Start) -> None:
    await start(
        {
            "app.js": """
            exports.handler = async (event, context) => ({
              awsRequestId: context.awsRequestId,
              invokedFunctionArn: context.invokedFunctionArn,
              functionName: context.functionName,
              functionVersion: context.functionVersion,
              memoryLimitInMB: context.memoryLimitInMB,
              logGroupName: context.logGroupName,
              logStreamName: context.logStreamName,
              remaining: context.getRemainingTimeInMillis(),
              waits: context.callbackWaitsForEmptyEventLoop,
              legacy: [typeof context.done, typeof context.succeed, typeof context.fail],
              identity: context.identity === undefined ? 'absent' : context.identity,
              clientContext: context.clientContext === undefined ? 'absent' : 'present',
              traceId: process.env._X_AMZN_TRACE_ID,
            });
            """
        }
    )
    request_id = api.push({}, deadline_ms=int(time.time() * 1000) + 20_000)
    got = (await api.next_post()).json()
    assert 15_000 < got.pop("remaining") <= 20_000
    assert got == {
        "awsRequestId": request_id,
        "invokedFunctionArn": FUNCTION_ARN,
        "functionName": "fn-node",
        "functionVersion": "$LATEST",
        "memoryLimitInMB": "256",
        "logGroupName": "/aws/lambda/fn-node",
        "logStreamName": "2024/01/01/[$LATEST]0123456789abcdef0123456789abcdef",
        "waits": True,
        "legacy": ["function", "function", "function"],
        "identity": "absent",
        "clientContext": "absent",
        "traceId": TRACE_ID,
    }


async def test_client_context_and_identity(api: StubRuntimeApi, start: Start) -> None:
    await start(
        {
            "app.js": """
            exports.handler = async (event, context) => ({
              clientContext: context.clientContext,
              identity: context.identity,
            });
            """
        }
    )
    client_context = {
        "client": {"installation_id": "i-1", "app_title": "demo"},
        "custom": {"tenant": "t1"},
        "env": {"platform": "linux"},
    }
    identity = {"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"}
    api.push(
        {},
        Lambda_Runtime_Client_Context=json.dumps(client_context),
        Lambda_Runtime_Cognito_Identity=json.dumps(identity),
    )
    assert (await api.next_post()).json() == {
        "clientContext": client_context,
        "identity": identity,
    }
    # Unparseable client context fails the invoke, the process lives on.
    api.push({}, Lambda_Runtime_Client_Context="{not json")
    post = await api.next_post()
    assert post.kind == "error"
    assert post.json()["errorMessage"].startswith("Cannot parse ClientContext as json: SyntaxError")


# ----------------------------------------------------------------------------- errors


async def test_thrown_error(api: StubRuntimeApi, start: Start) -> None:
    runtime = await start(
        {"app.js": "exports.handler = async () => { throw new TypeError('bad thing'); };"}
    )
    request_id = api.push({})
    post = await api.next_post()
    assert (post.kind, post.request_id) == ("error", request_id)
    assert post.headers["Lambda-Runtime-Function-Error-Type"] == "TypeError"
    assert post.headers["Content-Type"] == "application/json"
    body = post.json()
    assert set(body) == {"errorType", "errorMessage", "trace"}
    assert body["errorType"] == "TypeError"
    assert body["errorMessage"] == "bad thing"
    assert body["trace"][0] == "TypeError: bad thing"
    assert any("app.js" in frame and frame.lstrip().startswith("at ") for frame in body["trace"])
    # The process survives and logs the error as AWS does.
    api.push({})
    await api.next_post()
    await runtime.stop()  # drain stdout to EOF
    errors = [r for r in runtime.log_records() if r[2] == "ERROR"]
    assert errors and errors[0][1] == request_id
    assert errors[0][3].startswith(
        'Invoke Error \t{"errorType":"TypeError","errorMessage":"bad thing"'
    )


async def test_rejections_and_non_error_values(api: StubRuntimeApi, start: Start) -> None:
    await start(
        {
            "app.js": """
            exports.handler = function (event, context, callback) {
              switch (event.mode) {
                case 'reject': return Promise.reject(new RangeError('nope'));
                case 'string': return (async () => { throw 'plain'; })();
                case 'sync': throw new Error('sync throw');
                case 'callback': return callback(new Error('via callback'));
                case 'fail': return context.fail();
              }
            };
            """
        }
    )
    expected = {
        "reject": ("RangeError", "nope"),
        "string": ("string", "plain"),
        "sync": ("Error", "sync throw"),
        "callback": ("Error", "via callback"),
        "fail": ("string", "handled"),
    }
    for mode, (error_type, message) in expected.items():
        api.push({"mode": mode})
        post = await api.next_post()
        assert post.kind == "error", mode
        body = post.json()
        assert (body["errorType"], body["errorMessage"]) == (error_type, message), mode
        assert post.headers["Lambda-Runtime-Function-Error-Type"] == error_type
        if error_type == "string":
            assert body["trace"] == []


async def test_unserialisable_result(api: StubRuntimeApi, start: Start) -> None:
    await start({"app.js": "exports.handler = async () => { const o = {}; o.o = o; return o; };"})
    api.push({})
    post = await api.next_post()
    assert post.kind == "error"
    assert post.json()["errorMessage"] == "Unable to stringify response body"


async def test_async_handler_that_never_settles(api: StubRuntimeApi, start: Start) -> None:
    await start({"app.js": "exports.handler = async () => new Promise(() => {});"})
    api.push({})
    post = await api.next_post()
    assert post.kind == "error"
    assert post.json()["errorType"] == "Runtime.NodeJsExit"


async def test_unhandled_rejection_fails_invoke_and_exits(
    api: StubRuntimeApi, start: Start
) -> None:
    runtime = await start(
        {
            "app.js": """
            exports.handler = async () => {
              Promise.reject(new Error('stray'));
              await new Promise((resolve) => setTimeout(resolve, 2000));
              return 'too late';
            };
            """
        }
    )
    request_id = api.push({})
    post = await api.next_post()
    assert (post.kind, post.request_id) == ("error", request_id)
    body = post.json()
    assert body["errorType"] == "Runtime.UnhandledPromiseRejection"
    assert body["errorMessage"] == "Error: stray"
    assert post.headers["Lambda-Runtime-Function-Error-Type"] == "Runtime.UnhandledPromiseRejection"
    assert await runtime.wait_exit() == 128


async def test_uncaught_exception_fails_invoke_and_exits(api: StubRuntimeApi, start: Start) -> None:
    runtime = await start(
        {
            "app.js": """
            exports.handler = (event, context, callback) => {
              setTimeout(() => { throw new Error('kaboom'); }, 10);
            };
            """
        }
    )
    request_id = api.push({})
    post = await api.next_post()
    assert (post.kind, post.request_id) == ("error", request_id)
    assert (post.json()["errorType"], post.json()["errorMessage"]) == ("Error", "kaboom")
    assert await runtime.wait_exit() == 129


# ----------------------------------------------------------------------------- init errors


@pytest.mark.parametrize(
    ("files", "handler", "error_type", "message"),
    [
        ({}, "missing.handler", "Runtime.ImportModuleError", "Error: Cannot find module 'missing'"),
        (
            {"app.js": "exports.other = async () => 1;"},
            "app.handler",
            "Runtime.HandlerNotFound",
            "app.handler is undefined or not exported",
        ),
        (
            {"app.js": "exports.handler = 42;"},
            "app.handler",
            "Runtime.HandlerNotFound",
            "app.handler is not a function",
        ),
        ({"app.js": ""}, "app", "Runtime.MalformedHandlerName", "Bad handler"),
        (
            {"app.js": "exports.handler = async () => {;"},
            "app.handler",
            "Runtime.UserCodeSyntaxError",
            "SyntaxError: ",
        ),
        (
            {"app.js": "require('left-pad'); exports.handler = async () => 1;"},
            "app.handler",
            "Runtime.ImportModuleError",
            "Error: Cannot find module 'left-pad'",
        ),
        (
            {"app.js": "throw new TypeError('init failed');"},
            "app.handler",
            "TypeError",
            "init failed",
        ),
    ],
    ids=[
        "import-error",
        "handler-missing",
        "not-a-function",
        "malformed",
        "syntax-error",
        "missing-dependency",
        "init-throws",
    ],
)
async def test_init_errors(
    api: StubRuntimeApi,
    start: Start,
    files: dict[str, str],
    handler: str,
    error_type: str,
    message: str,
) -> None:
    runtime = await start(files, handler=handler)
    post = await api.next_post()
    assert post.kind == "init_error"
    assert post.headers["Lambda-Runtime-Function-Error-Type"] == error_type
    body = post.json()
    assert body["errorType"] == error_type
    assert body["errorMessage"].startswith(message)
    assert isinstance(body["stackTrace"], list) and body["stackTrace"] == body["trace"]
    assert body["trace"][0].startswith(f"{error_type}: ")
    if error_type == "Runtime.ImportModuleError":
        assert "\nRequire stack:\n" in body["errorMessage"]
    assert await runtime.wait_exit() == 1
    assert api.next_calls == 0
    # Logged as AWS does, before any request id exists.
    records = runtime.log_records()
    assert records and records[-1][1:3] == ("undefined", "ERROR")
    assert records[-1][3].startswith(f'Uncaught Exception \t{{"errorType":"{error_type}"')


# ----------------------------------------------------------------------------- logs


async def test_console_log_format(api: StubRuntimeApi, start: Start) -> None:
    runtime = await start(
        {
            "app.js": """
            console.log('loading');
            exports.handler = async (event) => {
              console.log('hello %s', 'world', 42);
              console.info({ a: 1 });
              console.warn('careful');
              console.error('broken', new Error('x').message);
              console.debug('details');
              console.trace('tracing');
              console.log('line one\\nline two');
              return 'done';
            };
            """
        }
    )
    request_id = api.push({})
    assert (await api.next_post()).json() == "done"
    await runtime.stop()  # drain stdout to EOF
    records = runtime.log_records()
    assert [r[1:] for r in records] == [
        ("undefined", "INFO", "loading"),
        (request_id, "INFO", "hello world 42"),
        (request_id, "INFO", "{ a: 1 }"),
        (request_id, "WARN", "careful"),
        (request_id, "ERROR", "broken x"),
        (request_id, "DEBUG", "details"),
        (request_id, "TRACE", "tracing"),
        # One call is one record: AWS writes embedded newlines as carriage returns.
        (request_id, "INFO", "line one\rline two"),
    ]
    assert runtime.stdout.decode().endswith("line one\rline two\n")


async def test_json_log_format_and_level(api: StubRuntimeApi, start: Start) -> None:
    runtime = await start(
        {
            "app.js": """
            exports.handler = async () => {
              console.debug('hidden');
              console.info('shown', 1);
              return null;
            };
            """
        },
        AWS_LAMBDA_LOG_FORMAT="JSON",
        AWS_LAMBDA_LOG_LEVEL="INFO",
    )
    request_id = api.push({})
    await api.next_post()
    await runtime.stop()  # drain stdout to EOF
    lines = [json.loads(line) for line in runtime.stdout.decode().splitlines() if line]
    assert len(lines) == 1
    assert lines[0]["level"] == "INFO"
    assert lines[0]["requestId"] == request_id
    assert lines[0]["message"] == "shown 1"


# ----------------------------------------------------------------------------- streaming


async def test_streamify_response(api: StubRuntimeApi, start: Start) -> None:
    await start(
        {
            "app.js": """
            exports.handler = awslambda.streamifyResponse(async (event, stream, context) => {
              const http = awslambda.HttpResponseStream.from(stream, { statusCode: 201 });
              http.write('part1-');
              await new Promise((resolve) => setTimeout(resolve, 20));
              http.end('part2');
            });
            """
        }
    )
    api.push({})
    post = await api.next_post()
    assert post.kind == "response"
    assert post.headers["Lambda-Runtime-Function-Response-Mode"] == "streaming"
    assert post.headers["Transfer-Encoding"] == "chunked"
    assert post.headers["Content-Type"] == "application/vnd.awslambda.http-integration-response"
    prelude, payload = post.body.split(b"\0" * 8, 1)
    assert json.loads(prelude) == {"statusCode": 201}
    assert payload == b"part1-part2"
    # The loop goes on after a streamed response.
    api.push({})
    assert (await api.next_post()).kind == "response"


# ----------------------------------------------------------------------------- runtime API


async def test_status_500_on_next_exits(api: StubRuntimeApi, start: Start) -> None:
    runtime = await start({"app.js": "exports.handler = async () => 1;"})
    api.push_status(500)
    assert await runtime.wait_exit() == 1
    assert b"500" in runtime.stderr


async def test_refused_result_post_exits(api: StubRuntimeApi, start: Start) -> None:
    runtime = await start({"app.js": "exports.handler = async () => 1;"})
    api.post_status = 400
    api.push({})
    assert (await api.next_post()).kind == "response"
    assert await runtime.wait_exit() == 1
    assert api.next_calls == 1


async def test_telemetry_fd_framing(api: StubRuntimeApi, start: Start) -> None:
    read_fd, write_fd = os.pipe()
    try:
        runtime = await start(
            {"app.js": "exports.handler = async () => { console.warn('a\\nb'); return 1; };"},
            pass_fds=(write_fd,),
            _LAMBDA_TELEMETRY_LOG_FD=str(write_fd),
        )
        os.close(write_fd)
        write_fd = -1
        request_id = api.push({})
        await api.next_post()
        await runtime.stop()
        data = b""
        while chunk := os.read(read_fd, 65536):
            data += chunk
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
    assert runtime.stdout == b""
    frame_type, length, micros = struct.unpack(">IiQ", data[:16])
    assert frame_type == 0xA55A0003 | 0b10000  # text record, WARN
    assert abs(micros / 1e6 - time.time()) < 60
    message = data[16 : 16 + length].decode()
    assert len(data) == 16 + length
    assert message.split("\t")[1:] == [request_id, "WARN", "a\nb\n"]
