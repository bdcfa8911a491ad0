"""Build the aiohttp Application: typed app keys, middleware and the route table."""

from __future__ import annotations

from aiohttp import web

from faas.api import aliases, concurrency, deployments, functions, invoke, layers, operations
from faas.api.middleware import lambda_errors
from faas.api.services import SERVICES, Services

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
