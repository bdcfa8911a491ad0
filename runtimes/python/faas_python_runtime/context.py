"""The Lambda context object handed to the handler, mirroring awslambdaric's LambdaContext."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from .errors import LAMBDA_CONTEXT_UNMARSHAL_ERROR, FaultError
from .output import LogSink

_W3C_FIELDS = ("traceparent", "tracestate", "baggage")


class CognitoIdentity:
    """`context.identity`: both fields are None when the caller sent no Cognito identity."""

    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.cognito_identity_id: str | None = fields.get("cognitoIdentityId")
        self.cognito_identity_pool_id: str | None = fields.get("cognitoIdentityPoolId")

    def __repr__(self) -> str:
        return (
            f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
            f"cognito_identity_pool_id={self.cognito_identity_pool_id}])"
        )


class Client:
    """`context.client_context.client`: the mobile app that made the call."""

    __slots__ = (
        "app_package_name",
        "app_title",
        "app_version_code",
        "app_version_name",
        "installation_id",
    )

    def __init__(self, fields: dict[str, Any]) -> None:
        self.installation_id: Any = fields.get("installation_id")
        self.app_title: Any = fields.get("app_title")
        self.app_version_name: Any = fields.get("app_version_name")
        self.app_version_code: Any = fields.get("app_version_code")
        self.app_package_name: Any = fields.get("app_package_name")

    def __repr__(self) -> str:
        return (
            f"Client([installation_id={self.installation_id},app_title={self.app_title},"
            f"app_version_name={self.app_version_name},"
            f"app_version_code={self.app_version_code},"
            f"app_package_name={self.app_package_name}])"
        )


class ClientContext:
    """`context.client_context`: custom and env dicts plus the client object (or None)."""

    __slots__ = ("client", "custom", "env")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.custom: Any = fields.get("custom")
        self.env: Any = fields.get("env")
        client = fields.get("client")
        self.client: Client | None = None if client is None else Client(client)

    def __repr__(self) -> str:
        return f"ClientContext([custom={self.custom},env={self.env},client={self.client}])"


def _parse_json_field(text: str | None, name: str) -> Any:
    """Parse a JSON side channel of the invoke; empty means absent."""
    if not text:
        return None
    try:
        return json.loads(text)
    except Exception as exc:
        raise FaultError(
            LAMBDA_CONTEXT_UNMARSHAL_ERROR, f"Unable to parse {name} JSON: {exc}"
        ) from exc


def _take_w3c_fields(client_context: Any) -> dict[str, str]:
    """Pop `w3c` out of the client context and keep its allowlisted string fields."""
    if not isinstance(client_context, dict):
        return {}
    raw = client_context.pop("w3c", None)
    if not isinstance(raw, dict):
        return {}
    return {key: raw[key] for key in _W3C_FIELDS if isinstance(raw.get(key), str)}


class LambdaContext:
    """The handler's second argument.

    No `__slots__`: some frameworks attach their own attributes to the context, which
    Lambda's class allows.
    """

    def __init__(
        self,
        request_id: str,
        invoked_function_arn: str,
        deadline_ms: int,
        client_context_json: str | None,
        cognito_identity_json: str | None,
        log_sink: LogSink,
    ) -> None:
        """Build the context, reading the function's settings from the environment now.

        Raises:
            FaultError: client context or Cognito identity is not valid JSON.
        """
        client_context = _parse_json_field(client_context_json, "Client Context")
        cognito_identity = _parse_json_field(cognito_identity_json, "Cognito Identity")
        environ = os.environ
        self.aws_request_id = request_id
        self.log_group_name = environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
        self.log_stream_name = environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME")
        self.memory_limit_in_mb = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION")
        self.invoked_function_arn = invoked_function_arn
        self.tenant_id: str | None = None
        self._w3c_fields = _take_w3c_fields(client_context)
        self.client_context = None if client_context is None else ClientContext(client_context)
        self.identity = CognitoIdentity(cognito_identity or {})
        self._deadline_ms = deadline_ms
        self._log_sink = log_sink

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until the deadline, never below 0."""
        remaining_ms = self._deadline_ms - int(time.time() * 1000)
        return remaining_ms if remaining_ms > 0 else 0

    def w3c(self) -> dict[str, str]:
        """The W3C trace-context fields the caller sent in `clientContext.w3c`."""
        return dict(self._w3c_fields)

    def log(self, msg: object) -> None:
        """Write `str(msg)` to the function's log, unformatted."""
        self._log_sink.write_text(str(msg))

    def __repr__(self) -> str:
        return (
            f"LambdaContext([aws_request_id={self.aws_request_id},"
            f"log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},"
            f"function_name={self.function_name},memory_limit_in_mb={self.memory_limit_in_mb},"
            f"function_version={self.function_version},"
            f"invoked_function_arn={self.invoked_function_arn},"
            f"client_context={self.client_context},identity={self.identity},"
            f"tenant_id={self.tenant_id}])"
        )
