"""Asynchronous invocation settings: Put/Update/Get/Delete FunctionEventInvokeConfig and
ListFunctionEventInvokeConfigs.

Put replaces the whole config (members not given are unset); Update changes only the
members given, and inside ``DestinationConfig`` only the ``OnSuccess`` / ``OnFailure``
given. Unset members are left out of the answer; their defaults apply when events run
(lambda-compat.md A.6, docs/async.md).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from faas.api.body import json_response, read_json_object
from faas.api.functions import paginate
from faas.api.names import parse_function_name
from faas.api.services import SERVICES, Services
from faas.api.validation import bounded_int, max_items
from faas.errors import InvalidParameterValueException, ValidationException
from faas.events.destinations import TargetKind
from faas.events.invoke_configs import EventInvokeConfig
from faas.models import LATEST

# Wire names of the operations (botocore's FunctionEventInvokeConfig shapes).
MEMBER_RETRIES = "MaximumRetryAttempts"
MEMBER_EVENT_AGE = "MaximumEventAgeInSeconds"
MEMBER_DESTINATIONS = "DestinationConfig"
MEMBER_DESTINATION = "Destination"
_CONDITIONS = (("OnSuccess", "onSuccess", "on_success"), ("OnFailure", "onFailure", "on_failure"))
DESTINATION_ARN = re.compile(
    r"^$|arn:(aws[a-zA-Z0-9-]*):([a-zA-Z0-9\-])+:([a-z]{2}((-gov)|(-iso(b?)))?-[a-z]+-\d{1})?:"
    r"(\d{12})?:(.*)"
)
_DESTINATION_MAX = 350
_LIST_MAX = 50


def _function(request: web.Request, services: Services) -> tuple[str, str]:
    """(function name, qualifier) of the request; the unqualified function is `$LATEST`."""
    api = services.config.api
    ref = parse_function_name(
        request.match_info["name"], api.region, api.account_id, request.query.get("Qualifier")
    )
    return ref.name, ref.qualifier or LATEST


def _destination(services: Services, function_name: str, value: Any, member: str) -> str:
    if (
        not isinstance(value, str)
        or len(value) > _DESTINATION_MAX
        or not DESTINATION_ARN.match(value)
    ):
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: "
            f"{DESTINATION_ARN.pattern}"
        )
    if not value:
        return ""
    target = services.destinations.parse(value)
    if target.kind is TargetKind.FUNCTION and target.name == function_name:
        raise InvalidParameterValueException(
            "You can't specify the function as a destination for itself."
        )
    services.destinations.validate_target(value)
    return value


def _changes(services: Services, function_name: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The EventInvokeConfig fields a Put/Update body gives.

    Raises:
        ValidationException: a value out of range or not an ARN.
        InvalidParameterValueException: no member given, or a target that cannot be used.
    """
    changes: dict[str, Any] = {}
    if body.get(MEMBER_RETRIES) is not None:
        changes["maximum_retry_attempts"] = bounded_int(
            body, MEMBER_RETRIES, "maximumRetryAttempts", 0, 2
        )
    if body.get(MEMBER_EVENT_AGE) is not None:
        changes["maximum_event_age_s"] = bounded_int(
            body, MEMBER_EVENT_AGE, "maximumEventAgeInSeconds", 60, 21_600
        )
    destinations = body.get(MEMBER_DESTINATIONS)
    if destinations is not None:
        if not isinstance(destinations, dict):
            raise InvalidParameterValueException(f"{MEMBER_DESTINATIONS} must be an object.")
        for key, member, field in _CONDITIONS:
            condition = destinations.get(key)
            if condition is None:
                continue
            if not isinstance(condition, dict):
                raise InvalidParameterValueException(
                    f"{MEMBER_DESTINATIONS}.{key} must be an object."
                )
            changes[field] = _destination(
                services, function_name, condition.get(MEMBER_DESTINATION, ""),
                f"destinationConfig.{member}.destination",
            )  # fmt: skip
    if not changes and destinations is None:
        raise InvalidParameterValueException(
            "You must specify at least one of error handling or destination setting."
        )
    return changes


def event_invoke_config_shape(services: Services, config: EventInvokeConfig) -> dict[str, Any]:
    """A FunctionEventInvokeConfig as botocore's model shapes it."""
    shape: dict[str, Any] = {
        "LastModified": config.last_modified,
        "FunctionArn": services.catalog.function_arn(config.function_name, config.qualifier),
    }
    if config.maximum_retry_attempts is not None:
        shape[MEMBER_RETRIES] = config.maximum_retry_attempts
    if config.maximum_event_age_s is not None:
        shape[MEMBER_EVENT_AGE] = config.maximum_event_age_s
    shape[MEMBER_DESTINATIONS] = {
        key: ({MEMBER_DESTINATION: getattr(config, field)} if getattr(config, field) else {})
        for key, _, field in _CONDITIONS
    }
    return shape


def _arn(services: Services, function_name: str, qualifier: str) -> str:
    return services.catalog.function_arn(function_name, qualifier)


async def put_event_invoke_config(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name, qualifier = _function(request, services)
    services.versions.describe(name, None if qualifier == LATEST else qualifier)
    changes = _changes(services, name, await read_json_object(request))
    config = await services.invoke_configs.put(
        EventInvokeConfig(name, qualifier, time.time(), **changes)
    )
    return json_response(event_invoke_config_shape(services, config))


async def update_event_invoke_config(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name, qualifier = _function(request, services)
    services.invoke_configs.get(name, qualifier, _arn(services, name, qualifier))
    changes = _changes(services, name, await read_json_object(request))
    config = await services.invoke_configs.update(
        name, qualifier, _arn(services, name, qualifier), changes
    )
    return json_response(event_invoke_config_shape(services, config))


async def get_event_invoke_config(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name, qualifier = _function(request, services)
    config = services.invoke_configs.get(name, qualifier, _arn(services, name, qualifier))
    return json_response(event_invoke_config_shape(services, config))


async def delete_event_invoke_config(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name, qualifier = _function(request, services)
    await services.invoke_configs.delete(name, qualifier, _arn(services, name, qualifier))
    return web.Response(status=204)


def _list_limit(request: web.Request) -> int:
    return max_items(request.query, _LIST_MAX, _LIST_MAX)


def _listing_key(config: EventInvokeConfig) -> str:
    """Orders `$LATEST` first, then versions by number, then aliases (a paging marker)."""
    if config.qualifier == LATEST:
        return "0"
    if config.qualifier.isdigit():
        return f"1{int(config.qualifier):012d}"
    return f"2{config.qualifier}"


async def list_event_invoke_configs(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name, _ = _function(request, services)
    configs = services.invoke_configs.list(name)
    response, page = paginate(
        configs, _listing_key, request.query.get("Marker") or "", _list_limit(request)
    )
    response["FunctionEventInvokeConfigs"] = [
        event_invoke_config_shape(services, config) for config in page
    ]
    return json_response(response)
