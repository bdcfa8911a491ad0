"""Request ids, the caller's access key, and FaasError -> Lambda's restJson error responses."""

from __future__ import annotations

import logging
import re

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from faas.errors import (
    ApiError,
    RequestTooLargeException,
    ServiceException,
    UnknownOperationException,
)
from faas.ids import new_request_id
from faas.logs import request_id_var

log = logging.getLogger(__name__)

REQUEST_ID_KEY = "faas.request_id"
REQUEST_ID_HEADER = "x-amzn-RequestId"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")


def caller_of(request: web.Request) -> str:
    """Who made the request: the access key id of its signature (for audit lines)."""
    credential = _CREDENTIAL.search(request.headers.get("Authorization", ""))
    return credential.group(1) if credential else "anonymous"


def error_response(error: ApiError, request_id: str) -> web.Response:
    """The response boto3 turns into ``error.error_type`` (lambda-compat.md A.2)."""
    body = {
        "Type": "User" if error.status < 500 else "Service",
        error.message_key: error.message,
        **error.extra_members(),
    }
    headers = {
        "x-amzn-ErrorType": error.error_type,
        REQUEST_ID_HEADER: request_id,
        **error.extra_headers(),
    }
    return web.Response(
        status=error.status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def lambda_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give every response a request id; turn every failure into Lambda's error shape."""
    request_id = new_request_id()
    request[REQUEST_ID_KEY] = request_id
    token = request_id_var.set(request_id)
    try:
        response = await handler(request)
    except ApiError as error:
        return error_response(error, request_id)
    except web.HTTPRequestEntityTooLarge:
        return error_response(
            RequestTooLargeException("Request must be smaller than the maximum allowed size"),
            request_id,
        )
    except web.HTTPException as exc:
        if exc.status in (404, 405):
            return error_response(
                UnknownOperationException(f"No operation at {request.method} {request.path}"),
                request_id,
            )
        raise
    except Exception:  # request boundary: log it once, answer Lambda's ServiceException
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return error_response(ServiceException("An internal error occurred."), request_id)
    finally:
        request_id_var.reset(token)
    response.headers.setdefault(REQUEST_ID_HEADER, request_id)
    return response
