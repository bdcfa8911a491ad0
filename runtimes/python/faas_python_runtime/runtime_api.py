"""The runtime's client of Lambda's Runtime API: one keep-alive HTTP/1.1 connection, stdlib only.

Design notes: this is the `Transport` (transport.py) used when the runtime runs as a
Lambda runtime client, as awslambdaric does: `GET next` long-polls with no timeout, the
answer goes to `response` or `error`, an init failure to `init/error`. Any non-2xx answer
means the runtime must stop, so it raises `RuntimeApiError` and the process exits 1. There
is no frame channel for output here, so user output goes straight to file descriptor 1,
which the node reads.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
from urllib.parse import quote

from .errors import ErrorBody
from .transport import Invocation, TransportError

# The Lambda Runtime API, as awslambdaric speaks it.
API_PREFIX = "/2018-06-01/runtime"
NEXT_PATH = API_PREFIX + "/invocation/next"
INVOCATION_PATH = API_PREFIX + "/invocation/"
RESPONSE_SUFFIX = "/response"
ERROR_SUFFIX = "/error"
INIT_ERROR_PATH = API_PREFIX + "/init/error"
REQUEST_ID_HEADER = "Lambda-Runtime-Aws-Request-Id"
DEADLINE_HEADER = "Lambda-Runtime-Deadline-Ms"
FUNCTION_ARN_HEADER = "Lambda-Runtime-Invoked-Function-Arn"
TRACE_ID_HEADER = "Lambda-Runtime-Trace-Id"
CLIENT_CONTEXT_HEADER = "Lambda-Runtime-Client-Context"
COGNITO_IDENTITY_HEADER = "Lambda-Runtime-Cognito-Identity"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
CONTENT_TYPE_HEADER = "Content-Type"
JSON_CONTENT_TYPE = "application/json"  # exactly this on `next` means: decode the event
RAW_CONTENT_TYPE = "application/unknown"  # a result the handler returned as bytes

CONNECT_TIMEOUT_S = 1.0
STDOUT_FD = 1
ERROR_BODY_PREVIEW_BYTES = 1024

# Header values: str goes out as Latin-1; bytes (an errorType with any character) as is.
Headers = dict[str, str | bytes]


class RuntimeApiError(TransportError):
    """The Runtime API answered with a non-2xx status or without a request id."""


class _Connection(http.client.HTTPConnection):
    """An HTTP connection whose connect is bounded but whose requests are not.

    `next` may block for as long as the environment stays idle, so only the connect
    (redone whenever the API closed the connection) gets `CONNECT_TIMEOUT_S`.
    """

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(None)


def _parse_deadline_ms(text: str | None) -> int:
    """The deadline header as an int; absent or malformed reads as 0 (no time left)."""
    try:
        return int(text) if text else 0
    except ValueError:
        return 0


def _error_type_header(error: ErrorBody) -> bytes:
    """The errorType as UTF-8: a class name may hold characters Latin-1 lacks."""
    error_type: str = error["errorType"]
    return error_type.encode("utf-8")


def _invocation_path(request_id: str, suffix: str) -> str:
    return INVOCATION_PATH + quote(request_id, safe="") + suffix


class RuntimeApiClient:
    """The Runtime API `Transport`: blocking, used by the invoking thread only (logs aside)."""

    __slots__ = ("_connection", "_user_agent")

    def __init__(self, address: str) -> None:
        """Prepare a client of `address` (`host:port`); nothing connects until the first call."""
        self._connection = _Connection(address, timeout=CONNECT_TIMEOUT_S)
        version = sys.version_info
        self._user_agent = f"faas-python-runtime/{version.major}.{version.minor}.{version.micro}"

    def _exchange(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Headers | None = None,
    ) -> tuple[http.client.HTTPResponse, bytes]:
        """Send one request and read the whole answer, so the connection can be reused.

        Raises:
            ConnectionError: the API is gone.
            RuntimeApiError: the answer is not 2xx.
        """
        all_headers: Headers = {"User-Agent": self._user_agent}
        if headers:
            all_headers.update(headers)
        connection = self._connection
        is_reused = connection.sock is not None
        try:
            response, data = self._send(method, path, body, all_headers)
        except (ConnectionResetError, BrokenPipeError):
            connection.close()
            if not is_reused:
                raise
            # The API closed the idle keep-alive connection (a handler outlasted its idle
            # timeout) before reading our request: send it once more on a new connection.
            response, data = self._send(method, path, body, all_headers)
        if not 200 <= response.status < 300:
            preview = data[:ERROR_BODY_PREVIEW_BYTES].decode("utf-8", "replace")
            raise RuntimeApiError(
                f"Request to Lambda Runtime '{path}' endpoint failed. "
                f"Reason: '{response.status}'. Response body: '{preview}'"
            )
        return response, data

    def _send(
        self, method: str, path: str, body: bytes | None, headers: Headers
    ) -> tuple[http.client.HTTPResponse, bytes]:
        try:
            self._connection.request(method, path, body, headers)
            response = self._connection.getresponse()
            return response, response.read()
        except http.client.HTTPException as exc:
            if isinstance(exc, ConnectionError):  # RemoteDisconnected
                raise
            self._connection.close()
            raise RuntimeApiError(
                f"Request to Lambda Runtime '{path}' endpoint failed: {exc!r}"
            ) from exc

    def send_ready(self, function_init_ms: float) -> None:
        """Nothing to send: the first `next` tells the API that init is done."""

    def send_init_error(self, error: ErrorBody) -> None:
        """POST `init/error`, with no Content-Type (as awslambdaric)."""
        self._exchange(
            "POST",
            INIT_ERROR_PATH,
            json.dumps(error).encode("utf-8"),
            {ERROR_TYPE_HEADER: _error_type_header(error)},
        )

    def next_invocation(self) -> Invocation | None:
        """GET `next` (waiting as long as it takes) and turn its headers into an invocation.

        Raises:
            RuntimeApiError: not 2xx, or no request id.
        """
        response, payload = self._exchange("GET", NEXT_PATH)
        request_id = response.getheader(REQUEST_ID_HEADER)
        if not request_id:
            raise RuntimeApiError(f"the answer to '{NEXT_PATH}' has no {REQUEST_ID_HEADER}")
        return {
            "id": request_id,
            "payload": payload,
            "deadline_ms": _parse_deadline_ms(response.getheader(DEADLINE_HEADER)),
            "arn": response.getheader(FUNCTION_ARN_HEADER) or "",
            "trace_id": response.getheader(TRACE_ID_HEADER),
            "client_context": response.getheader(CLIENT_CONTEXT_HEADER),
            "cognito_identity": response.getheader(COGNITO_IDENTITY_HEADER),
            "raw_event": response.getheader(CONTENT_TYPE_HEADER) != JSON_CONTENT_TYPE,
        }

    def send_result(self, request_id: str, payload: bytes, is_raw: bool) -> None:
        """POST `invocation/{id}/response`."""
        content_type = RAW_CONTENT_TYPE if is_raw else JSON_CONTENT_TYPE
        self._exchange(
            "POST",
            _invocation_path(request_id, RESPONSE_SUFFIX),
            payload,
            {CONTENT_TYPE_HEADER: content_type},
        )

    def send_error(self, request_id: str, error: ErrorBody) -> None:
        """POST `invocation/{id}/error`, the errorType both in the header and in the body."""
        self._exchange(
            "POST",
            _invocation_path(request_id, ERROR_SUFFIX),
            json.dumps(error).encode("utf-8"),
            {CONTENT_TYPE_HEADER: JSON_CONTENT_TYPE, ERROR_TYPE_HEADER: _error_type_header(error)},
        )

    def send_log(self, chunk: memoryview) -> None:
        """Write `chunk` to fd 1 unbuffered, all of it."""
        while chunk:
            written = os.write(STDOUT_FD, chunk)
            chunk = chunk[written:]
