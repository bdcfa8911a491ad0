"""Control plane: CreateFunction, GetFunction(Configuration), ListFunctions, Update*, Delete."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from faas.api.body import json_response, read_json_object
from faas.api.dlq import check_dead_letter_target
from faas.api.middleware import caller_of
from faas.api.names import FunctionRef, is_latest, parse_function_name
from faas.api.services import SERVICES, Services
from faas.api.shapes import function_configuration
from faas.api.validation import configuration_fields, decode_zip, max_items
from faas.errors import (
    InvalidParameterValueException,
    ResourceNotFoundException,
)
from faas.models import FunctionConfig

_PAGE_MAX = 50
T = TypeVar("T")

log = logging.getLogger(__name__)


def _services(request: web.Request) -> Services:
    return request.app[SERVICES]


def _ref(request: web.Request, services: Services) -> FunctionRef:
    api = services.config.api
    return parse_function_name(
        request.match_info["name"], api.region, api.account_id, request.query.get("Qualifier")
    )


def _resolve(services: Services, ref: FunctionRef) -> FunctionConfig:
    """The configuration a reference names: `$LATEST`, a version, or an alias's main version
    (reads never make the weighted draw an invocation makes)."""
    return services.versions.describe(ref.name, ref.qualifier)


def configuration(services: Services, config: FunctionConfig) -> dict[str, Any]:
    """A FunctionConfiguration; a published version's FunctionArn carries its number."""
    qualifier = None if is_latest(config.version) else config.version
    return function_configuration(
        config,
        services.catalog.function_arn(config.name, qualifier),
        services.layers.references(config),
    )


async def create_function(request: web.Request) -> web.Response:
    services = _services(request)
    body = await read_json_object(request)
    raw_name = body.get("FunctionName")
    if not isinstance(raw_name, str):
        raise InvalidParameterValueException("FunctionName is required.")
    api = services.config.api
    ref = parse_function_name(raw_name, api.region, api.account_id)
    if ref.qualifier is not None:
        raise InvalidParameterValueException("A qualifier is not allowed in CreateFunction.")
    fields = configuration_fields(body, creating=True)
    check_dead_letter_target(services, ref.name, fields.get("dead_letter_target_arn", ""))
    zip_bytes = decode_zip(body.get("Code") if isinstance(body.get("Code"), dict) else None, True)
    assert zip_bytes is not None
    config = await services.catalog.create({"name": ref.name, **fields}, zip_bytes)
    _audit(request, "CreateFunction", config.name)
    if body.get("Publish") is True:
        config = await services.versions.publish(config.name)
    return json_response(configuration(services, config), status=201)


async def get_function(request: web.Request) -> web.Response:
    services = _services(request)
    config = _resolve(services, _ref(request, services))
    location = f"{request.scheme}://{request.host}/faas/code/{config.code_sha256_hex}.zip"
    response: dict[str, Any] = {
        "Configuration": configuration(services, config),
        "Code": {"RepositoryType": "S3", "Location": location},
    }
    if config.tags:
        response["Tags"] = dict(config.tags)
    reserved = services.concurrency.reserved(config.name)
    if reserved is not None:
        response["Concurrency"] = {"ReservedConcurrentExecutions": reserved}
    return json_response(response)


async def get_configuration(request: web.Request) -> web.Response:
    services = _services(request)
    config = _resolve(services, _ref(request, services))
    return json_response(configuration(services, config))


async def list_functions(request: web.Request) -> web.Response:
    services = _services(request)
    max_items = function_listing_limit(request)
    marker = request.query.get("Marker") or ""
    every_version = request.query.get("FunctionVersion") == "ALL"
    configs = [
        config
        for name in services.catalog.names()
        for config in (services.versions.versions(name) if every_version else
                       [services.catalog.get(name)])
    ]  # fmt: skip
    response, page = paginate(configs, _listing_key, marker, max_items)
    response["Functions"] = [configuration(services, config) for config in page]
    return json_response(response)


def function_listing_limit(request: web.Request) -> int:
    """MaxItems (1-10000), served at most 50 per page as Lambda does."""
    return min(max_items(request.query, 10000, _PAGE_MAX), _PAGE_MAX)


def version_order(config: FunctionConfig) -> str:
    """Sorts `$LATEST` first, then published versions numerically (a paging marker)."""
    return "0" if is_latest(config.version) else f"1{int(config.version):012d}"


def _listing_key(config: FunctionConfig) -> str:
    return f"{config.name}:{version_order(config)}"


async def update_code(request: web.Request) -> web.Response:
    services = _services(request)
    ref = _ref(request, services)
    body = await read_json_object(request)
    _require_unqualified(ref)
    services.catalog.get(ref.name)
    zip_bytes = decode_zip(body, required=True)
    assert zip_bytes is not None
    revision = body.get("RevisionId")
    if body.get("DryRun"):
        return json_response(configuration(services, services.catalog.get(ref.name)))
    config = await services.catalog.update_code(ref.name, zip_bytes, revision)
    _audit(request, "UpdateFunctionCode", config.name)
    if body.get("Publish") is True:
        config = await services.versions.publish(config.name)
    return json_response(configuration(services, config))


async def update_configuration(request: web.Request) -> web.Response:
    services = _services(request)
    ref = _ref(request, services)
    body = await read_json_object(request)
    _require_unqualified(ref)
    services.catalog.get(ref.name)
    fields = configuration_fields(body, creating=False)
    check_dead_letter_target(services, ref.name, fields.get("dead_letter_target_arn", ""))
    if "Environment" in body and "environment" not in fields:
        fields["environment"] = {}
    config = await services.catalog.update_configuration(ref.name, fields, body.get("RevisionId"))
    _audit(request, "UpdateFunctionConfiguration", config.name)
    return json_response(configuration(services, config))


async def delete_function(request: web.Request) -> web.Response:
    services = _services(request)
    ref = _ref(request, services)
    services.catalog.get(ref.name)
    if ref.qualifier == "$LATEST":
        raise InvalidParameterValueException(
            "$LATEST version cannot be deleted without deleting the function."
        )
    if ref.qualifier is not None:
        if not ref.qualifier.isdigit():
            raise InvalidParameterValueException(
                "Deletion of aliases is not supported by DeleteFunction; use DeleteAlias."
            )
        await services.versions.delete_version(ref.name, ref.qualifier)
        await services.concurrency.forget_qualifier(ref.name, ref.qualifier)
        services.pool.retire(ref.name, ref.qualifier)
        _audit(request, f"DeleteFunction (version {ref.qualifier})", ref.name)
        return web.Response(status=204)
    await services.catalog.delete(ref.name)
    services.versions.forget(ref.name)
    services.concurrency.forget_function(ref.name)
    _audit(request, "DeleteFunction", ref.name)
    return web.Response(status=204)


async def download_code(request: web.Request) -> web.StreamResponse:
    """The stored zip behind GetFunction's Code.Location."""
    services = _services(request)
    sha256 = request.match_info["sha256"]
    for name in services.catalog.names():
        for config in services.versions.versions(name):
            if config.code_sha256_hex == sha256:
                return web.FileResponse(services.catalog.zip_path(config))
    raise ResourceNotFoundException("Code not found")


def _audit(request: web.Request, operation: str, function_name: str) -> None:
    """Record who changed what: the caller is the access key id of the request's signature."""
    log.info("%s %s by %s", operation, function_name, caller_of(request))


def paginate(
    items: list[T], key: Callable[[T], str], marker: str, max_items: int
) -> tuple[dict[str, Any], list[T]]:
    """One page of ``items`` (in key order) after ``marker``, and NextMarker if more follow."""
    remaining = [item for item in sorted(items, key=key) if key(item) > marker]
    page = remaining[:max_items]
    response: dict[str, Any] = {}
    if len(remaining) > max_items:
        response["NextMarker"] = key(page[-1])
    return response, page


def _require_unqualified(ref: FunctionRef) -> None:
    if ref.qualifier is not None and ref.qualifier != "$LATEST":
        raise InvalidParameterValueException(
            "Only $LATEST can be updated; published versions are immutable."
        )
