"""faas's own HTTP API for scheduled rules, under ``/faas/v1/schedules``.

POST   /faas/v1/schedules          create one (Name, ScheduleExpression, FunctionName,
                                   Qualifier, Input, Description, Enabled) -> 201
GET    /faas/v1/schedules          list them
GET    /faas/v1/schedules/{name}   one, with its NextFireTime
PUT    /faas/v1/schedules/{name}   change any of those members but Name (``"Input": null``
                                   goes back to the Scheduled Event)
DELETE /faas/v1/schedules/{name}   remove it -> 204

Errors are Lambda-shaped: InvalidParameterValueException for a bad expression or
member, ResourceNotFoundException for an unknown function, qualifier or rule,
ResourceConflictException for a name in use.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from faas.api.body import json_response, read_json_object
from faas.api.names import parse_function_name
from faas.api.services import SERVICES, Services
from faas.errors import InvalidParameterValueException, ValidationException
from faas.events.schedule_expressions import iso_utc
from faas.events.scheduler import ScheduleSpec, ScheduleView, rule_arn

_NAME = re.compile(r"[\.\-_A-Za-z0-9]{1,64}")  # EventBridge rule names
_INPUT_MAX_CHARS = 8192  # EventBridge's target Input limit
_DESCRIPTION_MAX_CHARS = 512


def shape(services: Services, view: ScheduleView) -> dict[str, Any]:
    record = view.record
    api = services.config.api
    result: dict[str, Any] = {
        "Name": record.name,
        "Arn": rule_arn(api.region, api.account_id, record.name),
        "ScheduleExpression": record.expression,
        "FunctionName": record.function_name,
        "FunctionArn": services.catalog.function_arn(record.function_name, record.qualifier),
        "Description": record.description,
        "Enabled": record.is_enabled,
        "CreatedAt": iso_utc(record.created_at),
    }
    if record.qualifier:
        result["Qualifier"] = record.qualifier
    if record.input is not None:
        result["Input"] = record.input
    if record.last_fired_at is not None:
        result["LastFiredTick"] = iso_utc(record.last_fired_at)
    if view.next_fire_at is not None:
        result["NextFireTime"] = iso_utc(view.next_fire_at)
    return result


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValidationException(
            f"1 validation error detected: Value '{value}' at 'name' failed to satisfy "
            r"constraint: Member must satisfy regular expression pattern: [\.\-_A-Za-z0-9]+ "
            "and have length 1-64"
        )
    return value


def _required_text(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidParameterValueException(f"{key} is required and must be a string.")
    return value


def _input(value: Any) -> str | None:
    """JSON text (checked), or any other JSON value serialised; None keeps the envelope."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise InvalidParameterValueException(f"Input is not valid JSON: {exc}") from exc
        text = value
    else:
        text = orjson.dumps(value).decode()
    if len(text) > _INPUT_MAX_CHARS:
        raise InvalidParameterValueException(
            f"Input must be at most {_INPUT_MAX_CHARS} characters."
        )
    return text


def _description(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > _DESCRIPTION_MAX_CHARS:
        raise InvalidParameterValueException(
            f"Description must be a string of at most {_DESCRIPTION_MAX_CHARS} characters."
        )
    return value


def _enabled(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterValueException("Enabled must be true or false.")
    return value


def _target(services: Services, function: str, qualifier: Any) -> tuple[str, str]:
    """(name, qualifier) of an existing function or alias/version; ("x", "") if unqualified.

    Raises:
        ResourceNotFoundException: no such function, version or alias.
    """
    if qualifier is not None and not isinstance(qualifier, str):
        raise InvalidParameterValueException("Qualifier must be a string.")
    api = services.config.api
    ref = parse_function_name(function, api.region, api.account_id, qualifier or None)
    services.versions.resolve(ref.name, ref.qualifier)
    return ref.name, ref.qualifier or ""


async def create_schedule(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json_object(request)
    name = _name(body.get("Name"))
    expression = _required_text(body, "ScheduleExpression")
    function, qualifier = _target(
        services, _required_text(body, "FunctionName"), body.get("Qualifier")
    )
    spec = ScheduleSpec(
        name=name,
        expression=expression,
        function_name=function,
        qualifier=qualifier,
        input=_input(body.get("Input")),
        description=_description(body.get("Description")),
        is_enabled=_enabled(body.get("Enabled", True)),
    )
    view = await services.scheduler.create(spec)
    return json_response(shape(services, view), status=201)


async def list_schedules(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return json_response({"Schedules": [shape(services, v) for v in services.scheduler.views()]})


async def get_schedule(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return json_response(shape(services, services.scheduler.get(request.match_info["name"])))


async def update_schedule(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    current = services.scheduler.get(request.match_info["name"]).record
    body = await read_json_object(request)
    if "Name" in body and body["Name"] != current.name:
        raise InvalidParameterValueException("A rule cannot be renamed; create a new one.")
    function, qualifier = current.function_name, current.qualifier
    if "FunctionName" in body or "Qualifier" in body:
        # A new FunctionName without a Qualifier targets that function unqualified.
        is_retargeted = "FunctionName" in body
        function, qualifier = _target(
            services,
            _required_text(body, "FunctionName") if is_retargeted else current.function_name,
            body.get("Qualifier", None if is_retargeted else current.qualifier),
        )
    spec = ScheduleSpec(
        name=current.name,
        expression=(
            _required_text(body, "ScheduleExpression")
            if "ScheduleExpression" in body
            else current.expression
        ),
        function_name=function,
        qualifier=qualifier,
        input=_input(body["Input"]) if "Input" in body else current.input,
        description=(
            _description(body["Description"]) if "Description" in body else current.description
        ),
        is_enabled=_enabled(body["Enabled"]) if "Enabled" in body else current.is_enabled,
    )
    view = await services.scheduler.update(spec)
    return json_response(shape(services, view))


async def delete_schedule(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.scheduler.delete(request.match_info["name"])
    return web.Response(status=204)
