from __future__ import annotations

import pytest

from faas.api.names import FunctionRef, parse_function_name
from faas.errors import (
    InvalidParameterValueException,
    ResourceNotFoundException,
    ValidationException,
)

REGION, ACCOUNT = "us-east-1", "000000000000"


@pytest.mark.parametrize(
    ("text", "qualifier", "expected"),
    [
        ("my-fn", None, FunctionRef("my-fn", None)),
        ("my-fn:prod", None, FunctionRef("my-fn", "prod")),
        ("my-fn", "$LATEST", FunctionRef("my-fn", "$LATEST")),
        ("000000000000:function:my-fn", None, FunctionRef("my-fn", None)),
        ("000000000000:function:my-fn:3", None, FunctionRef("my-fn", "3")),
        ("arn:aws:lambda:us-east-1:000000000000:function:my-fn", None, FunctionRef("my-fn", None)),
        ("arn:aws:lambda:us-east-1:000000000000:function:f_1:$LATEST", "$LATEST",
         FunctionRef("f_1", "$LATEST")),
    ],
)  # fmt: skip
def test_accepted_forms(text: str, qualifier: str | None, expected: FunctionRef) -> None:
    assert parse_function_name(text, REGION, ACCOUNT, qualifier) == expected


@pytest.mark.parametrize("text", ["", "bad name", "a/b", "x" * 65, "a:b:c", "arn:aws:s3:::bucket"])
def test_malformed_names_are_validation_errors(text: str) -> None:
    with pytest.raises(ValidationException):
        parse_function_name(text, REGION, ACCOUNT)


def test_other_region_or_account_is_not_found() -> None:
    with pytest.raises(ResourceNotFoundException):
        parse_function_name("arn:aws:lambda:eu-west-1:000000000000:function:f", REGION, ACCOUNT)
    with pytest.raises(ResourceNotFoundException):
        parse_function_name("123456789012:function:f", REGION, ACCOUNT)


def test_conflicting_qualifiers_are_rejected() -> None:
    with pytest.raises(InvalidParameterValueException):
        parse_function_name("f:1", REGION, ACCOUNT, "2")
