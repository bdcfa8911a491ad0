from __future__ import annotations

import base64

import pytest

from faas.api.validation import configuration_fields, decode_zip
from faas.errors import InvalidParameterValueException, ValidationException

ROLE = "arn:aws:iam::000000000000:role/r"


def _create(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {"Role": ROLE, "Runtime": "python3.12", "Handler": "app.handler"}
    body.update(overrides)
    return body


def test_create_fields_map_to_config_names() -> None:
    fields = configuration_fields(
        _create(Timeout=30, MemorySize=512, Environment={"Variables": {"A_B": "1"}}),
        creating=True,
    )
    assert fields["timeout_s"] == 30
    assert fields["memory_mb"] == 512
    assert fields["environment"] == {"A_B": "1"}


@pytest.mark.parametrize(
    ("member", "value", "wire"),
    [("Timeout", 901, "timeout"), ("Timeout", 0, "timeout"), ("MemorySize", 10241, "memorySize"),
     ("MemorySize", 64, "memorySize")],
)  # fmt: skip
def test_out_of_range_is_a_validation_exception(member: str, value: int, wire: str) -> None:
    with pytest.raises(ValidationException, match=f"Value '{value}' at '{wire}'"):
        configuration_fields(_create(**{member: value}), creating=True)


def test_reserved_environment_keys_are_refused() -> None:
    with pytest.raises(InvalidParameterValueException, match="AWS_REGION"):
        configuration_fields(_create(Environment={"Variables": {"AWS_REGION": "x"}}), True)


def test_environment_over_4kb_is_refused() -> None:
    with pytest.raises(InvalidParameterValueException, match="4KB"):
        configuration_fields(_create(Environment={"Variables": {"BIG": "x" * 5000}}), True)


def test_unknown_runtime_is_validation_and_unsupported_is_parameter_error() -> None:
    with pytest.raises(ValidationException):
        configuration_fields(_create(Runtime="cobol85"), True)
    with pytest.raises(InvalidParameterValueException):
        configuration_fields(_create(Runtime="java21"), True)


def test_update_only_names_present_members() -> None:
    assert configuration_fields({"Timeout": 5}, creating=False) == {"timeout_s": 5}


def test_create_requires_role_and_handler() -> None:
    with pytest.raises(InvalidParameterValueException):
        configuration_fields({"Runtime": "python3.12", "Handler": "a.b"}, creating=True)
    with pytest.raises(ValidationException):
        configuration_fields(_create(Role="not-a-role"), creating=True)


def test_decode_zip() -> None:
    assert decode_zip({"ZipFile": base64.b64encode(b"PK").decode()}, True) == b"PK"
    with pytest.raises(InvalidParameterValueException):
        decode_zip({"ZipFile": "***"}, True)
    with pytest.raises(InvalidParameterValueException):
        decode_zip({"S3Bucket": "b", "S3Key": "k"}, True)
    with pytest.raises(InvalidParameterValueException):
        decode_zip(None, True)
