"""The composition root: build every component, start them in order, stop them in reverse.

Design notes: each component that starts is pushed on a stack together with its
stop step, so a failure halfway through ``start`` still tears down exactly what
came up. ``stop`` first stops accepting requests and lets in-flight ones finish
within ``shutdown_timeout_s`` (or not at all when ``drain`` is False), then
unwinds the stack; it keeps going past a failing step and raises all failures
together at the end.
"""

from __future__ import annotations

import enum
import logging
import os
import random
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from faas.api.app import build_app
from faas.api.services import Services
from faas.catalog import FunctionCatalog
from faas.concurrency import ConcurrencyControl
from faas.config import Config
from faas.deployments import DeploymentManager, hook_invoker
from faas.events.async_invoke import AsyncInvokeDispatcher
from faas.events.destinations import DestinationDelivery
from faas.events.intake import EventIntake
from faas.events.invoke_configs import InvokeConfigs
from faas.events.mappings.manager import MappingManager
from faas.events.outcomes import OutcomeDelivery
from faas.events.scheduler import Scheduler
from faas.layers import LayerCatalog
from faas.observe.logs import LogSink
from faas.observe.metrics import Metrics
from faas.pool.invoker import Invoker
from faas.pool.manager import PoolManager
from faas.pool.metrics import ConcurrentExecutionsCollector, ProvisionedCollector
from faas.runtime_api.server import RuntimeApiServer
from faas.sandbox.cgroups import CgroupManager
from faas.sandbox.launcher import Launcher
from faas.sandbox.namespaces import Isolation
from faas.store.async_configs import SqliteAsyncInvocationStore
from faas.store.base import EventQueue
from faas.store.code import CodeLimits, CodeStore
from faas.store.mappings import SqliteMappingStore
from faas.store.schedules import SqliteScheduleStore
from faas.store.sqlite import SqliteStore
from faas.versions import VersionCatalog

log = logging.getLogger(__name__)

StopStep = Callable[[], Awaitable[None]]


class ServerState(enum.Enum):
    NEW = "new"  # constructed, nothing started
    STARTING = "starting"  # components coming up
    SERVING = "serving"  # accepting requests
    STOPPING = "stopping"  # draining and tearing down
    STOPPED = "stopped"  # everything released


class Server:
    """One faas node: store, catalog, pool, dispatcher and the HTTP front door."""

    __slots__ = ("_config", "_drain", "_runner", "_stop_steps", "catalog", "pool", "port", "state")

    def __init__(self, config: Config) -> None:
        self._config = config
        self._stop_steps: list[tuple[str, StopStep]] = []
        self._runner: web.AppRunner | None = None
        self._drain = True
        self.catalog: FunctionCatalog | None = None
        self.pool: PoolManager | None = None
        self.port = 0
        self.state = ServerState.NEW

    @property
    def url(self) -> str:
        return f"http://{self._config.api.host}:{self.port}"

    async def start(self) -> None:
        """Start every component; on failure, stop what started and re-raise."""
        if self.state is not ServerState.NEW:
            raise RuntimeError(f"server cannot start from {self.state.value}")
        self.state = ServerState.STARTING
        try:
            await self._start_components()
        except BaseException:
            await self._unwind()
            self.state = ServerState.STOPPED
            raise
        self.state = ServerState.SERVING

    async def _start_components(self) -> None:
        config = self._config
        # Absolute: environments forked from the zygote do not share the node's cwd.
        data_dir = config.store.data_dir.absolute()
        store = SqliteStore(data_dir / "registry.sqlite3")
        await store.start()
        self._stop_steps.append(("store", store.stop))
        event_queue: EventQueue = store.events
        if config.events.event_queue_url:  # shared by several nodes instead of the embedded one
            # Imported here: asyncpg adds ~50 ms to the start of nodes that never use it.
            from faas.store.postgres_queue import PostgresEventQueue, load_node_id

            shared_queue = PostgresEventQueue(
                config.events.event_queue_url, await load_node_id(data_dir)
            )
            await shared_queue.start()
            self._stop_steps.append(("event queue", shared_queue.stop))
            event_queue = shared_queue
        code = CodeStore(
            data_dir / "code",
            CodeLimits(
                config.store.max_zip_bytes,
                config.store.max_unzipped_bytes,
                config.store.max_zip_entries,
            ),
        )
        await code.start()
        self._stop_steps.append(("code store", code.stop))
        layer_prefix = f"arn:aws:lambda:{config.api.region}:{config.api.account_id}:layer:"
        layers = LayerCatalog(
            store, code, layer_prefix, data_dir / "opt", config.store.max_unzipped_bytes
        )
        await layers.start()
        self._stop_steps.append(("layer catalog", layers.stop))
        arn_prefix = f"arn:aws:lambda:{config.api.region}:{config.api.account_id}:function:"
        catalog = FunctionCatalog(store, code, arn_prefix, layers)
        await catalog.start()
        self._stop_steps.append(("catalog", catalog.stop))
        self.catalog = catalog
        versions = VersionCatalog(store, catalog, random.Random())
        await versions.start()
        self._stop_steps.append(("versions", versions.stop))
        await layers.collect_garbage(store)
        await code.collect_garbage(await store.code_hashes_in_use())
        sink = LogSink(data_dir / "logs")
        await sink.start()
        self._stop_steps.append(("log sink", sink.stop))
        metrics = Metrics()
        isolation = Isolation(data_dir / "tmp", config.sandbox.run_as_user)
        cgroups = CgroupManager(f"{os.getpid()}-{secrets.token_hex(4)}")
        await cgroups.start()
        self._stop_steps.append(("cgroups", cgroups.stop))
        launcher = Launcher(
            config.api.region,
            config.pool.max_response_bytes,
            isolation,
            cgroups,
            python_over_runtime_api=config.pool.python_transport == "runtime-api",
            use_zygote=config.sandbox.zygote,
            spare_environments=config.sandbox.spare_environments,
        )
        await isolation.start(
            launcher.paths_needed([str(data_dir / "code"), str(data_dir / "opt")])
        )
        self._stop_steps.append(("isolation", isolation.stop))
        await launcher.start()
        self._stop_steps.append(("launcher", launcher.stop))
        runtime_api = RuntimeApiServer()
        await runtime_api.start()
        self._stop_steps.append(("runtime API", runtime_api.stop))
        pool = PoolManager(
            config.pool, launcher, runtime_api, catalog.code_directory, layers.opt_directory,
            sink.emit,
        )  # fmt: skip
        await pool.start()
        self._stop_steps.append(("pool", pool.stop))
        self.pool = pool
        catalog.add_listener(pool.retire)
        metrics.add_gauge("faas_environments", "Live execution environments",
                          lambda: pool.environment_count)  # fmt: skip
        metrics.add_gauge("faas_concurrent_executions_total", "Busy environments, all functions",
                          lambda: pool.concurrent_executions)  # fmt: skip
        invoker = Invoker(config.pool, pool, sink, metrics)
        async_store = SqliteAsyncInvocationStore(store)
        intake = EventIntake(event_queue, metrics)
        destinations = DestinationDelivery(config.api, config.events, versions, intake, async_store)
        await destinations.start()
        self._stop_steps.append(("destinations", destinations.stop))
        invoke_configs = InvokeConfigs(async_store, versions)
        await invoke_configs.start()
        self._stop_steps.append(("event invoke configs", invoke_configs.stop))
        catalog.add_listener(invoke_configs.function_changed)
        versions.add_alias_listener(invoke_configs.alias_changed)
        dispatcher = AsyncInvokeDispatcher(
            config.events, queue=event_queue, intake=intake, catalog=catalog, versions=versions,
            invoker=invoker, metrics=metrics, policies=invoke_configs,
            outcomes=OutcomeDelivery(event_queue, destinations, catalog, metrics),
            reserved_of=pool.limits.reserved,
        )  # fmt: skip
        await dispatcher.start()
        self._stop_steps.append(("dispatcher", lambda: dispatcher.stop(self._drain_timeout_s())))
        concurrency = ConcurrencyControl(store, catalog, versions, pool)
        await concurrency.start()
        self._stop_steps.append(("concurrency", concurrency.stop))
        versions.add_alias_listener(concurrency.alias_changed)
        metrics.add_collector(ProvisionedCollector(pool))
        metrics.add_collector(ConcurrentExecutionsCollector(pool))
        deployments = DeploymentManager(
            store, versions, metrics.versions,
            hook_invoker(invoker.invoke, versions, catalog.function_arn),
        )  # fmt: skip
        await deployments.start()
        self._stop_steps.append(("deployments", deployments.stop))
        scheduler = Scheduler(config.events, SqliteScheduleStore(store), intake.submit, metrics,
                              config.api.region, config.api.account_id)  # fmt: skip
        await scheduler.start()
        self._stop_steps.append(("scheduler", scheduler.stop))
        mappings = MappingManager(config, SqliteMappingStore(store), catalog, versions, invoker,
                                  destinations, metrics)  # fmt: skip
        await mappings.start()
        self._stop_steps.append(("mappings", lambda: mappings.stop(self._drain_timeout_s())))
        catalog.add_listener(mappings.function_changed)
        app = build_app(
            Services(config, catalog, invoker, dispatcher, pool, metrics, layers, versions,
                     deployments, concurrency, scheduler=scheduler,
                     destinations=destinations, invoke_configs=invoke_configs,
                     dead_letters=async_store, mappings=mappings)
        )  # fmt: skip
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=config.api.shutdown_timeout_s,
        )
        await runner.setup()
        self._runner = runner
        self._stop_steps.append(("http", self._stop_http))
        site = web.TCPSite(runner, config.api.host, config.api.port, reuse_address=True)
        await site.start()
        self.port = int(runner.addresses[0][1])

    def _drain_timeout_s(self) -> float:
        return self._config.api.shutdown_timeout_s if self._drain else 0.0

    async def _stop_http(self) -> None:
        if self._runner is not None:
            # Closes the listener, then waits for in-flight requests (bounded by shutdown_timeout).
            if not self._drain:
                self._runner._shutdown_timeout = 0.0  # second signal: skip the drain
            await self._runner.cleanup()

    async def stop(self, drain: bool = True) -> None:
        """Stop accepting, drain in-flight work (if ``drain``), then release everything."""
        if self.state in (ServerState.STOPPING, ServerState.STOPPED):
            return
        self._drain = drain
        self.state = ServerState.STOPPING
        await self._unwind()
        self.state = ServerState.STOPPED

    async def _unwind(self) -> None:
        failures: list[BaseException] = []
        while self._stop_steps:
            name, step = self._stop_steps.pop()
            try:
                await step()
            except Exception as exc:  # keep tearing down; report everything at the end
                log.exception("stopping %s failed", name)
                failures.append(exc)
        if failures:
            raise ExceptionGroup("faas server did not stop cleanly", failures)  # type: ignore[type-var]
