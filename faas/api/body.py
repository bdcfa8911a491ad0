"""Reading request bodies with limits: JSON control-plane bodies and raw Invoke payloads."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from faas.errors import InvalidRequestContentException, RequestTooLargeException


async def read_limited(request: web.Request, limit: int, operation: str) -> bytes:
    """The whole body, refusing anything over ``limit`` bytes without buffering it all.

    Raises:
        RequestTooLargeException: the body is larger than ``limit``.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(limit, operation)
    body = await request.content.read(limit + 1)
    if len(body) > limit:
        raise _too_large(limit, operation)
    if declared is not None and len(body) == declared:
        return body  # all of it (the usual case: one read)
    # read(n) may return less than is available; drain the rest within the limit.
    chunks = [body]
    total = len(body)
    while not request.content.at_eof():
        chunk = await request.content.read(limit + 1 - total)
        if not chunk:
            break
        total += len(chunk)
        if total > limit:
            raise _too_large(limit, operation)
        chunks.append(chunk)
    return b"".join(chunks) if len(chunks) > 1 else body


def _too_large(limit: int, operation: str) -> RequestTooLargeException:
    return RequestTooLargeException(
        f"Request must be smaller than {limit} bytes for the {operation} operation"
    )


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """A control-plane body as a JSON object (an absent body is ``{}``).

    Raises:
        InvalidRequestContentException: the body is not a JSON object.
    """
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: {exc}"
        ) from exc
    if not isinstance(value, dict):
        raise InvalidRequestContentException(
            "Could not parse request body into json: expected a JSON object"
        )
    return value


def json_response(payload: Any, status: int = 200) -> web.Response:
    """A JSON body encoded with orjson, as every control-plane answer is sent."""
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")
