"""FunctionName and Qualifier as the Lambda API accepts them: names, partial and full ARNs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from faas.errors import (
    InvalidParameterValueException,
    ResourceNotFoundException,
    ValidationException,
)
from faas.models import LATEST

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_QUALIFIER = re.compile(r"\$LATEST|[a-zA-Z0-9_-]{1,128}")
_FUNCTION_NAME_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?([a-z]{2}(-gov)?-[a-z]+-\d{1}:)?(\d{12}:)?"
    r"(function:)?([a-zA-Z0-9-_\.]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)


@dataclass(frozen=True, slots=True)
class FunctionRef:
    """A function name with the qualifier the caller asked for (None if unqualified)."""

    name: str
    qualifier: str | None


def _invalid_name(value: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value '{value}' at 'functionName' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {_FUNCTION_NAME_PATTERN}"
    )


def parse_function_name(
    value: str, region: str, account_id: str, qualifier: str | None = None
) -> FunctionRef:
    """Resolve ``my-fn``, ``my-fn:q``, ``123456789012:function:my-fn[:q]`` or a full ARN.

    Raises:
        ValidationException: the text is no function name.
        InvalidParameterValueException: two different qualifiers were given.
        ResourceNotFoundException: the ARN names another region or account.
    """
    if not value or len(value) > 256:
        raise _invalid_name(value)
    parts = value.split(":")
    embedded: str | None = None
    if parts[0] == "arn":
        if len(parts) not in (7, 8) or parts[2] != "lambda" or parts[5] != "function":
            raise _invalid_name(value)
        if parts[3] != region or parts[4] != account_id:
            raise ResourceNotFoundException(f"Function not found: {value}")
        name = parts[6]
        embedded = parts[7] if len(parts) == 8 else None
    elif len(parts) >= 3 and parts[1] == "function":
        if len(parts) > 4 or not re.fullmatch(r"\d{12}", parts[0]):
            raise _invalid_name(value)
        if parts[0] != account_id:
            raise ResourceNotFoundException(f"Function not found: {value}")
        name = parts[2]
        embedded = parts[3] if len(parts) == 4 else None
    elif len(parts) <= 2:
        name = parts[0]
        embedded = parts[1] if len(parts) == 2 else None
    else:
        raise _invalid_name(value)
    if not _NAME.fullmatch(name) or (embedded is not None and not _QUALIFIER.fullmatch(embedded)):
        raise _invalid_name(value)
    if qualifier is not None and qualifier != "" and not _QUALIFIER.fullmatch(qualifier):
        raise ValidationException(
            f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy "
            r"constraint: Member must satisfy regular expression pattern: (|[a-zA-Z0-9$_-]+)"
        )
    if embedded is not None and qualifier and embedded != qualifier:
        raise InvalidParameterValueException(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    return FunctionRef(name, embedded or qualifier or None)


def is_latest(qualifier: str | None) -> bool:
    return qualifier is None or qualifier == LATEST
