"""The interface the invoke loop uses to reach the node, whichever wire carries it.

Two implementations: `channel.Channel` (msgpack frames over the inherited Unix socket,
PROTOCOL.md) and `runtime_api.RuntimeApiClient` (Lambda's Runtime API over HTTP).

Design notes: an invocation is a plain mapping with the keys of the `invoke` frame, so
the frame transport hands the received frame over as it is (no copy per invoke) and
the HTTP transport builds the same shape from the `/next` headers.
"""

from __future__ import annotations

from typing import Any, Protocol

from .errors import ErrorBody

# Keys: "id" (str), "payload" (bytes), "deadline_ms" (int, Unix epoch ms), "arn" (str),
# "trace_id", "client_context", "cognito_identity" (str or None; the last two JSON text)
# and optionally "raw_event" (true: hand the payload to the handler as bytes, undecoded).
# Any: msgpack gives values of several types, read by key in the invoker.
Invocation = dict[str, Any]


class TransportError(Exception):
    """The node answered in a way that means this runtime must exit (status 1)."""


class Transport(Protocol):
    """One runtime's connection to the node; used by one thread (logs excepted)."""

    def send_ready(self, function_init_ms: float) -> None:
        """Init finished: the handler is imported and found."""

    def send_init_error(self, error: ErrorBody) -> None:
        """Init failed with Lambda's error JSON `error`; the runtime exits next."""

    def next_invocation(self) -> Invocation | None:
        """Block until the next invocation arrives; None means exit with status 0."""

    def send_result(self, request_id: str, payload: bytes, is_raw: bool) -> None:
        """The handler returned `payload` (JSON text, or its own bytes when `is_raw`)."""

    def send_error(self, request_id: str, error: ErrorBody) -> None:
        """The invocation failed with Lambda's error JSON `error`."""

    def send_log(self, chunk: memoryview) -> None:
        """Deliver UTF-8 output of user code (at most 64 KiB, whole characters)."""
