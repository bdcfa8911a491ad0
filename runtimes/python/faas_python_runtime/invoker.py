"""The invoke loop: take an invocation from the transport, run the handler, send the answer."""

from __future__ import annotations

import decimal
import json
import math
import os
from typing import Any

from .context import LambdaContext
from .errors import (
    MARSHAL_ERROR,
    RESPONSE_SIZE_TOO_LARGE,
    UNMARSHAL_ERROR,
    FaultError,
    error_from_exception,
    format_error_log,
)
from .handler_loader import Handler
from .output import OutputCapture
from .transport import Invocation, Transport

TRACE_ID_VAR = "_X_AMZN_TRACE_ID"


def _encode_decimal(value: Any) -> Any:
    """`json.dumps` fallback: Decimals as numbers (awslambdaric's marshaller accepts them)."""
    if isinstance(value, decimal.Decimal):
        if value.is_nan():
            return math.nan
        if value.is_finite() and value.as_tuple().exponent >= 0:  # type: ignore[operator]
            return int(value)
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def marshal_response(response: Any) -> bytes:
    """Encode the handler's return value; bytes pass through unchanged.

    Raises:
        FaultError: the value is not JSON-serialisable (`Runtime.MarshalError`).
    """
    if isinstance(response, bytes):
        return response
    try:
        return json.dumps(response, default=_encode_decimal).encode("utf-8")
    except Exception as exc:
        raise FaultError(MARSHAL_ERROR, f"Unable to marshal response: {exc}") from exc


def unmarshal_event(payload: bytes) -> Any:
    """Decode the invoke payload.

    Raises:
        FaultError: the payload is not JSON (`Runtime.UnmarshalError`).
    """
    try:
        return json.loads(payload)
    except Exception as exc:
        raise FaultError(UNMARSHAL_ERROR, f"Unable to unmarshal input: {exc}") from exc


def _rehearsal(event: Any, context: LambdaContext) -> Any:
    """What a rehearsal runs instead of the handler (PROTOCOL.md: `rehearse`)."""
    return {"rehearsed": context.aws_request_id, "event": event}


class Invoker:
    """Runs invocations one at a time on a warm, already imported handler."""

    __slots__ = ("_capture", "_handler", "_max_response_bytes", "_transport")

    def __init__(
        self,
        transport: Transport,
        capture: OutputCapture,
        handler: Handler,
        max_response_bytes: int,
    ) -> None:
        self._transport = transport
        self._capture = capture
        self._handler = handler
        self._max_response_bytes = max_response_bytes

    def serve(self) -> int:
        """Answer invocations until the transport says to stop; returns the exit status (0)."""
        next_invocation = self._transport.next_invocation
        while (invocation := next_invocation()) is not None:
            self.invoke(invocation)
        return 0

    def invoke(self, invocation: Invocation) -> None:
        """Run one invocation, then send its result or error (after the output it wrote)."""
        request_id: str = invocation["id"]
        self._capture.request_id_filter.request_id = request_id
        trace_id = invocation.get("trace_id")
        if trace_id is None:
            os.environ.pop(TRACE_ID_VAR, None)
        else:
            os.environ[TRACE_ID_VAR] = trace_id
        try:
            context = LambdaContext(
                request_id,
                invocation.get("arn") or "",
                invocation.get("deadline_ms") or 0,
                invocation.get("client_context"),
                invocation.get("cognito_identity"),
                self._capture.sink,
            )
            payload = invocation["payload"]
            event = payload if invocation.get("raw_event") else unmarshal_event(payload)
            # A rehearsal runs this whole path once with a no-op in place of the handler.
            handler = _rehearsal if invocation.get("t") == "rehearse" else self._handler
            response = handler(event, context)
            body = marshal_response(response)
        except Exception as exc:
            error = error_from_exception(exc, request_id)
            self._capture.sink.write_text(format_error_log(error))
            self._capture.sink.flush()
            self._transport.send_error(request_id, error)
            return
        self._capture.sink.flush()
        if len(body) > self._max_response_bytes:
            # Lambda's service (not the runtime client) reports this, with just two keys.
            self._transport.send_error(
                request_id,
                {
                    "errorMessage": "Response payload size exceeded maximum allowed payload "
                    f"size ({self._max_response_bytes} bytes).",
                    "errorType": RESPONSE_SIZE_TOO_LARGE,
                },
            )
            return
        # Bytes the handler returned go out as they are, not as JSON (awslambdaric's rule).
        self._transport.send_result(request_id, body, isinstance(response, bytes))
