"""The Runtime API server: each environment gets its own loopback endpoint.

Design notes: ``AWS_LAMBDA_RUNTIME_API`` is only ``host:port``, so an environment
is told apart by the port it connects to. One aiohttp application serves every
environment; each session gets a listening site of its own on 127.0.0.1 port 0,
and a request finds its session through the local port of its connection.
"""

from __future__ import annotations

import enum
import logging
import socket
import uuid

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from faas.errors import FUNCTION_RESPONSE_SIZE_TOO_LARGE
from faas.runtime_api.extensions import ExtensionError
from faas.runtime_api.session import RuntimeSession

log = logging.getLogger(__name__)

# Wire names of the Runtime API (lambda-compat.md B).
PREFIX = "/2018-06-01/runtime"
HEADER_REQUEST_ID = "Lambda-Runtime-Aws-Request-Id"
HEADER_DEADLINE_MS = "Lambda-Runtime-Deadline-Ms"
HEADER_FUNCTION_ARN = "Lambda-Runtime-Invoked-Function-Arn"
HEADER_TRACE_ID = "Lambda-Runtime-Trace-Id"
HEADER_CLIENT_CONTEXT = "Lambda-Runtime-Client-Context"
HEADER_COGNITO_IDENTITY = "Lambda-Runtime-Cognito-Identity"
HEADER_ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
EXTENSION_PREFIX = "/2020-01-01/extension"
HEADER_EXTENSION_NAME = "Lambda-Extension-Name"
HEADER_EXTENSION_ID = "Lambda-Extension-Identifier"
HEADER_EXTENSION_EVENT_ID = "Lambda-Extension-Event-Identifier"
HEADER_EXTENSION_ERROR_TYPE = "Lambda-Extension-Function-Error-Type"

SESSIONS = web.AppKey("sessions", dict)
_SESSION_KEY = "faas.runtime_session"


class RuntimeApiState(enum.Enum):
    NEW = "new"  # constructed
    RUNNING = "running"  # serving endpoints
    STOPPED = "stopped"  # every endpoint closed


def _api_error(status: int, error_type: str, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=orjson.dumps({"errorMessage": message, "errorType": error_type}),
        content_type="application/json",
    )


def _accepted() -> web.Response:
    return web.Response(status=202, body=b'{"status":"OK"}', content_type="application/json")


class RuntimeApiServer:
    """Opens and closes per-environment Runtime API endpoints."""

    __slots__ = ("_runner", "_sessions", "_sites", "_state")

    def __init__(self) -> None:
        self._sessions: dict[int, RuntimeSession] = {}
        self._sites: dict[int, web.SockSite] = {}
        self._runner: web.AppRunner | None = None
        self._state = RuntimeApiState.NEW

    async def start(self) -> None:
        if self._state is not RuntimeApiState.NEW:
            raise RuntimeError(f"runtime API cannot start from {self._state.value}")
        app = web.Application(middlewares=[self._find_session], client_max_size=16 * 1024**2)
        app.router.add_routes(
            [
                web.get(f"{PREFIX}/invocation/next", _next),
                web.post(f"{PREFIX}/invocation/{{request_id}}/response", _response),
                web.post(f"{PREFIX}/invocation/{{request_id}}/error", _error),
                web.post(f"{PREFIX}/init/error", _init_error),
                web.post(f"{EXTENSION_PREFIX}/register", _register),
                web.get(f"{EXTENSION_PREFIX}/event/next", _event_next),
                web.post(f"{EXTENSION_PREFIX}/init/error", _extension_init_error),
                web.post(f"{EXTENSION_PREFIX}/exit/error", _extension_exit_error),
            ]
        )
        # Runtimes keep one connection open across long invocations: never time it out early.
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            keepalive_timeout=3600,
            shutdown_timeout=0.5,
        )
        await self._runner.setup()
        self._state = RuntimeApiState.RUNNING

    async def stop(self) -> None:
        if self._state is not RuntimeApiState.RUNNING:
            self._state = RuntimeApiState.STOPPED
            return
        self._state = RuntimeApiState.STOPPED
        for session in self._sessions.values():
            session.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._sessions.clear()
        self._sites.clear()

    async def open(self, session: RuntimeSession) -> str:
        """Give ``session`` an endpoint; returns the ``host:port`` for AWS_LAMBDA_RUNTIME_API."""
        if self._runner is None or self._state is not RuntimeApiState.RUNNING:
            raise RuntimeError("runtime API is not running")
        # Bound here, so the port (the session's key) is known before the site serves.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        site = web.SockSite(self._runner, sock)
        await site.start()
        self._sessions[port] = session
        self._sites[port] = site
        return f"127.0.0.1:{port}"

    async def close(self, endpoint: str) -> None:
        """Close an environment's endpoint and end its session."""
        port = int(endpoint.rsplit(":", 1)[1])
        session = self._sessions.pop(port, None)
        if session is not None:
            session.close()
        site = self._sites.pop(port, None)
        if site is not None:
            await site.stop()

    @web.middleware
    async def _find_session(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        session = self._sessions.get(int(sockname[1])) if sockname else None
        if session is None:
            return _api_error(500, "InternalServerError", "No environment behind this endpoint")
        request[_SESSION_KEY] = session
        return await handler(request)


def _session(request: web.Request) -> RuntimeSession:
    session: RuntimeSession = request[_SESSION_KEY]
    return session


async def _next(request: web.Request) -> web.StreamResponse:
    frame = await _session(request).next_invocation()
    if frame is None:
        return _api_error(500, "InternalServerError", "The environment is shutting down")
    headers = {
        HEADER_REQUEST_ID: str(frame["id"]),
        HEADER_DEADLINE_MS: str(frame["deadline_ms"]),
        HEADER_FUNCTION_ARN: str(frame["arn"]),
    }
    if frame.get("trace_id"):
        headers[HEADER_TRACE_ID] = str(frame["trace_id"])
    if frame.get("client_context"):
        headers[HEADER_CLIENT_CONTEXT] = str(frame["client_context"])
    if frame.get("cognito_identity"):
        headers[HEADER_COGNITO_IDENTITY] = str(frame["cognito_identity"])
    # Exactly "application/json": anything else makes awslambdaric pass raw bytes.
    return web.Response(body=frame["payload"], content_type="application/json", headers=headers)


def _unknown_request_id() -> web.Response:
    return _api_error(400, "InvalidRequestID", "Invalid request ID")


async def _response(request: web.Request) -> web.Response:
    session = _session(request)
    request_id = request.match_info["request_id"]
    if not session.is_current(request_id):
        return _unknown_request_id()
    limit = session.max_response_bytes
    body = await request.content.read(limit + 1)
    while len(body) <= limit and not request.content.at_eof():
        more = await request.content.read(limit + 1 - len(body))
        if not more:
            break
        body += more
    if len(body) > limit:
        message = f"Response payload size exceeded maximum allowed payload size ({limit} bytes)."
        session.post_error(
            request_id,
            orjson.dumps({"errorMessage": message, "errorType": FUNCTION_RESPONSE_SIZE_TOO_LARGE}),
            FUNCTION_RESPONSE_SIZE_TOO_LARGE,
        )
        return _api_error(413, "RequestEntityTooLarge",
                          f"Exceeded maximum allowed payload size ({limit} bytes).")  # fmt: skip
    session.post_response(request_id, body)
    return _accepted()


def _error_type(request: web.Request, body: bytes) -> str:
    header = request.headers.get(HEADER_ERROR_TYPE)
    if header:
        return header
    try:
        value = orjson.loads(body).get("errorType")
    except (orjson.JSONDecodeError, AttributeError):
        return "Unhandled"
    return str(value) if value else "Unhandled"


async def _error(request: web.Request) -> web.Response:
    session = _session(request)
    request_id = request.match_info["request_id"]
    if not session.is_current(request_id):
        return _unknown_request_id()
    body = await request.read()
    error_type = _error_type(request, body)
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        body = orjson.dumps({"errorMessage": body.decode("utf-8", "replace"),
                             "errorType": error_type})  # fmt: skip
    session.post_error(request_id, body, error_type)
    return _accepted()


async def _init_error(request: web.Request) -> web.Response:
    session = _session(request)
    body = await request.read()
    error_type = _error_type(request, body)
    try:
        parsed = orjson.loads(body)
        if not isinstance(parsed, dict):
            raise ValueError("not an object")
    except (orjson.JSONDecodeError, ValueError):
        body = orjson.dumps({"errorMessage": body.decode("utf-8", "replace"),
                             "errorType": error_type})  # fmt: skip
    if not session.post_init_error(body):
        return _api_error(403, "InvalidStateTransition", "Init has already finished")
    return _accepted()


def _extension_error(error: ExtensionError) -> web.Response:
    return _api_error(error.status, error.error_type, error.message)


async def _register(request: web.Request) -> web.Response:
    session = _session(request)
    try:
        body = orjson.loads(await request.read() or b"{}")
        events = body.get("events", []) if isinstance(body, dict) else None
        if not isinstance(events, list):
            raise ExtensionError(400, "InvalidRequestFormat", "events must be a list")
        if isinstance(body, dict) and "configurationKeys" in body:
            raise ExtensionError(400, "InvalidRequestFormat", "configurationKeys is deprecated")
        identifier = session.extensions.register(
            request.headers.get(HEADER_EXTENSION_NAME, ""), [str(e) for e in events]
        )
    except orjson.JSONDecodeError:
        return _api_error(400, "InvalidRequestFormat", "The body is not JSON")
    except ExtensionError as error:
        return _extension_error(error)
    return web.Response(
        body=orjson.dumps(session.function_info),
        content_type="application/json",
        headers={HEADER_EXTENSION_ID: identifier},
    )


async def _event_next(request: web.Request) -> web.Response:
    session = _session(request)
    try:
        event = await session.extensions.next_event(request.headers.get(HEADER_EXTENSION_ID))
    except ExtensionError as error:
        return _extension_error(error)
    return web.Response(
        body=orjson.dumps(event),
        content_type="application/json",
        headers={HEADER_EXTENSION_EVENT_ID: str(uuid.uuid4())},
    )


async def _extension_report(request: web.Request, is_init: bool) -> web.Response:
    session = _session(request)
    error_type = request.headers.get(HEADER_EXTENSION_ERROR_TYPE)
    if not error_type:
        return _api_error(
            403, "Extension.MissingHeader", f"{HEADER_EXTENSION_ERROR_TYPE} is required"
        )
    body = await request.read()
    try:
        if is_init:
            session.extensions.report_init_error(
                request.headers.get(HEADER_EXTENSION_ID),
                orjson.dumps({"errorType": "Extension.InitError",
                              "errorMessage": f"{error_type}: {body.decode('utf-8', 'replace')}"}),
            )  # fmt: skip
        else:
            session.extensions.report_exit_error(request.headers.get(HEADER_EXTENSION_ID))
    except ExtensionError as error:
        return _extension_error(error)
    return _accepted()


async def _extension_init_error(request: web.Request) -> web.Response:
    return await _extension_report(request, is_init=True)


async def _extension_exit_error(request: web.Request) -> web.Response:
    return await _extension_report(request, is_init=False)
