"""Build the aiohttp Application: typed app keys, middleware and the route table."""

from __future__ import annotations

from aiohttp import web

from faas.api import (
    aliases,
    concurrency,
    deployments,
    dlq,
    event_invoke_configs,
    event_source_mappings,
    functions,
    invoke,
    layers,
    operations,
    schedules,
)
from faas.api.middleware import lambda_errors
from faas.api.services import SERVICES, Services

_EVENT_INVOKE_CONFIG = "/2019-09-25/functions/{name}/event-invoke-config"
_EVENT_SOURCE_MAPPINGS = "/2015-03-31/event-source-mappings"
_EVENT_SOURCE_MAPPING = _EVENT_SOURCE_MAPPINGS + "/{uuid}"
# Zips arrive base64-encoded inside JSON: 50 MB of zip is about 67 MB of body.
_MAX_BODY_BYTES = 80 * 1024 * 1024


def build_app(services: Services) -> web.Application:
    app = web.Application(middlewares=[lambda_errors], client_max_size=_MAX_BODY_BYTES)
    app[SERVICES] = services
    app.router.add_routes(
        [
            # Invoke first: the router tries routes in order, and this is the hot one.
            web.post("/2015-03-31/functions/{name}/invocations", invoke.invoke),
            web.get("/healthz", operations.healthz),
            web.get("/metrics", operations.metrics),
            web.get("/faas/v1/pool", operations.pool_books),
            web.get("/2016-08-19/account-settings", operations.account_settings),
            web.get("/2016-08-19/account-settings/", operations.account_settings),
            web.post("/2015-03-31/functions", functions.create_function),
            web.post("/2015-03-31/functions/", functions.create_function),
            web.get("/2015-03-31/functions", functions.list_functions),
            web.get("/2015-03-31/functions/", functions.list_functions),
            web.get("/2015-03-31/functions/{name}", functions.get_function),
            web.delete("/2015-03-31/functions/{name}", functions.delete_function),
            web.get("/2015-03-31/functions/{name}/configuration", functions.get_configuration),
            web.put("/2015-03-31/functions/{name}/configuration", functions.update_configuration),
            web.put("/2015-03-31/functions/{name}/code", functions.update_code),
            web.post("/2015-03-31/functions/{name}/versions", aliases.publish_version),
            web.get("/2015-03-31/functions/{name}/versions", aliases.list_versions),
            web.post("/2015-03-31/functions/{name}/aliases", aliases.create_alias),
            web.get("/2015-03-31/functions/{name}/aliases", aliases.list_aliases),
            web.get("/2015-03-31/functions/{name}/aliases/{alias}", aliases.get_alias),
            web.put("/2015-03-31/functions/{name}/aliases/{alias}", aliases.update_alias),
            web.delete("/2015-03-31/functions/{name}/aliases/{alias}", aliases.delete_alias),
            web.put("/2017-10-31/functions/{name}/concurrency", concurrency.put_reserved),
            web.get("/2019-09-30/functions/{name}/concurrency", concurrency.get_reserved),
            web.delete("/2017-10-31/functions/{name}/concurrency", concurrency.delete_reserved),
            web.put(
                "/2019-09-30/functions/{name}/provisioned-concurrency", concurrency.put_provisioned
            ),
            web.get(
                "/2019-09-30/functions/{name}/provisioned-concurrency", concurrency.get_provisioned
            ),
            web.delete(
                "/2019-09-30/functions/{name}/provisioned-concurrency",
                concurrency.delete_provisioned,
            ),
            web.post("/faas/v1/deployments", deployments.create_deployment),
            web.get("/faas/v1/deployments", deployments.list_deployments),
            web.get("/faas/v1/deployments/{id}", deployments.get_deployment),
            web.post("/faas/v1/deployments/{id}/stop", deployments.stop_deployment),
            web.post("/faas/v1/schedules", schedules.create_schedule),
            web.get("/faas/v1/schedules", schedules.list_schedules),
            web.get("/faas/v1/schedules/{name}", schedules.get_schedule),
            web.put("/faas/v1/schedules/{name}", schedules.update_schedule),
            web.delete("/faas/v1/schedules/{name}", schedules.delete_schedule),
            web.put(_EVENT_INVOKE_CONFIG, event_invoke_configs.put_event_invoke_config),
            web.post(_EVENT_INVOKE_CONFIG, event_invoke_configs.update_event_invoke_config),
            web.get(_EVENT_INVOKE_CONFIG, event_invoke_configs.get_event_invoke_config),
            web.delete(_EVENT_INVOKE_CONFIG, event_invoke_configs.delete_event_invoke_config),
            web.get(_EVENT_INVOKE_CONFIG + "/list", event_invoke_configs.list_event_invoke_configs),
            web.get("/faas/v1/dlq/{queue}", dlq.list_dead_letters),
            web.post("/faas/v1/dlq/{queue}/redrive", dlq.redrive_dead_letters),
            web.post(_EVENT_SOURCE_MAPPINGS, event_source_mappings.create_event_source_mapping),
            web.post(
                _EVENT_SOURCE_MAPPINGS + "/", event_source_mappings.create_event_source_mapping
            ),
            web.get(_EVENT_SOURCE_MAPPINGS, event_source_mappings.list_event_source_mappings),
            web.get(_EVENT_SOURCE_MAPPINGS + "/", event_source_mappings.list_event_source_mappings),
            web.get(_EVENT_SOURCE_MAPPING, event_source_mappings.get_event_source_mapping),
            web.put(_EVENT_SOURCE_MAPPING, event_source_mappings.update_event_source_mapping),
            web.delete(_EVENT_SOURCE_MAPPING, event_source_mappings.delete_event_source_mapping),
            web.get("/faas/code/{sha256}.zip", functions.download_code),
            web.get("/2018-10-31/layers", layers.list_layers),
            web.get("/2018-10-31/layers/", layers.list_layers),
            web.post("/2018-10-31/layers/{layer}/versions", layers.publish_layer_version),
            web.get("/2018-10-31/layers/{layer}/versions", layers.list_layer_versions),
            web.get("/2018-10-31/layers/{layer}/versions/{version}", layers.get_layer_version),
            web.delete(
                "/2018-10-31/layers/{layer}/versions/{version}", layers.delete_layer_version
            ),
            web.get("/faas/layer-code/{sha256}.zip", layers.download_layer_code),
        ]
    )
    return app
