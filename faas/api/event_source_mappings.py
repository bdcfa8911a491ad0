"""Event source mappings: Create/Get/Update/Delete/ListEventSourceMappings.

Create, Update and Delete answer 202 with the mapping in its transitional state
(Creating, Enabling, Disabling, Updating, Deleting); the change completes in the
background (lambda-compat.md A.6). ``LastModified`` is an epoch number here, unlike
a function's ISO string.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from faas.api.body import json_response, read_json_object
from faas.api.functions import paginate
from faas.api.mapping_fields import event_source_arn, mapping_settings, required_string
from faas.api.names import FunctionRef, parse_function_name
from faas.api.services import SERVICES, Services
from faas.api.validation import max_items
from faas.events.mappings.manager import MappingManager
from faas.events.mappings.model import EventSourceMapping

_LIST_DEFAULT = 100
_LIST_MAX = 10000


def _manager(request: web.Request) -> MappingManager:
    return request.app[SERVICES].mappings


def _function_ref(services: Services, value: str) -> FunctionRef:
    api = services.config.api
    return parse_function_name(value, api.region, api.account_id)


def mapping_configuration(manager: MappingManager, mapping: EventSourceMapping) -> dict[str, Any]:
    """An EventSourceMappingConfiguration, members in botocore's order."""
    shape: dict[str, Any] = {"UUID": mapping.uuid}
    if mapping.is_stream:
        shape["StartingPosition"] = mapping.starting_position
    shape["BatchSize"] = mapping.batch_size
    shape["MaximumBatchingWindowInSeconds"] = mapping.maximum_batching_window_s
    if mapping.is_stream:
        shape["ParallelizationFactor"] = 1
    shape.update(
        {
            "EventSourceArn": mapping.event_source_arn,
            "FunctionArn": manager.function_arn(mapping),
            "LastModified": mapping.last_modified,
            "LastProcessingResult": mapping.last_processing_result,
            "State": mapping.state.value,
            "StateTransitionReason": mapping.state_transition_reason,
        }
    )
    if mapping.maximum_concurrency is not None:
        shape["ScalingConfig"] = {"MaximumConcurrency": mapping.maximum_concurrency}
    if mapping.is_stream:
        on_failure = (
            {"Destination": mapping.on_failure_destination}
            if mapping.on_failure_destination
            else {}
        )
        shape["DestinationConfig"] = {"OnFailure": on_failure}
        shape["MaximumRecordAgeInSeconds"] = mapping.maximum_record_age_s
        shape["BisectBatchOnFunctionError"] = mapping.bisect_batch_on_function_error
        shape["MaximumRetryAttempts"] = mapping.maximum_retry_attempts
    shape["FunctionResponseTypes"] = list(mapping.function_response_types)
    shape["EventSourceMappingArn"] = manager.mapping_arn(mapping)
    return shape


async def create_event_source_mapping(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json_object(request)
    ref = _function_ref(services, required_string(body, "FunctionName", "functionName"))
    address = event_source_arn(body)
    settings = mapping_settings(body, creating=True)
    mapping = await services.mappings.create(ref.name, ref.qualifier, address, settings)
    return json_response(mapping_configuration(services.mappings, mapping), status=202)


async def get_event_source_mapping(request: web.Request) -> web.Response:
    manager = _manager(request)
    mapping = manager.get(request.match_info["uuid"])
    return json_response(mapping_configuration(manager, mapping))


async def update_event_source_mapping(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    body = await read_json_object(request)
    function: tuple[str, str | None] | None = None
    if body.get("FunctionName") is not None:
        ref = _function_ref(services, required_string(body, "FunctionName", "functionName"))
        function = (ref.name, ref.qualifier)
    settings = mapping_settings(body, creating=False)
    mapping = await services.mappings.update(request.match_info["uuid"], function, settings)
    return json_response(mapping_configuration(services.mappings, mapping), status=202)


async def delete_event_source_mapping(request: web.Request) -> web.Response:
    manager = _manager(request)
    mapping = await manager.delete(request.match_info["uuid"])
    return json_response(mapping_configuration(manager, mapping), status=202)


async def list_event_source_mappings(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    name: str | None = None
    qualifier: str | None = None
    if request.query.get("FunctionName"):
        ref = _function_ref(services, request.query["FunctionName"])
        name, qualifier = ref.name, ref.qualifier
    mappings = services.mappings.matching(
        name, qualifier, request.query.get("EventSourceArn") or None
    )
    response, page = paginate(
        mappings, lambda mapping: mapping.uuid, request.query.get("Marker") or "",
        max_items(request.query, _LIST_MAX, _LIST_DEFAULT),
    )  # fmt: skip
    response["EventSourceMappings"] = [
        mapping_configuration(services.mappings, mapping) for mapping in page
    ]
    return json_response(response)
