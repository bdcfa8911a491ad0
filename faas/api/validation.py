"""Validate CreateFunction / UpdateFunction* request bodies into FunctionConfig fields.

botocore checks only required members, types and minima on the client; every
maximum, pattern and semantic rule is ours (lambda-compat.md A.1). Shape
violations answer ValidationException in Lambda's wording, semantic ones
InvalidParameterValueException.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from faas.errors import InvalidParameterValueException, ValidationException
from faas.layers import MAX_FUNCTION_LAYERS
from faas.sandbox.launcher import RESERVED_ENV_VARS
from faas.sandbox.runtimes import supported_runtimes

LAMBDA_RUNTIMES = frozenset(
    {
        *(f"python3.{minor}" for minor in range(8, 15)),
        *(f"nodejs{major}.x" for major in (16, 18, 20, 22, 24)),
        "java8.al2", "java11", "java17", "java21", "java25", "dotnet8", "dotnet10",
        "ruby3.2", "ruby3.3", "ruby3.4", "ruby4.0", "provided", "provided.al2", "provided.al2023",
    }
)  # fmt: skip
_ROLE = re.compile(r"arn:(aws[a-zA-Z-]*)?:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")
_ENV_KEY = re.compile(r"[a-zA-Z]([a-zA-Z0-9_])+")
_HANDLER = re.compile(r"[^\s]+")
_MAX_ENV_BYTES = 4096
_LAYER_ARN = re.compile(
    r"(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:"
    r"\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+)|(arn:[a-zA-Z0-9-]+:lambda:::awslayer:[a-zA-Z0-9-_]+)"
)


def _constraint(value: Any, member: str, constraint: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def max_items(query: Mapping[str, str], high: int, default: int) -> int:
    """The ``MaxItems`` query parameter (1 to ``high``), or ``default`` when it is absent."""
    text = query.get("MaxItems")
    if text is None:
        return default
    # isdigit() alone passes "²", which int() refuses.
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= high:
        raise _constraint(text, "maxItems", f"Member must have value between 1 and {high}")
    return int(text)


def bounded_int(body: Mapping[str, Any], key: str, member: str, low: int, high: int) -> int | None:
    if key not in body or body[key] is None:
        return None
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _constraint(value, member, "Member must be a number")
    if value < low:
        raise _constraint(value, member, f"Member must have value greater than or equal to {low}")
    if value > high:
        raise _constraint(value, member, f"Member must have value less than or equal to {high}")
    return value


def required_int(body: Mapping[str, Any], key: str, member: str, low: int, high: int) -> int:
    """``bounded_int`` for a member the operation cannot do without."""
    value = bounded_int(body, key, member, low, high)
    if value is None:
        raise ValidationException(
            f"1 validation error detected: Value null at '{member}' failed to satisfy "
            "constraint: Member must not be null"
        )
    return value


def _member_choice(
    body: Mapping[str, Any], key: str, name: str, member: str, allowed: tuple[str, ...]
) -> str | None:
    """``body[key][name]`` if given, checked to be one of ``allowed`` (Lambda's enum error)."""
    container = _object(body, key)
    if container is None or container.get(name) is None:
        return None
    value = container[name]
    if value not in allowed:
        raise _constraint(
            value, member, f"Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return str(value)


def _str(body: Mapping[str, Any], key: str, member: str, max_len: int) -> str | None:
    if key not in body or body[key] is None:
        return None
    value = body[key]
    if not isinstance(value, str):
        raise _constraint(value, member, "Member must be a string")
    if len(value) > max_len:
        raise _constraint(value, member, f"Member must have length less than or equal to {max_len}")
    return value


def _object(body: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidParameterValueException(f"{key} must be an object")
    return value


def decode_zip(code: Mapping[str, Any] | None, required: bool) -> bytes | None:
    """The zip bytes of a ``Code`` member (or an UpdateFunctionCode body).

    Raises:
        InvalidParameterValueException: no ZipFile, an S3 or image location, or bad base64.
    """
    if code is None:
        if required:
            raise InvalidParameterValueException("Please provide a source for function code.")
        return None
    if code.get("ImageUri"):
        raise InvalidParameterValueException("Container images are not supported; use ZipFile.")
    if code.get("S3Bucket") or code.get("S3Key"):
        raise InvalidParameterValueException(
            "Code from S3 is not supported by this node; upload the zip with ZipFile."
        )
    raw = code.get("ZipFile")
    if not raw:
        if required:
            raise InvalidParameterValueException("Please provide a source for function code.")
        return None
    if not isinstance(raw, str):
        raise InvalidParameterValueException("ZipFile must be base64-encoded zip bytes.")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidParameterValueException(
            "Could not unzip uploaded file. Please check your file, then try to upload again."
        ) from exc


def _runtime(value: str) -> str:
    if value not in LAMBDA_RUNTIMES:
        raise _constraint(
            value,
            "runtime",
            f"Member must satisfy enum value set: [{', '.join(sorted(LAMBDA_RUNTIMES))}]",
        )
    supported = supported_runtimes()
    if value not in supported:
        raise InvalidParameterValueException(
            f"The runtime parameter of {value} is not supported by this faas node. "
            f"Supported runtimes: {', '.join(sorted(supported))}."
        )
    return value


def _environment(body: Mapping[str, Any]) -> dict[str, str] | None:
    environment = _object(body, "Environment")
    if environment is None:
        return None
    variables = environment.get("Variables") or {}
    if not isinstance(variables, dict):
        raise InvalidParameterValueException("Environment.Variables must be a map of strings")
    reserved = sorted(key for key in variables if key in RESERVED_ENV_VARS)
    if reserved:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment "
            "variables you have provided contains reserved keys that are currently not supported "
            f"for modification. Reserved keys used in this request: {', '.join(reserved)}"
        )
    for key, value in variables.items():
        if not _ENV_KEY.fullmatch(key):
            raise _constraint(
                key, "environment.variables", "Member must satisfy regular expression pattern: "
                "[a-zA-Z]([a-zA-Z0-9_])+",
            )  # fmt: skip
        if not isinstance(value, str):
            raise InvalidParameterValueException(f"Environment variable {key} must be a string")
    size = sum(len(k.encode()) + len(v.encode()) for k, v in variables.items())
    if size > _MAX_ENV_BYTES:
        raise InvalidParameterValueException(
            "Lambda was unable to configure your environment variables because the environment "
            f"variables you have provided exceeded the 4KB limit. String measured: {size} bytes"
        )
    return dict(variables)


def configuration_fields(body: Mapping[str, Any], creating: bool) -> dict[str, Any]:
    """FunctionConfig fields from a CreateFunction or UpdateFunctionConfiguration body.

    Only members present in ``body`` appear in the result (so an update changes
    just those); ``creating`` adds the required members and defaults.
    """
    fields: dict[str, Any] = {}
    role = _str(body, "Role", "role", 2048)
    if role is not None:
        if not _ROLE.fullmatch(role):
            raise _constraint(
                role, "role", f"Member must satisfy regular expression pattern: {_ROLE.pattern}"
            )
        fields["role"] = role
    elif creating:
        raise InvalidParameterValueException("Role is required.")
    runtime = _str(body, "Runtime", "runtime", 64)
    if runtime is not None:
        fields["runtime"] = _runtime(runtime)
    elif creating:
        raise InvalidParameterValueException("Runtime is required for .zip deployment packages.")
    handler = _str(body, "Handler", "handler", 128)
    if handler is not None:
        if not _HANDLER.fullmatch(handler):
            raise _constraint(
                handler, "handler", r"Member must satisfy regular expression pattern: [^\s]+"
            )
        fields["handler"] = handler
    elif creating:
        raise InvalidParameterValueException("Handler is required for .zip deployment packages.")
    description = _str(body, "Description", "description", 256)
    if description is not None:
        fields["description"] = description
    timeout = bounded_int(body, "Timeout", "timeout", 1, 900)
    if timeout is not None:
        fields["timeout_s"] = timeout
    memory = bounded_int(body, "MemorySize", "memorySize", 128, 10240)
    if memory is not None:
        fields["memory_mb"] = memory
    environment = _environment(body)
    if environment is not None:
        fields["environment"] = environment
    fields.update(_optional_settings(body))
    if body.get("PackageType") not in (None, "Zip"):
        raise InvalidParameterValueException("Only PackageType Zip is supported by this node.")
    layers = _layers(body)
    if layers is not None:
        fields["layers"] = layers
    return fields


def _layers(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The ``Layers`` member: up to five layer version ARNs, in order (``[]`` clears)."""
    value = body.get("Layers")
    if value is None:
        return None
    if not isinstance(value, list):
        raise _constraint(value, "layers", "Member must be a list")
    for arn in value:
        if not isinstance(arn, str) or not 1 <= len(arn) <= 2048 or not _LAYER_ARN.fullmatch(arn):
            raise _constraint(
                f"[{', '.join(str(item) for item in value)}]",
                "layers",
                "Member must satisfy constraint: [Member must have length less than or equal "
                "to 2048, Member must have length greater than or equal to 1, Member must "
                f"satisfy regular expression pattern: {_LAYER_ARN.pattern}, Member must not "
                "be null]",
            )
    if len(value) > MAX_FUNCTION_LAYERS:
        # Wording unconfirmed; Lambda allows at most five layers per function.
        raise InvalidParameterValueException(
            f"Cannot reference more than {MAX_FUNCTION_LAYERS} layers."
        )
    return tuple(value)


def _optional_settings(body: Mapping[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    architectures = body.get("Architectures")
    if architectures is not None:
        if architectures not in (["x86_64"], ["arm64"]):
            raise _constraint(
                architectures,
                "architectures",
                "Member must have length less than or equal to 1 and satisfy enum value set: "
                "[x86_64, arm64]",
            )
        fields["architectures"] = tuple(architectures)
    storage = _object(body, "EphemeralStorage")
    if storage is not None:
        size = bounded_int(storage, "Size", "ephemeralStorage.size", 512, 10240)
        if size is not None:
            fields["ephemeral_storage_mb"] = size
    tracing = _member_choice(body, "TracingConfig", "Mode", "tracingConfig.mode",
                             ("Active", "PassThrough"))  # fmt: skip
    if tracing is not None:
        fields["tracing_mode"] = tracing
    dead_letter = _object(body, "DeadLetterConfig")
    if dead_letter is not None:
        fields["dead_letter_target_arn"] = str(dead_letter.get("TargetArn") or "")
    log_format = _member_choice(body, "LoggingConfig", "LogFormat", "loggingConfig.logFormat",
                                ("JSON", "Text"))  # fmt: skip
    if log_format is not None:
        fields["log_format"] = log_format
    snap_start = _member_choice(body, "SnapStart", "ApplyOn", "snapStart.applyOn",
                                ("PublishedVersions", "None"))  # fmt: skip
    if snap_start is not None:
        fields["snap_start"] = snap_start
    tags = _object(body, "Tags")
    if tags is not None:
        fields["tags"] = {str(k): str(v) for k, v in tags.items()}
    return fields
