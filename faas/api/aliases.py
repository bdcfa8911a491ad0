"""Versions and aliases: PublishVersion, ListVersionsByFunction and the alias operations."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faas.api.body import json_response, read_json_object
from faas.api.functions import configuration, function_listing_limit, paginate, version_order
from faas.api.names import parse_function_name
from faas.api.services import SERVICES, Services
from faas.errors import InvalidParameterValueException, ValidationException
from faas.models import AliasConfig


def _name(request: web.Request, services: Services) -> str:
    api = services.config.api
    ref = parse_function_name(request.match_info["name"], api.region, api.account_id)
    if ref.qualifier is not None:
        raise InvalidParameterValueException("A qualifier is not allowed here.")
    return ref.name


def alias_configuration(services: Services, alias: AliasConfig) -> dict[str, Any]:
    """An AliasConfiguration as botocore's model shapes it."""
    shape: dict[str, Any] = {
        "AliasArn": services.catalog.function_arn(alias.function_name, alias.name),
        "Name": alias.name,
        "FunctionVersion": alias.function_version,
        "Description": alias.description,
        "RevisionId": alias.revision_id,
    }
    if alias.additional_version_weights:
        shape["RoutingConfig"] = {
            "AdditionalVersionWeights": dict(alias.additional_version_weights)
        }
    return shape


def _weights(body: dict[str, Any]) -> dict[str, float] | None:
    routing = body.get("RoutingConfig")
    if routing is None:
        return None
    if not isinstance(routing, dict):
        raise InvalidParameterValueException("RoutingConfig must be an object")
    weights = routing.get("AdditionalVersionWeights") or {}
    if not isinstance(weights, dict):
        raise InvalidParameterValueException("AdditionalVersionWeights must be a map")
    return dict(weights)


def _description(body: dict[str, Any]) -> str | None:
    description = body.get("Description")
    if description is not None and (not isinstance(description, str) or len(description) > 256):
        raise ValidationException(
            f"1 validation error detected: Value '{description}' at 'description' failed to "
            "satisfy constraint: Member must have length less than or equal to 256"
        )
    return description


async def publish_version(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _name(request, services)
    body = await read_json_object(request)
    config = await services.versions.publish(
        name, body.get("CodeSha256"), _description(body), body.get("RevisionId")
    )
    return json_response(configuration(services, config), status=201)


async def list_versions(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _name(request, services)
    configs = services.versions.versions(name)
    response, page = paginate(
        configs,
        version_order,
        request.query.get("Marker") or "",
        function_listing_limit(request),
    )
    response["Versions"] = [configuration(services, config) for config in page]
    return json_response(response)


async def create_alias(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _name(request, services)
    body = await read_json_object(request)
    alias_name, version = body.get("Name"), body.get("FunctionVersion")
    if not isinstance(alias_name, str) or not isinstance(version, str):
        raise InvalidParameterValueException("Name and FunctionVersion are required.")
    alias = await services.versions.create_alias(
        name, alias_name, version, _description(body) or "", _weights(body) or {}
    )
    return json_response(alias_configuration(services, alias), status=201)


async def get_alias(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    alias = services.versions.get_alias(_name(request, services), request.match_info["alias"])
    return json_response(alias_configuration(services, alias))


async def update_alias(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _name(request, services)
    body = await read_json_object(request)
    changes: dict[str, Any] = {}
    if body.get("FunctionVersion") is not None:
        changes["function_version"] = body["FunctionVersion"]
    description = _description(body)
    if description is not None:
        changes["description"] = description
    weights = _weights(body)
    if weights is not None:
        changes["additional_version_weights"] = weights
    alias = await services.versions.update_alias(
        name, request.match_info["alias"], changes, body.get("RevisionId")
    )
    return json_response(alias_configuration(services, alias))


async def delete_alias(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name, alias = _name(request, services), request.match_info["alias"]
    await services.versions.delete_alias(name, alias)
    await services.concurrency.forget_qualifier(name, alias)
    return web.Response(status=204)


async def list_aliases(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name = _name(request, services)
    aliases = services.versions.aliases(name, request.query.get("FunctionVersion"))
    response, page = paginate(
        aliases, lambda a: a.name, request.query.get("Marker") or "",
        function_listing_limit(request),
    )  # fmt: skip
    response["Aliases"] = [alias_configuration(services, alias) for alias in page]
    return json_response(response)
