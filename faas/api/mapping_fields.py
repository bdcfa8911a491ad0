"""Validate Create/UpdateEventSourceMapping bodies into MappingSettings.

Shape violations (a maximum, an enum, a type) answer ValidationException in
Lambda's wording, as for functions (lambda-compat.md A.1); members this node does
not implement answer InvalidParameterValueException instead of being ignored, so
a mapping never silently behaves differently from what was asked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faas.api.validation import bounded_int
from faas.errors import InvalidParameterValueException, ValidationException
from faas.events.mappings.model import REPORT_BATCH_ITEM_FAILURES, MappingSettings

# Members of the operations this node does not implement (any value other than empty).
_UNSUPPORTED = (
    "FilterCriteria",
    "KMSKeyArn",
    "MetricsConfig",
    "LoggingConfig",
    "StartingPositionTimestamp",
    "Topics",
    "Queues",
    "SourceAccessConfigurations",
    "SelfManagedEventSource",
    "AmazonManagedKafkaEventSourceConfig",
    "SelfManagedKafkaEventSourceConfig",
    "DocumentDBEventSourceConfig",
    "ProvisionedPollerConfig",
)
_POSITIONS = ("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP")
_MAX_ARN_LENGTH = 2048


def _constraint(value: Any, member: str, constraint: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def _bool(body: Mapping[str, Any], key: str, member: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _constraint(value, member, "Member must be a boolean")
    return value


def _object(body: Mapping[str, Any], key: str, member: str) -> Mapping[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _constraint(value, member, "Member must be a structure")
    return value


def required_string(body: Mapping[str, Any], key: str, member: str) -> str:
    value = body.get(key)
    if value is None or value == "":
        raise ValidationException(
            f"1 validation error detected: Value null at '{member}' failed to satisfy "
            "constraint: Member must not be null"
        )
    if not isinstance(value, str):
        raise _constraint(value, member, "Member must be a string")
    return value


def event_source_arn(body: Mapping[str, Any]) -> str:
    """The EventSourceArn of a CreateEventSourceMapping body (required here)."""
    if not body.get("EventSourceArn"):
        raise InvalidParameterValueException(
            "EventSourceArn is required: an SQS queue ARN or a redis://, amqp:// or nats:// URI."
        )
    value = required_string(body, "EventSourceArn", "eventSourceArn")
    if len(value) > _MAX_ARN_LENGTH:
        raise _constraint(
            value, "eventSourceArn",
            f"Member must have length less than or equal to {_MAX_ARN_LENGTH}",
        )  # fmt: skip
    return value


def _check_unsupported(body: Mapping[str, Any]) -> None:
    for key in _UNSUPPORTED:
        if body.get(key) not in (None, "", [], {}):
            raise InvalidParameterValueException(f"{key} is not supported by this faas node.")
    if body.get("ParallelizationFactor") not in (None, 1):
        raise InvalidParameterValueException(
            "ParallelizationFactor other than 1 is not supported by this faas node."
        )
    if body.get("TumblingWindowInSeconds") not in (None, 0):
        raise InvalidParameterValueException(
            "TumblingWindowInSeconds is not supported by this faas node."
        )


def _response_types(body: Mapping[str, Any]) -> tuple[str, ...] | None:
    value = body.get("FunctionResponseTypes")
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or len(value) > 1
        or any(item != REPORT_BATCH_ITEM_FAILURES for item in value)
    ):
        raise _constraint(
            value, "functionResponseTypes",
            "Member must have length less than or equal to 1 and satisfy enum value set: "
            f"[{REPORT_BATCH_ITEM_FAILURES}]",
        )  # fmt: skip
    return tuple(value)


def _on_failure_destination(body: Mapping[str, Any]) -> str | None:
    config = _object(body, "DestinationConfig", "destinationConfig")
    if config is None:
        return None
    on_success = _object(config, "OnSuccess", "destinationConfig.onSuccess")
    if on_success and on_success.get("Destination"):
        raise InvalidParameterValueException(
            "Unsupported OnSuccess destination for event source mappings: only OnFailure is "
            "supported."
        )
    on_failure = _object(config, "OnFailure", "destinationConfig.onFailure")
    if on_failure is None:
        return ""
    destination = on_failure.get("Destination") or ""
    if not isinstance(destination, str) or len(destination) > 350:
        raise _constraint(destination, "destinationConfig.onFailure.destination",
                          "Member must be a string of at most 350 characters")  # fmt: skip
    return destination


def _tags(body: Mapping[str, Any]) -> dict[str, str] | None:
    tags = _object(body, "Tags", "tags")
    if tags is None:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise InvalidParameterValueException("Tags must be a map of strings to strings.")
    return dict(tags)


def mapping_settings(body: Mapping[str, Any], creating: bool) -> MappingSettings:
    """The tunables of a Create (``creating``) or Update body; members absent stay None."""
    _check_unsupported(body)
    scaling = _object(body, "ScalingConfig", "scalingConfig")
    position = body.get("StartingPosition")
    if position is not None and (not creating or position not in _POSITIONS):
        raise _constraint(
            position, "startingPosition",
            f"Member must satisfy enum value set: [{', '.join(_POSITIONS)}]",
        )  # fmt: skip
    return MappingSettings(
        enabled=_bool(body, "Enabled", "enabled"),
        batch_size=bounded_int(body, "BatchSize", "batchSize", 1, 10000),
        maximum_batching_window_s=bounded_int(
            body, "MaximumBatchingWindowInSeconds", "maximumBatchingWindowInSeconds", 0, 300
        ),
        function_response_types=_response_types(body),
        scaling_given=scaling is not None,
        maximum_concurrency=bounded_int(
            scaling, "MaximumConcurrency", "scalingConfig.maximumConcurrency", 2, 1000
        ) if scaling is not None else None,
        starting_position=position,
        maximum_retry_attempts=bounded_int(
            body, "MaximumRetryAttempts", "maximumRetryAttempts", -1, 10000
        ),
        maximum_record_age_s=bounded_int(
            body, "MaximumRecordAgeInSeconds", "maximumRecordAgeInSeconds", -1, 604800
        ),
        bisect_batch_on_function_error=_bool(
            body, "BisectBatchOnFunctionError", "bisectBatchOnFunctionError"
        ),
        on_failure_destination=_on_failure_destination(body),
        tags=_tags(body) if creating else None,
    )  # fmt: skip
