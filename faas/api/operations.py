"""Operational endpoints: health, Prometheus metrics, GetAccountSettings."""

from __future__ import annotations

from aiohttp import web

from faas.api.body import json_response
from faas.api.services import SERVICES
from faas.observe.metrics import CONTENT_TYPE

TOTAL_CODE_SIZE_LIMIT = 80530636800


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    response = web.Response(body=services.metrics.render())
    response.headers["Content-Type"] = CONTENT_TYPE
    return response


async def pool_books(request: web.Request) -> web.Response:
    """The pool's books: every live environment, where it is, and the node's counters."""
    return json_response(request.app[SERVICES].pool.books())


async def account_settings(request: web.Request) -> web.Response:
    """GetAccountSettings: limits from the config, usage from the catalog."""
    services = request.app[SERVICES]
    catalog = services.catalog
    limit = services.config.pool.account_concurrency
    total_code = sum(catalog.get(name).code_size for name in catalog.names())
    return web.json_response(
        {
            "AccountLimit": {
                "TotalCodeSize": TOTAL_CODE_SIZE_LIMIT,
                "CodeSizeUnzipped": services.config.store.max_unzipped_bytes,
                "CodeSizeZipped": services.config.store.max_zip_bytes,
                "ConcurrentExecutions": limit,
                "UnreservedConcurrentExecutions": services.concurrency.unreserved_limit,
            },
            "AccountUsage": {"TotalCodeSize": total_code, "FunctionCount": len(catalog)},
        }
    )
