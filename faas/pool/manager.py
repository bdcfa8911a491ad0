"""The pool manager: warm environments per function configuration, LIFO reuse, idle reaping.

Design notes: environments are grouped by (function, version, revision), so a
code or configuration change starts a new group while the old one's busy
environments finish their invocations and are then stopped. Idle environments
form a stack: the most recently used one takes the next invocation, so a small
hot set serves steady load and the rest idle out after ``idle_timeout_s``.
Concurrency is the number of environments busy or initialising; past the
account limit an acquire is throttled rather than queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from faas.config import PoolConfig
from faas.errors import ServiceException, TooManyRequestsException
from faas.models import FunctionConfig
from faas.pool.environment import Environment, OptDirectory, StrayOutput
from faas.runtime_api.server import RuntimeApiServer
from faas.sandbox.launcher import Launcher

log = logging.getLogger(__name__)

_SETTLE_TASK = "settle-extensions"

PoolKey = tuple[str, str, str]  # function name, version, revision id


class ManagerState(enum.Enum):
    NEW = "new"  # constructed
    RUNNING = "running"  # serving acquires
    STOPPING = "stopping"  # refusing acquires, shutting environments down
    STOPPED = "stopped"  # every environment gone


@dataclass(slots=True)
class FunctionPool:
    """The environments of one function configuration."""

    config: FunctionConfig
    idle: list[Environment]
    busy: set[Environment]
    is_retired: bool = False


@dataclass(frozen=True, slots=True)
class Lease:
    """An environment handed out for one invocation; ``is_cold`` if it still needs Init."""

    environment: Environment
    is_cold: bool


class PoolManager:
    """Hands invocations to warm environments and keeps their number in check."""

    __slots__ = (
        "_background",
        "_code_directory",
        "_config",
        "_in_flight",
        "_launcher",
        "_opt_directory",
        "_pools",
        "_reaper",
        "_runtime_api",
        "_state",
        "_stray_output",
    )

    def __init__(
        self,
        config: PoolConfig,
        launcher: Launcher,
        runtime_api: RuntimeApiServer,
        code_directory: Callable[[FunctionConfig], str],
        opt_directory: OptDirectory | None = None,
        stray_output: StrayOutput | None = None,
    ) -> None:
        self._opt_directory = opt_directory
        self._stray_output = stray_output
        self._config = config
        self._launcher = launcher
        self._runtime_api = runtime_api
        self._code_directory = code_directory
        self._pools: dict[PoolKey, FunctionPool] = {}
        self._in_flight = 0
        self._background: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._state = ManagerState.NEW

    async def start(self) -> None:
        if self._state is not ManagerState.NEW:
            raise RuntimeError(f"pool manager cannot start from {self._state.value}")
        self._reaper = asyncio.create_task(self._reap_loop(), name="pool-idle-reaper")
        self._state = ManagerState.RUNNING

    async def stop(self) -> None:
        """Shut every environment down (busy ones are killed after the grace)."""
        if self._state is not ManagerState.RUNNING:
            self._state = ManagerState.STOPPED
            return
        self._state = ManagerState.STOPPING
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        environments = [env for pool in self._pools.values() for env in (*pool.idle, *pool.busy)]
        self._pools.clear()
        grace = self._config.shutdown_grace_s
        await asyncio.gather(*(env.stop(grace) for env in environments), return_exceptions=True)
        for task in self._background:
            if task.get_name() == _SETTLE_TASK:
                task.cancel()  # its environment is being stopped above
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._state = ManagerState.STOPPED

    @property
    def concurrent_executions(self) -> int:
        return self._in_flight

    @property
    def environment_count(self) -> int:
        return sum(len(pool.idle) + len(pool.busy) for pool in self._pools.values())

    def environments_of(self, function_name: str) -> list[Environment]:
        return [
            env
            for key, pool in self._pools.items()
            if key[0] == function_name
            for env in (*pool.idle, *pool.busy)
        ]

    def acquire(self, function: FunctionConfig) -> Lease:
        """An idle warm environment for ``function``, or a new one that still needs Init.

        Raises:
            TooManyRequestsException: the account concurrency limit is reached.
            ServiceException: the node is shutting down.
        """
        if self._state is not ManagerState.RUNNING:
            raise ServiceException("The node is shutting down.")
        if self._in_flight >= self._config.account_concurrency:
            raise TooManyRequestsException(
                "Rate Exceeded.", reason="ConcurrentInvocationLimitExceeded"
            )
        key = (function.name, function.version, function.revision_id)
        pool = self._pools.get(key)
        if pool is None:
            pool = FunctionPool(function, [], set())
            self._pools[key] = pool
        self._in_flight += 1
        while pool.idle:
            env = pool.idle.pop()
            if env.is_alive:
                pool.busy.add(env)
                return Lease(env, is_cold=False)
            self._stop_later(env)
        env = Environment(
            function,
            self._code_directory(function),
            self._launcher,
            self._runtime_api,
            self._opt_directory,
            self._stray_output,
        )
        pool.busy.add(env)
        return Lease(env, is_cold=True)

    def release(self, env: Environment) -> None:
        """Give an environment back after its invocation; dead or retired ones are stopped."""
        self._in_flight -= 1
        key = (env.config.name, env.config.version, env.config.revision_id)
        pool = self._pools.get(key)
        if pool is not None:
            pool.busy.discard(env)
        if pool is None or pool.is_retired or not env.is_alive:
            self._stop_later(env)
            if pool is not None and pool.is_retired and not pool.busy:
                self._pools.pop(key, None)
            return
        if env.has_extensions:
            # Reusable only once every extension asked for its next event again.
            self._track(asyncio.create_task(self._settle_then_idle(env, key), name=_SETTLE_TASK))
            pool.busy.add(env)
            return
        env.last_used = time.monotonic()
        pool.idle.append(env)

    async def _settle_then_idle(self, env: Environment, key: PoolKey) -> None:
        is_settled = await env.settle()
        pool = self._pools.get(key)
        if pool is not None:
            pool.busy.discard(env)
        if not is_settled or pool is None or pool.is_retired or not env.is_alive:
            self._stop_later(env)
            return
        env.last_used = time.monotonic()
        pool.idle.append(env)

    def retire(self, function_name: str, version: str | None = None) -> None:
        """Retire the environments of one version of a function (its code or configuration
        changed, or it was deleted), or of every version when ``version`` is None."""
        for key, pool in list(self._pools.items()):
            if key[0] != function_name or (version is not None and key[1] != version):
                continue
            pool.is_retired = True
            for env in pool.idle:
                self._stop_later(env)
            pool.idle.clear()
            if not pool.busy:
                del self._pools[key]

    def _stop_later(self, env: Environment) -> None:
        self._track(asyncio.create_task(env.stop(self._config.shutdown_grace_s)))

    def _track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reap_loop(self) -> None:
        interval = max(0.05, min(30.0, self._config.idle_timeout_s / 4))
        while True:
            await asyncio.sleep(interval)
            self.reap_idle(time.monotonic())

    def reap_idle(self, now: float) -> int:
        """Stop environments idle for longer than the keep-alive; returns how many."""
        cutoff = now - self._config.idle_timeout_s
        reaped = 0
        for key, pool in list(self._pools.items()):
            keep = [env for env in pool.idle if env.last_used > cutoff and env.is_alive]
            for env in pool.idle:
                if env not in keep:
                    self._stop_later(env)
                    reaped += 1
            pool.idle = keep
            if not pool.idle and not pool.busy:
                del self._pools[key]
        return reaped
