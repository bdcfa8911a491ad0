"""Import the handler named by `_HANDLER` (`module.function`), failing as awslambdaric fails."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from .errors import (
    BUILT_IN_MODULE_CONFLICT,
    HANDLER_NOT_FOUND,
    IMPORT_MODULE_ERROR,
    MALFORMED_HANDLER_NAME,
    USER_CODE_SYNTAX_ERROR,
    FaultError,
)

# The handler takes (event, context) and returns any JSON-serialisable value or bytes.
Handler = Callable[[Any, Any], Any]


def load_handler(handler_name: str) -> Handler:
    """Import the module part of `handler_name` and return its function attribute.

    Raises:
        FaultError: the name is malformed, the module cannot be imported or has a syntax
            error, or the function is missing.
        Exception: whatever the module's top-level code raised.
    """
    try:
        module_name, function_name = handler_name.rsplit(".", 1)
    except ValueError as exc:
        raise FaultError(MALFORMED_HANDLER_NAME, f"Bad handler '{handler_name}': {exc}") from exc

    if module_name.split(".")[0] in sys.builtin_module_names:
        raise FaultError(
            BUILT_IN_MODULE_CONFLICT,
            f"Cannot use built-in module {module_name} as a handler module",
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise FaultError(
            IMPORT_MODULE_ERROR, f"Unable to import module '{module_name}': {exc}"
        ) from exc
    except SyntaxError as exc:
        trace = [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']
        raise FaultError(
            USER_CODE_SYNTAX_ERROR, f"Syntax error in module '{module_name}': {exc}", trace
        ) from exc

    try:
        handler: Handler = getattr(module, function_name)
    except AttributeError as exc:
        raise FaultError(
            HANDLER_NOT_FOUND, f"Handler '{function_name}' missing on module '{module_name}'"
        ) from exc
    return handler
