"""The invoke loop: receive `invoke` frames, run the handler, answer with `result` or `error`."""

from __future__ import annotations

import decimal
import json
import math
import os
import resource
from typing import Any

from .channel import Channel, Frame
from .context import LambdaContext
from .errors import (
    MARSHAL_ERROR,
    RESPONSE_SIZE_TOO_LARGE,
    UNMARSHAL_ERROR,
    ErrorBody,
    FaultError,
    error_from_exception,
    format_error_log,
)
from .handler_loader import Handler
from .output import OutputCapture
from .settings import kill_own_group

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


def _max_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


class Invoker:
    """Runs invocations one at a time on a warm, already imported handler."""

    __slots__ = ("_capture", "_channel", "_handler", "_max_response_bytes")

    def __init__(
        self,
        channel: Channel,
        capture: OutputCapture,
        handler: Handler,
        max_response_bytes: int,
    ) -> None:
        self._channel = channel
        self._capture = capture
        self._handler = handler
        self._max_response_bytes = max_response_bytes

    def serve(self) -> int:
        """Answer invokes until `shutdown`; returns the exit status (0).

        End of file means the node is gone: the whole process group (the handler's
        children included) is killed at once, as nobody is left to clean it up.
        """
        while True:
            frame = self._channel.receive()
            if frame is None:
                kill_own_group()
            kind = frame.get("t")
            if kind == "invoke":
                answer = self.invoke(frame)
                self._capture.sink.flush()
                self._channel.send(answer)
            elif kind == "shutdown":
                return 0

    def invoke(self, frame: Frame) -> Frame:
        """Run one invocation and return the `result` or `error` frame to send."""
        request_id: str = frame["id"]
        self._capture.request_id_filter.request_id = request_id
        trace_id = frame.get("trace_id")
        if trace_id is None:
            os.environ.pop(TRACE_ID_VAR, None)
        else:
            os.environ[TRACE_ID_VAR] = trace_id
        try:
            context = LambdaContext(
                request_id,
                frame.get("arn") or "",
                frame.get("deadline_ms") or 0,
                frame.get("client_context"),
                frame.get("cognito_identity"),
                self._capture.sink,
            )
            event = unmarshal_event(frame["payload"])
            payload = marshal_response(self._handler(event, context))
        except Exception as exc:
            error = error_from_exception(exc, request_id)
            self._capture.sink.write_text(format_error_log(error))
            return self._error_frame(request_id, error)
        if len(payload) > self._max_response_bytes:
            # Lambda's service (not the runtime client) reports this, with just two keys.
            return self._error_frame(
                request_id,
                {
                    "errorMessage": "Response payload size exceeded maximum allowed payload "
                    f"size ({self._max_response_bytes} bytes).",
                    "errorType": RESPONSE_SIZE_TOO_LARGE,
                },
            )
        return {"t": "result", "id": request_id, "payload": payload, "max_rss_kb": _max_rss_kb()}

    @staticmethod
    def _error_frame(request_id: str, error: ErrorBody) -> Frame:
        return {
            "t": "error",
            "id": request_id,
            "payload": json.dumps(error).encode("utf-8"),
            "error_type": error["errorType"],
            "max_rss_kb": _max_rss_kb(),
        }
