"""Layers: PublishLayerVersion, GetLayerVersion(ByArn), ListLayers, ListLayerVersions, Delete.

Paths carry the date ``2018-10-31`` (lambda-compat.md A.6). LayerName in a path may
be a name or a layer ARN. GetLayerVersionByArn shares ``GET /2018-10-31/layers``
with ListLayers and is told apart by ``find=LayerVersion``. As elsewhere, botocore
checks only minima, so every maximum, enum and pattern is checked here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from faas.api.body import json_response, read_json_object
from faas.api.middleware import caller_of
from faas.api.services import SERVICES
from faas.api.validation import decode_zip, max_items
from faas.errors import ResourceNotFoundException, ValidationException
from faas.layers import LAYER_NOT_FOUND, LayerCatalog
from faas.models import LayerVersion

log = logging.getLogger(__name__)

_PAGE_MAX = 50
_NAME = re.compile(r"[a-zA-Z0-9-_]{1,140}")
_NAME_OR_ARN_PATTERN = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:\d{12}:"
    r"layer:[a-zA-Z0-9-_]{1,140}|[a-zA-Z0-9-_]{1,140})"
)
_VERSION_ARN = re.compile(
    r"arn:(aws[a-zA-Z-]*)?:lambda:(eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:"
    r"\d{12}:layer:[a-zA-Z0-9-_]+:[0-9]+"
)
ARCHITECTURES = ("x86_64", "arm64")
# botocore's Runtime enum: a layer may name deprecated runtimes too.
RUNTIMES = (
    "nodejs", "nodejs4.3", "nodejs6.10", "nodejs8.10", "nodejs10.x", "nodejs12.x", "nodejs14.x",
    "nodejs16.x", "nodejs18.x", "nodejs20.x", "nodejs22.x", "nodejs24.x", "java8", "java8.al2",
    "java11", "java17", "java21", "java25", "python2.7", "python3.6", "python3.7", "python3.8",
    "python3.9", "python3.10", "python3.11", "python3.12", "python3.13", "python3.14",
    "dotnetcore1.0", "dotnetcore2.0", "dotnetcore2.1", "dotnetcore3.1", "dotnet6", "dotnet8",
    "dotnet10", "nodejs4.3-edge", "go1.x", "ruby2.5", "ruby2.7", "ruby3.2", "ruby3.3", "ruby3.4",
    "ruby4.0", "provided", "provided.al2", "provided.al2023", "nodejs26.x", "python3.15",
    "java8.al2023", "java11.al2023", "java17.al2023", "custom",
)  # fmt: skip


def _catalog(request: web.Request) -> LayerCatalog:
    return request.app[SERVICES].layers


def _constraint(value: Any, member: str, constraint: str) -> ValidationException:
    return ValidationException(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


# -- request members -------------------------------------------------------------------------


def _layer_name(request: web.Request, catalog: LayerCatalog) -> str:
    """The layer a path names, by name or by ARN.

    Raises:
        ValidationException: neither a layer name nor a layer ARN.
        ResourceNotFoundException: the ARN belongs to another region or account.
    """
    value = request.match_info["layer"]
    if _NAME.fullmatch(value):
        return value
    if len(value) <= 2048 and re.fullmatch(_NAME_OR_ARN_PATTERN, value):
        if not value.startswith(catalog.arn_prefix):
            raise ResourceNotFoundException(LAYER_NOT_FOUND)
        return value[len(catalog.arn_prefix) :]
    raise _constraint(
        value,
        "layerName",
        f"Member must satisfy regular expression pattern: {_NAME_OR_ARN_PATTERN}",
    )


def _version_number(request: web.Request) -> int:
    value = request.match_info["version"]
    if not (value.isascii() and value.isdigit()):
        raise _constraint(value, "versionNumber", "Member must be a number")
    return int(value)


def _str(body: Mapping[str, Any], key: str, member: str, max_len: int) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _constraint(value, member, "Member must be a string")
    if len(value) > max_len:
        raise _constraint(value, member, f"Member must have length less than or equal to {max_len}")
    return value


def _enum_list(
    body: Mapping[str, Any], key: str, member: str, allowed: tuple[str, ...], max_len: int
) -> tuple[str, ...]:
    value = body.get(key)
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _constraint(value, member, "Member must be a list")
    if len(value) > max_len:
        raise _constraint(
            f"[{', '.join(map(str, value))}]",
            member,
            f"Member must have length less than or equal to {max_len}",
        )
    for item in value:
        if item not in allowed:
            raise _constraint(
                f"[{', '.join(map(str, value))}]",
                member,
                f"Member must satisfy constraint: [Member must satisfy enum value set: "
                f"[{', '.join(allowed)}]]",
            )
    return tuple(value)


def _filters(request: web.Request) -> tuple[str | None, str | None]:
    runtime = request.query.get("CompatibleRuntime")
    if runtime is not None and runtime not in RUNTIMES:
        raise _constraint(
            runtime, "compatibleRuntime",
            f"Member must satisfy enum value set: [{', '.join(RUNTIMES)}]",
        )  # fmt: skip
    architecture = request.query.get("CompatibleArchitecture")
    if architecture is not None and architecture not in ARCHITECTURES:
        raise _constraint(
            architecture, "compatibleArchitecture",
            f"Member must satisfy enum value set: [{', '.join(ARCHITECTURES)}]",
        )  # fmt: skip
    return runtime, architecture


def _max_items(request: web.Request) -> int:
    return max_items(request.query, _PAGE_MAX, _PAGE_MAX)


# -- response shapes -------------------------------------------------------------------------


def _list_item(catalog: LayerCatalog, layer: LayerVersion) -> dict[str, Any]:
    """A LayerVersionsListItem; members Lambda leaves out when unset are left out."""
    item: dict[str, Any] = {
        "LayerVersionArn": catalog.version_arn(layer.name, layer.version),
        "Version": layer.version,
        "Description": layer.description,
        "CreatedDate": layer.created_date,
    }
    if layer.compatible_runtimes:
        item["CompatibleRuntimes"] = list(layer.compatible_runtimes)
    if layer.license_info is not None:
        item["LicenseInfo"] = layer.license_info
    if layer.compatible_architectures:
        item["CompatibleArchitectures"] = list(layer.compatible_architectures)
    return item


def _detail(request: web.Request, catalog: LayerCatalog, layer: LayerVersion) -> dict[str, Any]:
    """A PublishLayerVersionResponse / GetLayerVersionResponse."""
    location = f"{request.scheme}://{request.host}/faas/layer-code/{layer.code_sha256_hex}.zip"
    item = _list_item(catalog, layer)
    return {
        "Content": {
            "Location": location,
            "CodeSha256": layer.code_sha256,
            "CodeSize": layer.code_size,
        },
        "LayerArn": catalog.layer_arn(layer.name),
        "LayerVersionArn": item.pop("LayerVersionArn"),
        "Description": item.pop("Description"),
        "CreatedDate": item.pop("CreatedDate"),
        "Version": item.pop("Version"),
        **item,
    }


# -- handlers --------------------------------------------------------------------------------


async def publish_layer_version(request: web.Request) -> web.Response:
    catalog = _catalog(request)
    name = _layer_name(request, catalog)
    body = await read_json_object(request)
    content = body.get("Content")
    zip_bytes = decode_zip(content if isinstance(content, dict) else None, required=True)
    assert zip_bytes is not None
    description = _str(body, "Description", "description", 256) or ""
    runtimes = _enum_list(body, "CompatibleRuntimes", "compatibleRuntimes", RUNTIMES, 15)
    architectures = _enum_list(
        body, "CompatibleArchitectures", "compatibleArchitectures", ARCHITECTURES, 2
    )
    license_info = _str(body, "LicenseInfo", "licenseInfo", 512)
    layer = await catalog.publish(
        name, zip_bytes, description, runtimes, architectures, license_info
    )
    _audit(request, "PublishLayerVersion", catalog.version_arn(name, layer.version))
    return json_response(_detail(request, catalog, layer), status=201)


async def get_layer_version(request: web.Request) -> web.Response:
    catalog = _catalog(request)
    layer = catalog.get(_layer_name(request, catalog), _version_number(request))
    return json_response(_detail(request, catalog, layer))


async def list_layers(request: web.Request) -> web.Response:
    """ListLayers, or GetLayerVersionByArn when the query says ``find=LayerVersion``."""
    if request.query.get("find") == "LayerVersion":
        return await _get_layer_version_by_arn(request)
    catalog = _catalog(request)
    runtime, architecture = _filters(request)
    max_items = _max_items(request)
    marker = request.query.get("Marker") or ""
    layers = [x for x in catalog.latest_matching(runtime, architecture) if x.name > marker]
    page = layers[:max_items]
    response: dict[str, Any] = {
        "Layers": [
            {
                "LayerName": layer.name,
                "LayerArn": catalog.layer_arn(layer.name),
                "LatestMatchingVersion": _list_item(catalog, layer),
            }
            for layer in page
        ]
    }
    if len(layers) > max_items:
        response["NextMarker"] = page[-1].name
    return json_response(response)


async def _get_layer_version_by_arn(request: web.Request) -> web.Response:
    catalog = _catalog(request)
    arn = request.query.get("Arn", "")
    match = _VERSION_ARN.fullmatch(arn) if len(arn) <= 2048 else None
    if match is None:
        raise _constraint(
            arn, "arn", f"Member must satisfy regular expression pattern: {_VERSION_ARN.pattern}"
        )
    if not arn.startswith(catalog.arn_prefix):
        raise ResourceNotFoundException(LAYER_NOT_FOUND)
    name, _, version = arn[len(catalog.arn_prefix) :].rpartition(":")
    layer = catalog.get(name, int(version))
    return json_response(_detail(request, catalog, layer))


async def list_layer_versions(request: web.Request) -> web.Response:
    catalog = _catalog(request)
    name = _layer_name(request, catalog)
    runtime, architecture = _filters(request)
    max_items = _max_items(request)
    marker = request.query.get("Marker")
    versions = catalog.versions(name, runtime, architecture)
    if marker:
        if not marker.isdigit():
            raise _constraint(marker, "marker", "Member must be a marker from a previous call")
        versions = [layer for layer in versions if layer.version < int(marker)]
    page = versions[:max_items]
    response: dict[str, Any] = {"LayerVersions": [_list_item(catalog, x) for x in page]}
    if len(versions) > max_items:
        response["NextMarker"] = str(page[-1].version)
    return json_response(response)


async def delete_layer_version(request: web.Request) -> web.Response:
    """DeleteLayerVersion: 204 whether or not the version exists (Lambda models no RNFE)."""
    catalog = _catalog(request)
    try:
        name = _layer_name(request, catalog)
    except ResourceNotFoundException:
        return web.Response(status=204)  # another account's layer: nothing of ours to delete
    version = _version_number(request)
    if await catalog.delete(name, version):
        _audit(request, "DeleteLayerVersion", catalog.version_arn(name, version))
    return web.Response(status=204)


async def download_layer_code(request: web.Request) -> web.StreamResponse:
    """The stored zip behind a layer version's Content.Location."""
    path = _catalog(request).zip_path(request.match_info["sha256"])
    if path is None:
        raise ResourceNotFoundException("Code not found")
    return web.FileResponse(path)


def _audit(request: web.Request, operation: str, arn: str) -> None:
    """Record who changed what: the caller is the access key id of the request's signature."""
    log.info("%s %s by %s", operation, arn, caller_of(request))
