"""Lambda's error JSON and `[ERROR]` log record, built exactly as awslambdaric builds them."""

from __future__ import annotations

import os
import traceback
from types import TracebackType
from typing import Any

# errorType strings of the Lambda wire protocol that this runtime reports.
MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
BUILT_IN_MODULE_CONFLICT = "Runtime.BuiltInModuleConflict"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
LAMBDA_CONTEXT_UNMARSHAL_ERROR = "Runtime.LambdaContextUnmarshalError"
RESPONSE_SIZE_TOO_LARGE = "Function.ResponseSizeTooLarge"

UNHANDLED_EXCEPTION_WARNING = (
    "LAMBDA_WARNING: Unhandled exception. The most likely cause is an issue in the function "
    "code. However, in rare cases, a Lambda runtime update can cause unexpected function "
    "behavior. For functions using managed runtimes, runtime updates can be triggered by a "
    "function change, or can be applied automatically. To determine if the runtime has been "
    "updated, check the runtime version in the INIT_START log entry. If this error correlates "
    "with a change in the runtime version, you may be able to mitigate this error by "
    "temporarily rolling back to the previous runtime version. For more information, see "
    "https://docs.aws.amazon.com/lambda/latest/dg/runtimes-update.html"
)

_LOG_LINE_SEPARATOR = "\r"  # one log event holds the whole traceback
_LOG_INDENT = "\u00a0"  # awslambdaric turns leading spaces into NO-BREAK SPACEs
_RUNTIME_DIRECTORY = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Lambda's error JSON: errorMessage, errorType, requestId, stackTrace (in that order).
ErrorBody = dict[str, Any]
FrameTuple = tuple[str, int | None, str, str | None]


class FaultError(Exception):
    """A failure the runtime reports with a `Runtime.*` type rather than the exception's class."""

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace


def make_error(
    message: str, error_type: str, stack_trace: list[str] | None, request_id: str = ""
) -> ErrorBody:
    """Build the error JSON object, with awslambdaric's empty-value defaults."""
    return {
        "errorMessage": message or "",
        "errorType": error_type or "",
        "requestId": request_id,
        "stackTrace": stack_trace or [],
    }


def _user_frames(tb: TracebackType | None) -> list[FrameTuple]:
    """The traceback's frames from the first one outside this runtime's package onwards."""
    frames: list[FrameTuple] = [
        (frame.filename, frame.lineno, frame.name, frame.line) for frame in traceback.extract_tb(tb)
    ]
    for index, frame in enumerate(frames):
        if not frame[0].startswith(_RUNTIME_DIRECTORY):
            return frames[index:]
    return frames


def error_from_exception(exc: BaseException, request_id: str = "") -> ErrorBody:
    """Describe `exc` as Lambda does: a FaultError by its type, anything else by its class."""
    if isinstance(exc, FaultError):
        return make_error(exc.message, exc.error_type, exc.stack_trace, request_id)
    # Tuples (not FrameSummary objects) so format_list prints no column carets, as on Lambda.
    stack_trace = traceback.format_list(_user_frames(exc.__traceback__))  # type: ignore[arg-type]
    return make_error(str(exc), type(exc).__name__, stack_trace, request_id)


def _indent_with_no_break_spaces(line: str) -> str:
    stripped = line.lstrip(" ")
    return _LOG_INDENT * (len(line) - len(stripped)) + stripped


def format_error_log(error: ErrorBody) -> str:
    """The `[ERROR] <Type>: <msg>\\rTraceback ...` text awslambdaric writes to stdout."""
    description = "[ERROR]"
    error_type = error.get("errorType")
    if error_type:
        description += " " + error_type
    message = error.get("errorMessage")
    if message:
        if error_type:
            description += ":"
        description += " " + message
    lines = [description]
    stack_trace = error.get("stackTrace")
    if stack_trace is not None:
        lines.append("Traceback (most recent call last):")
        for element in stack_trace:
            if element == "":
                lines.append("")
            else:
                lines.extend(_indent_with_no_break_spaces(line) for line in element.splitlines())
    return _LOG_LINE_SEPARATOR.join(lines) + "\n"
