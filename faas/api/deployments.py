"""faas's own HTTP API for traffic-shifting deployments, under ``/faas/v1/deployments``.

POST /faas/v1/deployments            start one (FunctionName, Alias, TargetVersion,
                                     Preference, ErrorRateThreshold, MinInvocations,
                                     PreTrafficHook, PostTrafficHook)
GET  /faas/v1/deployments            list them
GET  /faas/v1/deployments/{id}       one
POST /faas/v1/deployments/{id}/stop  stop it and roll the alias back
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faas.api.body import json_response, read_json_object
from faas.api.names import parse_function_name
from faas.api.services import SERVICES
from faas.deployments import Deployment
from faas.errors import InvalidParameterValueException


def shape(deployment: Deployment) -> dict[str, Any]:
    record = deployment.to_json()
    return {
        "DeploymentId": record["id"],
        "FunctionName": record["function_name"],
        "Alias": record["alias"],
        "OriginalVersion": record["original_version"],
        "TargetVersion": record["target_version"],
        "Preference": record["preference"],
        "State": record["state"],
        "Step": record["step"],
        "TargetWeight": record["target_weight"],
        "ErrorRateThreshold": record["error_rate_threshold"],
        "MinInvocations": record["min_invocations"],
        "PreTrafficHook": record["pre_traffic_hook"],
        "PostTrafficHook": record["post_traffic_hook"],
        "Reason": record["reason"],
        "CreatedAt": record["created_at"],
        "UpdatedAt": record["updated_at"],
    }


def _text(body: dict[str, Any], key: str, required: bool = True) -> str:
    value = body.get(key)
    if not required and value in (None, ""):
        return ""
    if not isinstance(value, str) or not value:
        raise InvalidParameterValueException(f"{key} is required and must be a string.")
    return value


async def create_deployment(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json_object(request)
    api = services.config.api
    name = parse_function_name(_text(body, "FunctionName"), api.region, api.account_id).name
    threshold = body.get("ErrorRateThreshold", 0.1)
    minimum = body.get("MinInvocations", 5)
    if not isinstance(threshold, int | float) or not isinstance(minimum, int):
        raise InvalidParameterValueException("ErrorRateThreshold and MinInvocations are numbers.")
    deployment = await services.deployments.create(
        name, _text(body, "Alias"), _text(body, "TargetVersion"),
        body.get("Preference") or "AllAtOnce", float(threshold), minimum,
        _text(body, "PreTrafficHook", False), _text(body, "PostTrafficHook", False),
    )  # fmt: skip
    return json_response(shape(deployment), status=201)


async def list_deployments(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return json_response({"Deployments": [shape(d) for d in services.deployments.list()]})


async def get_deployment(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    return json_response(shape(services.deployments.get(request.match_info["id"])))


async def stop_deployment(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    deployment = await services.deployments.stop_deployment(request.match_info["id"])
    return json_response(shape(deployment))
