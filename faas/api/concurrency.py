"""Reserved and provisioned concurrency: Put/Get/Delete FunctionConcurrency, the
provisioned-concurrency configuration operations, and their listing."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faas.api.body import json_response, read_json_object
from faas.api.functions import function_listing_limit, paginate
from faas.api.names import parse_function_name
from faas.api.services import SERVICES, Services
from faas.api.validation import required_int
from faas.concurrency import ProvisionedState
from faas.errors import InvalidParameterValueException, ValidationException

_QUALIFIER_MAX = 128


def _function_name(request: web.Request, services: Services) -> str:
    api = services.config.api
    ref = parse_function_name(request.match_info["name"], api.region, api.account_id)
    if ref.qualifier is not None:
        raise InvalidParameterValueException(
            "This operation applies to the function, not to a version or alias."
        )
    return ref.name


def _qualifier(request: web.Request) -> str:
    qualifier = request.query.get("Qualifier")
    if not qualifier:
        raise ValidationException(
            "1 validation error detected: Value null at 'qualifier' failed to satisfy "
            "constraint: Member must not be null"
        )
    if len(qualifier) > _QUALIFIER_MAX:
        raise ValidationException(
            f"1 validation error detected: Value '{qualifier}' at 'qualifier' failed to satisfy "
            f"constraint: Member must have length less than or equal to {_QUALIFIER_MAX}"
        )
    return qualifier


async def put_reserved(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _function_name(request, services)
    body = await read_json_object(request)
    reserved = required_int(body, "ReservedConcurrentExecutions",
                            "reservedConcurrentExecutions", 0, 2**31 - 1)  # fmt: skip
    await services.concurrency.put_reserved(name, reserved)
    return json_response({"ReservedConcurrentExecutions": reserved})


async def get_reserved(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    reserved = services.concurrency.reserved(_function_name(request, services))
    return json_response({} if reserved is None else {"ReservedConcurrentExecutions": reserved})


async def delete_reserved(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.concurrency.delete_reserved(_function_name(request, services))
    return web.Response(status=204)


def _provisioned_shape(services: Services, state: ProvisionedState, listed: bool) -> dict[str, Any]:
    config = state.config
    shape: dict[str, Any] = {
        "RequestedProvisionedConcurrentExecutions": config.requested,
        "AvailableProvisionedConcurrentExecutions": state.available,
        "AllocatedProvisionedConcurrentExecutions": state.allocated,
        "Status": state.status,
        "LastModified": config.last_modified,
    }
    if state.status_reason:
        shape["StatusReason"] = state.status_reason
    if listed:
        shape["FunctionArn"] = services.catalog.function_arn(config.function_name, config.qualifier)
    return shape


async def put_provisioned(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _function_name(request, services)
    qualifier = _qualifier(request)
    body = await read_json_object(request)
    requested = required_int(body, "ProvisionedConcurrentExecutions",
                             "provisionedConcurrentExecutions", 1, 2**31 - 1)  # fmt: skip
    state = await services.concurrency.put_provisioned(name, qualifier, requested)
    return json_response(_provisioned_shape(services, state, listed=False), status=202)


async def get_provisioned(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _function_name(request, services)
    if request.query.get("List") == "ALL":
        return _list_provisioned(request, services, name)
    state = services.concurrency.state(name, _qualifier(request))
    return json_response(_provisioned_shape(services, state, listed=False))


def _list_provisioned(request: web.Request, services: Services, name: str) -> web.Response:
    states = services.concurrency.list_states(name)
    response, page = paginate(
        states, lambda s: s.config.qualifier, request.query.get("Marker") or "",
        function_listing_limit(request),
    )  # fmt: skip
    response["ProvisionedConcurrencyConfigs"] = [
        _provisioned_shape(services, state, listed=True) for state in page
    ]
    return json_response(response)


async def delete_provisioned(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    await services.concurrency.delete_provisioned(
        _function_name(request, services), _qualifier(request)
    )
    return web.Response(status=204)
