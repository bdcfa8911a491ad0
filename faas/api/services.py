"""The typed application state request handlers read: set once, before the app serves."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from faas.catalog import FunctionCatalog
from faas.concurrency import ConcurrencyControl
from faas.config import Config
from faas.deployments import DeploymentManager
from faas.events.async_invoke import AsyncInvokeDispatcher
from faas.layers import LayerCatalog
from faas.observe.metrics import Metrics
from faas.pool.invoker import Invoker
from faas.pool.manager import PoolManager
from faas.versions import VersionCatalog


@dataclass(frozen=True, slots=True)
class Services:
    """What request handlers may use; set once before the app serves."""

    config: Config
    catalog: FunctionCatalog
    invoker: Invoker
    dispatcher: AsyncInvokeDispatcher
    pool: PoolManager
    metrics: Metrics
    layers: LayerCatalog
    versions: VersionCatalog
    deployments: DeploymentManager
    concurrency: ConcurrencyControl


SERVICES = web.AppKey("services", Services)
