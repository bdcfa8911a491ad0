"""The exception tree and the Lambda error-type strings faas reports.

    FaasError
    ├── ApiError                      a request the Lambda API refuses (4xx) or fails (5xx)
    │   ├── ValidationException           a value breaks a shape constraint (400)
    │   ├── InvalidParameterValueException a value is semantically wrong (400)
    │   ├── InvalidRequestContentException an Invoke body that is not JSON (400)
    │   ├── ResourceNotFoundException      no such function or qualifier (404)
    │   ├── ResourceConflictException      exists already, or in use (409)
    │   ├── PreconditionFailedException    stale RevisionId (412)
    │   ├── ResourceInUseException         an event source mapping in transition (400)
    │   ├── RequestTooLargeException       payload over the limit (413)
    │   ├── UnsupportedMediaTypeException  (415)
    │   ├── TooManyRequestsException       throttled (429, with Reason)
    │   └── ServiceException              our own fault (500)
    ├── ExecutionEnvironmentError           an execution environment failed (user code's fault)
    │   ├── InitFailed                    Init reported an error or crashed
    │   ├── InvokeTimedOut                the handler ran past its deadline
    │   └── RuntimeExited                 the runtime process died mid-invoke
    └── PlatformError                 a node-side fault (spawn failed, store down)

User-code failures never become HTTP errors: they are reported as 200 with
``X-Amz-Function-Error``. Only ``api/middleware.py`` maps ApiError to HTTP.
"""

from __future__ import annotations

from typing import ClassVar

# errorType strings reported in function-error payloads, as Lambda names them.
RUNTIME_EXIT_ERROR = "Runtime.ExitError"
RUNTIME_OUT_OF_MEMORY = "Runtime.OutOfMemory"
RUNTIME_IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
RUNTIME_HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
RUNTIME_INVALID_RUNTIME = "Runtime.InvalidRuntime"
FUNCTION_RESPONSE_SIZE_TOO_LARGE = "Function.ResponseSizeTooLarge"
SANDBOX_TIMEDOUT = "Sandbox.Timedout"

# Values of X-Amz-Function-Error.
FUNCTION_ERROR_UNHANDLED = "Unhandled"


class FaasError(Exception):
    """Root of every error faas raises on purpose."""


class ApiError(FaasError):
    """An error answered to an API client in Lambda's restJson shape."""

    status: ClassVar[int] = 400
    error_type: ClassVar[str] = "ServiceException"
    # Most modelled shapes carry `message`; a few carry `Message` (lambda-compat.md A.2).
    message_key: ClassVar[str] = "message"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def extra_members(self) -> dict[str, str]:
        """Modelled members beyond the message (e.g. a throttle's Reason)."""
        return {}

    def extra_headers(self) -> dict[str, str]:
        return {}


class ValidationException(ApiError):
    status = 400
    error_type = "ValidationException"


class InvalidParameterValueException(ApiError):
    status = 400
    error_type = "InvalidParameterValueException"


class InvalidRequestContentException(ApiError):
    status = 400
    error_type = "InvalidRequestContentException"


class ResourceNotFoundException(ApiError):
    status = 404
    error_type = "ResourceNotFoundException"
    message_key = "Message"


class ResourceConflictException(ApiError):
    status = 409
    error_type = "ResourceConflictException"


class ProvisionedConcurrencyConfigNotFoundException(ApiError):
    status = 404
    error_type = "ProvisionedConcurrencyConfigNotFoundException"


class PreconditionFailedException(ApiError):
    status = 412
    error_type = "PreconditionFailedException"


class ResourceInUseException(ApiError):
    status = 400
    error_type = "ResourceInUseException"
    message_key = "Message"


class RequestTooLargeException(ApiError):
    status = 413
    error_type = "RequestTooLargeException"


class UnsupportedMediaTypeException(ApiError):
    status = 415
    error_type = "UnsupportedMediaTypeException"


class TooManyRequestsException(ApiError):
    status = 429
    error_type = "TooManyRequestsException"

    def __init__(self, message: str, reason: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s

    def extra_members(self) -> dict[str, str]:
        return {"Reason": self.reason}

    def extra_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ServiceException(ApiError):
    status = 500
    error_type = "ServiceException"
    message_key = "Message"


class UnknownOperationException(ApiError):
    status = 404
    error_type = "UnknownOperationException"


class ExecutionEnvironmentError(FaasError):
    """An execution environment failed; carries the function-error payload to report."""

    def __init__(self, error_type: str, payload: bytes) -> None:
        super().__init__(error_type)
        self.error_type = error_type
        self.payload = payload


class InitFailed(ExecutionEnvironmentError):
    """The environment's Init phase reported an error or its runtime died during Init."""


class InvokeTimedOut(ExecutionEnvironmentError):
    """The handler did not finish before the function's timeout."""


class RuntimeExited(ExecutionEnvironmentError):
    """The runtime process exited while it was serving an invocation."""


class PlatformError(FaasError):
    """A fault of the node itself, never of user code (spawn failed, store down)."""
