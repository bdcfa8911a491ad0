"""The HTTP calls the ``faas dlq`` and ``faas schedule`` commands make to a running node.

Design notes: the commands are short-lived, synchronous processes, so the standard
library's blocking client is right here (no event loop to block). Every way a call
can fail, from a malformed endpoint to a server that is down, answers something
other than JSON or hangs up mid-answer, becomes one ``NodeCallError`` whose message
is the line the command prints before exiting with status 1, never a traceback.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

_ERROR_TYPE_HEADER = "x-amzn-ErrorType"


class NodeCallError(Exception):
    """A call to the node failed; the message says why, ready to print."""


def _error_message(endpoint: str, error: urllib.error.HTTPError) -> str:
    """``faas: <ErrorType>: <message>`` from a Lambda-shaped error answer."""
    try:
        detail = json.loads(error.read() or b"{}")
    except (ValueError, OSError, http.client.HTTPException):
        detail = None
    error_type = error.headers.get(_ERROR_TYPE_HEADER)
    if not isinstance(detail, dict) or not error_type:
        return f"faas: {endpoint} answered HTTP {error.code} {error.reason} (is it a faas node?)"
    message = detail.get("message") or detail.get("Message") or error.reason
    return f"faas: {error_type}: {message}"


def _is_http_url(endpoint: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(endpoint)
        _ = parts.port  # raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def call_node(
    endpoint: str, method: str, path: str, body: Any = None, timeout_s: float = 30.0
) -> dict[str, Any]:
    """Send one request to the node at ``endpoint``; its JSON answer ({} for none).

    Raises:
        NodeCallError: the endpoint is no URL, the node cannot be reached or does not
            answer in time, or it answered with an error or with something not JSON.
    """
    if not _is_http_url(endpoint):
        raise NodeCallError(f"faas: {endpoint!r} is not a URL like http://127.0.0.1:9000")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        endpoint.rstrip("/") + path, data=data, method=method,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        raise NodeCallError(_error_message(endpoint, error)) from error
    except urllib.error.URLError as error:
        raise NodeCallError(f"faas: cannot reach {endpoint}: {error.reason}") from error
    except (OSError, http.client.HTTPException) as error:  # timeouts, resets mid-answer
        raise NodeCallError(f"faas: no answer from {endpoint}: {error!r}") from error
    if not raw:
        return {}
    try:
        result = json.loads(raw)
    except ValueError as error:
        raise NodeCallError(
            f"faas: {endpoint} did not answer with JSON (is it a faas node?)"
        ) from error
    if not isinstance(result, dict):
        raise NodeCallError(f"faas: {endpoint} did not answer with a JSON object")
    return result
