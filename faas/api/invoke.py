"""Invoke: RequestResponse (run and wait), Event (queue durably, 202), DryRun (validate, 204)."""

from __future__ import annotations

import base64
import binascii
import time

import orjson
from aiohttp import web

from faas.api.body import read_limited
from faas.api.middleware import REQUEST_ID_HEADER, REQUEST_ID_KEY
from faas.api.names import parse_function_name
from faas.api.services import SERVICES
from faas.errors import (
    InvalidRequestContentException,
    ValidationException,
)
from faas.ids import new_trace_id
from faas.models import LATEST, InvocationRequest, InvocationType
from faas.store.base import QueuedEvent

# Wire names of the Invoke operation (lambda-compat.md A.6).
HEADER_INVOCATION_TYPE = "X-Amz-Invocation-Type"
HEADER_LOG_TYPE = "X-Amz-Log-Type"
HEADER_CLIENT_CONTEXT = "X-Amz-Client-Context"
HEADER_FUNCTION_ERROR = "X-Amz-Function-Error"
HEADER_LOG_RESULT = "X-Amz-Log-Result"
HEADER_EXECUTED_VERSION = "X-Amz-Executed-Version"
HEADER_TRACE_ID = "X-Amzn-Trace-Id"
# faas's own: where the node spent the time, e.g. "schedule=0.02;spawn=3.1;...;invoke=0.4".
HEADER_TIMINGS = "X-Faas-Timings"
_CLIENT_CONTEXT_MAX_BYTES = 3583
_EMPTY_EVENT = b"{}"
_INVOCATION_TYPES = {member.value: member for member in InvocationType}


def _invocation_type(request: web.Request) -> InvocationType:
    text = request.headers.get(HEADER_INVOCATION_TYPE, InvocationType.REQUEST_RESPONSE.value)
    invocation_type = _INVOCATION_TYPES.get(text)
    if invocation_type is None:
        raise ValidationException(
            f"1 validation error detected: Value '{text}' at 'invocationType' failed to satisfy "
            "constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
        )
    return invocation_type


def _wants_tail(request: web.Request) -> bool:
    text = request.headers.get(HEADER_LOG_TYPE, "None")
    if text not in ("None", "Tail"):
        raise ValidationException(
            f"1 validation error detected: Value '{text}' at 'logType' failed to satisfy "
            "constraint: Member must satisfy enum value set: [None, Tail]"
        )
    return text == "Tail"


def _client_context(request: web.Request) -> str | None:
    """The decoded JSON text of X-Amz-Client-Context, checked to be a JSON object."""
    encoded = request.headers.get(HEADER_CLIENT_CONTEXT)
    if not encoded:
        return None
    invalid = InvalidRequestContentException(
        "Client context must be a valid Base64-encoded JSON object."
    )
    if len(encoded) > _CLIENT_CONTEXT_MAX_BYTES:
        raise ValidationException(
            "1 validation error detected: Value at 'clientContext' failed to satisfy constraint: "
            f"Member must have length less than or equal to {_CLIENT_CONTEXT_MAX_BYTES}"
        )
    try:
        text = base64.b64decode(encoded, validate=True).decode()
        if not isinstance(orjson.loads(text), dict):
            raise invalid
    except (binascii.Error, UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise invalid from exc
    return text


def _check_json(payload: bytes) -> None:
    try:
        orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestContentException(
            f"Could not parse request body into json: Could not parse payload into json: {exc}"
        ) from exc


async def invoke(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    api = services.config.api
    ref = parse_function_name(
        request.match_info["name"], api.region, api.account_id, request.query.get("Qualifier")
    )
    resolved = services.versions.resolve(ref.name, ref.qualifier)
    function = resolved.config
    invocation_type = _invocation_type(request)
    wants_tail = _wants_tail(request)
    client_context = _client_context(request)
    is_event = invocation_type is InvocationType.EVENT
    limit = api.event_payload_max_bytes if is_event else api.sync_payload_max_bytes
    payload = await read_limited(request, limit, "Invoke") or _EMPTY_EVENT
    _check_json(payload)
    request_id: str = request[REQUEST_ID_KEY]
    now = time.time()
    trace_id = request.headers.get(HEADER_TRACE_ID) or new_trace_id(now)
    if invocation_type is InvocationType.DRY_RUN:
        return web.Response(status=204)
    if is_event:
        # Answered only once the event is durable (the queue's commit returned).
        await services.dispatcher.submit(
            QueuedEvent(
                request_id=request_id,
                function_name=function.name,
                qualifier=ref.qualifier or LATEST,
                payload=payload,
                enqueued_at=now,
                trace_id=trace_id,
            )
        )
        return web.Response(status=202)
    invoked_arn = services.catalog.function_arn(function.name, ref.qualifier)
    result = await services.invoker.invoke(
        InvocationRequest(
            request_id=request_id,
            function=function,
            payload=payload,
            invoked_arn=invoked_arn,
            trace_id=trace_id,
            client_context=client_context,
            wants_log_tail=wants_tail,
            alias=resolved.alias,
        )
    )
    headers = {
        "Content-Type": "application/json",
        REQUEST_ID_HEADER: request_id,
        HEADER_EXECUTED_VERSION: result.executed_version,
        HEADER_TIMINGS: ";".join([f"{name}={ms:.3f}" for name, ms in result.timings]),
    }
    if result.function_error is not None:
        headers[HEADER_FUNCTION_ERROR] = result.function_error
    if wants_tail:
        headers[HEADER_LOG_RESULT] = base64.b64encode(result.log_tail).decode()
    return web.Response(status=200, body=result.payload, headers=headers)
