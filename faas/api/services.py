"""The typed application state request handlers read: set once, before the app serves."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from faas.catalog import FunctionCatalog
from faas.concurrency import ConcurrencyControl
from faas.config import Config
from faas.deployments import DeploymentManager
from faas.events.async_invoke import AsyncInvokeDispatcher
from faas.events.destinations import DestinationDelivery
from faas.events.invoke_configs import InvokeConfigs
from faas.events.mappings.manager import MappingManager
from faas.events.scheduler import Scheduler
from faas.layers import LayerCatalog
from faas.observe.metrics import Metrics
from faas.pool.invoker import Invoker
from faas.pool.manager import PoolManager
from faas.store.base import DeadLetterStore
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
    scheduler: Scheduler
    destinations: DestinationDelivery
    invoke_configs: InvokeConfigs
    dead_letters: DeadLetterStore
    mappings: MappingManager


SERVICES = web.AppKey("services", Services)
