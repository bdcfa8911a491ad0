"""The pool manager: which environment serves an invoke, and how many environments exist.

Design notes: environments are grouped by (function, version, revision), so a code or
configuration change starts a new group while the old one's busy environments finish
their invocations and are then stopped. Idle environments form stacks (provisioned
ones first): the most recently used one takes the next invocation, so a small hot set
serves steady load and the rest idle out after ``idle_timeout_s``.

An invoke first passes Lambda's concurrency books (reserved pools, the account limit:
refused at once with a 429). Then the warm path is one pop from a list. Only when no
environment is idle does it create one, and creating is bounded three ways: a token
bucket per function (the scaling rate), a node-wide number of Inits at once, and the
node's memory budget (the sum of MemorySize over live environments, making room by
stopping other functions' least recently used idle environments). An invoke that may
not create waits, up to ``scale_wait_s``, for whichever comes first: an environment
of its pool freed by another invocation (handed over directly), or room to create
one; then it is throttled.

Provisioned concurrency is a target per pool that a provisioner task keeps met:
environments that run Init before any invoke, are used before on-demand ones, never
idle out, and are replaced when they die.

Every live environment is in ``_live`` from creation until its stop completes, which
is what the memory books count and what the pool's books can be checked against.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import psutil

from faas.config import PoolConfig
from faas.errors import InitFailed, PlatformError, ServiceException, TooManyRequestsException
from faas.models import FunctionConfig
from faas.observe.logs import InvocationLog
from faas.pool.burst import TokenBucket
from faas.pool.concurrency_limits import REASON_ACCOUNT, REASON_RATE, ConcurrencyLimits
from faas.pool.environment import Environment, EnvironmentState, OptDirectory, StrayOutput
from faas.pool.keepalive import KeepAlivePolicy
from faas.runtime_api.server import RuntimeApiServer
from faas.sandbox.launcher import Launcher
from faas.sandbox.template import TemplateUnavailable

log = logging.getLogger(__name__)

_SETTLE_TASK = "settle-extensions"
_PROVISION_TASK = "provision"
_TEMPLATE_TASK = "snap-start-template"
_REHEARSAL_TIMEOUT_S = 2.0
_CAPACITY_SWEEP_MIN = 256  # queued capacity waiters (live or done) before the first sweep
INITIALIZATION_PROVISIONED = "provisioned-concurrency"

PoolKey = tuple[str, str, str]  # function name, version, revision id


class ManagerState(enum.Enum):
    NEW = "new"  # constructed
    RUNNING = "running"  # serving acquires
    STOPPING = "stopping"  # refusing acquires, shutting environments down
    STOPPED = "stopped"  # every environment gone


class Blocked(enum.Enum):
    """Why a new environment may not be created right now."""

    RATE = "rate"  # the function's scaling-rate bucket is empty
    INITS = "inits"  # the node runs as many Inits as it may
    MEMORY = "memory"  # the memory budget has no room, even after evictions


@dataclass(slots=True)
class FunctionPool:
    """The environments of one function configuration."""

    config: FunctionConfig
    idle: list[Environment] = field(default_factory=list)
    provisioned_idle: list[Environment] = field(default_factory=list)
    busy: set[Environment] = field(default_factory=set)
    provisioning: set[Environment] = field(default_factory=set)  # provisioned, in Init
    waiters: deque[asyncio.Future[Environment | None]] = field(default_factory=deque)
    provisioned_target: int = 0
    provision_failure: str | None = None
    is_retired: bool = False

    def provisioned_count(self) -> int:
        """Provisioned environments initialized (idle or busy) - what is allocated."""
        return len(self.provisioned_idle) + sum(1 for env in self.busy if env.is_provisioned)

    def is_empty(self) -> bool:
        return not (self.idle or self.provisioned_idle or self.busy or self.provisioning
                    or self.waiters or self.provisioned_target)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Lease:
    """An environment handed out for one invocation; ``is_cold`` if it still needs Init."""

    environment: Environment
    is_cold: bool
    is_spillover: bool = False  # the version has provisioned concurrency, all of it busy


@dataclass(frozen=True, slots=True)
class ProvisionedStatus:
    """How far one version's provisioned target is met."""

    requested: int
    allocated: int
    busy: int
    failure: str | None


class PoolManager:
    """Hands invocations to warm environments and keeps their number in check."""

    __slots__ = (
        "_background",
        "_buckets",
        "_capacity_sweep_at",
        "_capacity_waiters",
        "_code_directory",
        "_committed_mb",
        "_config",
        "_init_seconds",
        "_initializing",
        "_keep_alive",
        "_launcher",
        "_limits",
        "_live",
        "_max_inits",
        "_memory_budget_mb",
        "_opt_directory",
        "_pools",
        "_provision_wakeup",
        "_reaper",
        "_runtime_api",
        "_state",
        "_stopping",
        "_stray_output",
        "_templates",
        "_workers",
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
        self._limits = ConcurrencyLimits(config.account_concurrency)
        self._buckets: dict[str, TokenBucket] = {}
        self._live: set[Environment] = set()
        self._stopping: set[Environment] = set()
        self._initializing: set[Environment] = set()
        self._committed_mb = 0
        self._memory_budget_mb = config.memory_budget_mb or default_memory_budget_mb()
        self._max_inits = config.max_concurrent_inits or 4 * (os.cpu_count() or 1)
        self._capacity_waiters: deque[asyncio.Future[Environment | None]] = deque()
        self._capacity_sweep_at = _CAPACITY_SWEEP_MIN
        self._background: set[asyncio.Task[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._workers: asyncio.Task[None] | None = None
        self._provision_wakeup = asyncio.Event()
        self._keep_alive = KeepAlivePolicy(
            config.idle_timeout_s,
            config.keep_alive_policy == "adaptive",
            config.keep_alive_bin_s,
            config.keep_alive_bins,
        )
        self._init_seconds: dict[tuple[str, str], float] = {}  # recent Init time per version
        # SnapStart versions whose template is being started or runs.
        self._templates: set[tuple[str, str, str]] = set()
        self._state = ManagerState.NEW

    async def start(self) -> None:
        if self._state is not ManagerState.NEW:
            raise RuntimeError(f"pool manager cannot start from {self._state.value}")
        self._reaper = asyncio.create_task(self._reap_loop(), name="pool-idle-reaper")
        self._workers = asyncio.create_task(self._provision_loop(), name="pool-provisioner")
        self._state = ManagerState.RUNNING

    async def stop(self) -> None:
        """Shut every environment down (busy ones are killed after the grace)."""
        if self._state is not ManagerState.RUNNING:
            self._state = ManagerState.STOPPED
            return
        self._state = ManagerState.STOPPING
        for task in (self._reaper, self._workers):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for waiter in self._capacity_waiters:
            if not waiter.done():
                waiter.set_result(None)  # they see STOPPING and give up
        self._pools.clear()
        grace = self._config.shutdown_grace_s
        await asyncio.gather(*(env.stop(grace) for env in list(self._live)),
                             return_exceptions=True)  # fmt: skip
        for task in self._background:
            if task.get_name() in (_SETTLE_TASK, _PROVISION_TASK, _TEMPLATE_TASK):
                task.cancel()  # their environments are being stopped above
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._live.clear()
        self._state = ManagerState.STOPPED

    # --- what the node and the API read -------------------------------------------------

    @property
    def concurrent_executions(self) -> int:
        return self._limits.in_flight

    @property
    def limits(self) -> ConcurrencyLimits:
        return self._limits

    @property
    def memory_budget_mb(self) -> int:
        return self._memory_budget_mb

    @property
    def committed_memory_mb(self) -> int:
        return self._committed_mb

    @property
    def environment_count(self) -> int:
        return len(self._live)

    def environments_of(self, function_name: str) -> list[Environment]:
        return [env for env in self._live if env.config.name == function_name]

    def live_environments(self) -> frozenset[Environment]:
        """Every environment from creation until its stop completed (the pool's books)."""
        return frozenset(self._live)

    def books(self) -> dict[str, Any]:
        """The pool's books, as the operator endpoint shows them: every environment once."""
        environments = []
        for key, pool in self._pools.items():
            places = (("idle", pool.idle), ("provisioned_idle", pool.provisioned_idle),
                      ("busy", pool.busy), ("provisioning", pool.provisioning))  # fmt: skip
            for place, members in places:
                for env in members:
                    environments.append({
                        "id": env.env_id, "function": key[0], "version": key[1],
                        "place": place, "pid": env.pid, "memory_mb": env.config.memory_mb,
                        "provisioned": env.is_provisioned, "invocations": env.invocations,
                    })  # fmt: skip
        listed = {entry["id"] for entry in environments}
        for env in self._live:
            if env.env_id not in listed:
                place = "stopping" if env in self._stopping else "unlisted"
                environments.append({
                    "id": env.env_id, "function": env.config.name,
                    "version": env.config.version, "place": place, "pid": env.pid,
                    "memory_mb": env.config.memory_mb, "provisioned": env.is_provisioned,
                    "invocations": env.invocations,
                })  # fmt: skip
        return {
            "environments": environments,
            "live": len(self._live),
            "in_flight": self._limits.in_flight,
            "initializing": len(self._initializing),
            "waiting": sum(1 for waiter in self._capacity_waiters if not waiter.done()),
            "committed_memory_mb": self._committed_mb,
            "memory_budget_mb": self._memory_budget_mb,
            "max_concurrent_inits": self._max_inits,
        }

    def provisioned_status(self, function_name: str, version: str) -> ProvisionedStatus:
        requested = allocated = busy = 0
        failure = None
        for key, pool in self._pools.items():
            if key[0] == function_name and key[1] == version and not pool.is_retired:
                requested = max(requested, pool.provisioned_target)
                allocated += pool.provisioned_count()
                busy += sum(1 for env in pool.busy if env.is_provisioned)
                failure = failure or pool.provision_failure
        return ProvisionedStatus(requested, allocated, busy, failure)

    def provisioned_pools(self) -> Iterator[tuple[str, str, ProvisionedStatus]]:
        """(function, version, status) of every version with provisioned environments."""
        seen = {(k[0], k[1]) for k, p in self._pools.items() if p.provisioned_target
                or p.provisioned_count()}  # fmt: skip
        for name, version in sorted(seen):
            yield name, version, self.provisioned_status(name, version)

    # --- the control plane's levers -----------------------------------------------------

    def set_reserved(self, function_name: str, reserved: int | None) -> None:
        """Apply reserved concurrency; running invocations finish, new ones see the cap."""
        self._limits.set_reserved(function_name, reserved)

    def set_provisioned(self, function: FunctionConfig, count: int) -> None:
        """Keep ``count`` initialized environments of this published version (0 releases)."""
        pool = self._pool_of(function)
        pool.provisioned_target = count
        pool.provision_failure = None
        self._provision_wakeup.set()

    # --- the data plane ------------------------------------------------------------------

    def _pool_of(self, function: FunctionConfig) -> FunctionPool:
        key = (function.name, function.version, function.revision_id)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = FunctionPool(function)
        return pool

    async def acquire(self, function: FunctionConfig) -> Lease:
        """An idle warm environment for ``function``, or a new one that still needs Init.

        Raises:
            TooManyRequestsException: a concurrency limit is reached, or no environment
                could be had within ``scale_wait_s``.
            ServiceException: the node is shutting down.
        """
        if self._state is not ManagerState.RUNNING:
            raise ServiceException("The node is shutting down.")
        refusal = self._limits.refusal(function.name)
        if refusal is not None:
            raise refusal
        pool = self._pool_of(function)
        self._limits.take(function.name)
        if self._keep_alive.is_adaptive:
            self._keep_alive.invocation_started((function.name, function.version), time.monotonic())
        env = self._pop_idle(pool)
        if env is not None:
            pool.busy.add(env)
            return Lease(env, False, pool.provisioned_target > 0 and not env.is_provisioned)
        try:
            return await self._acquire_new(pool)
        except BaseException:
            self._limits.give_back(function.name)
            if self._keep_alive.is_adaptive:
                self._keep_alive.invocation_ended((function.name, function.version),
                                                  time.monotonic())  # fmt: skip
            raise

    @staticmethod
    def _pop_idle(pool: FunctionPool) -> Environment | None:
        for stack in (pool.provisioned_idle, pool.idle):
            while stack:
                env = stack.pop()
                if env.is_alive:
                    return env
        return None

    async def _acquire_new(self, pool: FunctionPool) -> Lease:
        deadline = time.monotonic() + self._config.scale_wait_s
        spillover = pool.provisioned_target > 0
        loop = asyncio.get_running_loop()
        while True:
            if len(pool.provisioning) > len(pool.waiters):
                # One is being initialized ahead (provisioned or pre-warmed): wait for it
                # rather than start a duplicate.
                created: Environment | Blocked = Blocked.INITS
            else:
                created = self._try_create(pool)
            if isinstance(created, Environment):
                return Lease(created, True, spillover)
            now = time.monotonic()
            wait_s = deadline - now
            if created is Blocked.RATE:
                bucket = self._bucket(pool.config.name, now)
                wait_s = min(wait_s, bucket.seconds_until_token(now) + 0.001)
            if wait_s <= 0 or self._state is not ManagerState.RUNNING:
                raise self._throttle(created, pool.config)
            waiter: asyncio.Future[Environment | None] = loop.create_future()
            pool.waiters.append(waiter)
            self._add_capacity_waiter(waiter)
            # A timer that ends the wait (with None, as a wake does), rather than wait_for's
            # extra future and callbacks: at high concurrency most invokes wait here.
            timer = loop.call_later(wait_s, _end_wait, waiter)
            try:
                handed = await waiter
            except BaseException:
                # Cancelled (the client went away) just as an environment was handed over.
                handed = waiter.result() if waiter.done() and not waiter.cancelled() else None
                if handed is not None:
                    pool.busy.discard(handed)
                    self._make_idle(pool, handed)
                raise
            finally:
                timer.cancel()
                self._forget_waiter(pool, waiter)
            if self._state is not ManagerState.RUNNING:
                if handed is not None:
                    self._stop_later(handed)
                raise ServiceException("The node is shutting down.")
            if handed is not None:
                return Lease(handed, False, spillover and not handed.is_provisioned)

    def _add_capacity_waiter(self, waiter: asyncio.Future[Environment | None]) -> None:
        """Queue ``waiter`` for room; waiters that were handed an environment meanwhile are
        left in the queue (removing each costs a scan) and swept out once it doubles."""
        waiters = self._capacity_waiters
        if len(waiters) >= self._capacity_sweep_at:
            self._capacity_waiters = waiters = deque(w for w in waiters if not w.done())
            self._capacity_sweep_at = max(_CAPACITY_SWEEP_MIN, 2 * len(waiters))
        waiters.append(waiter)

    def _throttle(self, blocked: Blocked, function: FunctionConfig) -> TooManyRequestsException:
        if blocked is Blocked.MEMORY:
            return TooManyRequestsException(
                f"The node's memory budget ({self._memory_budget_mb} MB) has no room for "
                f"another {function.memory_mb} MB environment.",
                reason=REASON_ACCOUNT,
            )
        return TooManyRequestsException("Rate Exceeded.", reason=REASON_RATE)

    def _bucket(self, function_name: str, now: float) -> TokenBucket:
        bucket = self._buckets.get(function_name)
        if bucket is None:
            bucket = self._buckets[function_name] = TokenBucket(
                self._config.burst_environments, self._config.burst_window_s, now
            )
        return bucket

    def _forget_waiter(
        self, pool: FunctionPool, waiter: asyncio.Future[Environment | None]
    ) -> None:
        if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
            return  # handed an environment: taken off the pool's queue by whoever did it
        with contextlib.suppress(ValueError):
            pool.waiters.remove(waiter)
        with contextlib.suppress(ValueError):
            self._capacity_waiters.remove(waiter)
        if not waiter.done():
            waiter.cancel()

    def _try_create(
        self, pool: FunctionPool, provisioned: bool = False, ahead: bool = False
    ) -> Environment | Blocked:
        """A new environment in ``pool`` needing Init, or why there can't be one: busy with
        the invoke that asked for it, or initializing ahead (``provisioned`` or ``ahead``)."""
        function = pool.config
        if len(self._initializing) >= self._max_inits:
            return Blocked.INITS
        now = time.monotonic()
        bucket = None if provisioned else self._bucket(function.name, now)
        if bucket is not None and bucket.seconds_until_token(now) > 0:
            return Blocked.RATE
        if not self._make_room(function.memory_mb, pool):
            return Blocked.MEMORY
        if bucket is not None:
            bucket.try_take(now)
        env = Environment(
            function,
            self._code_directory(function),
            self._launcher,
            self._runtime_api,
            self._opt_directory,
            self._stray_output,
        )
        env.on_exit = self._environment_exited
        if function.uses_snap_start:
            self._ensure_template(function)
        if provisioned:
            env.is_provisioned = True
            env.initialization_type = INITIALIZATION_PROVISIONED
        if provisioned or ahead:
            pool.provisioning.add(env)
        else:
            pool.busy.add(env)
        self._live.add(env)
        self._committed_mb += function.memory_mb
        self._initializing.add(env)
        return env

    def _make_room(self, memory_mb: int, pool: FunctionPool) -> bool:
        """Whether ``memory_mb`` more fits the budget once stops in progress complete;
        evicts other pools' least recently used idle environments to get there."""
        budget = self._memory_budget_mb
        if memory_mb > budget:
            return False
        if self._committed_mb + memory_mb <= budget:
            return True
        stopping_mb = sum(env.config.memory_mb for env in self._stopping)
        evictable = sorted(
            (env for other in self._pools.values() if other is not pool for env in other.idle),
            key=lambda env: env.last_used,
        )
        needed = self._committed_mb - stopping_mb + memory_mb - budget
        for env in evictable:
            if needed <= 0:
                break
            self._pools[_key_of(env)].idle.remove(env)
            self._stop_later(env)
            needed -= env.config.memory_mb
        return False  # room appears once the stops complete; the waiter is woken then

    async def initialize(self, env: Environment, log: InvocationLog, request_id: str) -> None:
        """Run a new environment's Init (counted against the node's Inits at once).

        Raises:
            InitFailed: as ``Environment.start``.
        """
        try:
            await env.start(log, max(self._config.init_timeout_s, 0.1), request_id)
        finally:
            self._init_done(env)
        key = (env.config.name, env.config.version)
        seen = self._init_seconds.get(key)
        measured = env.init_duration_ms / 1000
        self._init_seconds[key] = measured if seen is None else 0.7 * seen + 0.3 * measured

    def _init_done(self, env: Environment) -> None:
        if env in self._initializing:
            self._initializing.discard(env)
            self._wake_capacity_waiters()

    def _wake_capacity_waiters(self) -> None:
        """Room may have appeared: invokes waiting for it retry, and so does provisioning."""
        self._provision_wakeup.set()
        while self._capacity_waiters:
            waiter = self._capacity_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    def release(self, env: Environment) -> None:
        """Give an environment back after its invocation; dead or retired ones are stopped."""
        self._limits.give_back(env.config.name)
        self._init_done(env)  # a lease given back before its Init ran
        key = _key_of(env)
        if self._keep_alive.is_adaptive:
            self._keep_alive.invocation_ended(key[:2], time.monotonic())
        pool = self._pools.get(key)
        if pool is not None:
            pool.busy.discard(env)
        if pool is None or pool.is_retired or not env.is_alive or env.state is EnvironmentState.NEW:
            self._stop_later(env)
            self._drop_if_unused(key)
            return
        if env.has_extensions:
            # Reusable only once every extension asked for its next event again.
            self._track(asyncio.create_task(self._settle_then_idle(env, key), name=_SETTLE_TASK))
            pool.busy.add(env)
            return
        self._make_idle(pool, env)

    def _make_idle(self, pool: FunctionPool, env: Environment) -> None:
        env.last_used = time.monotonic()
        while pool.waiters:
            waiter = pool.waiters.popleft()
            if not waiter.done():
                pool.busy.add(env)  # handed straight to an invoke waiting for this pool
                waiter.set_result(env)
                return
        if env.is_provisioned:
            if pool.provisioned_count() < pool.provisioned_target:
                pool.provisioned_idle.append(env)
                return
            env.is_provisioned = False  # the target shrank: it becomes an on-demand one
        pool.idle.append(env)
        if self._capacity_waiters:
            self._wake_capacity_waiters()  # an idle environment can now be evicted

    async def _settle_then_idle(self, env: Environment, key: PoolKey) -> None:
        is_settled = await env.settle()
        pool = self._pools.get(key)
        if pool is not None:
            pool.busy.discard(env)
        if not is_settled or pool is None or pool.is_retired or not env.is_alive:
            self._stop_later(env)
            return
        self._make_idle(pool, env)

    def retire(self, function_name: str, version: str | None = None) -> None:
        """Retire the environments of one version of a function (its code or configuration
        changed, or it was deleted), or of every version when ``version`` is None."""
        for key, pool in list(self._pools.items()):
            if key[0] != function_name or (version is not None and key[1] != version):
                continue
            pool.is_retired = True
            pool.provisioned_target = 0
            if key in self._templates:
                self._templates.discard(key)
                self._track(asyncio.create_task(self._launcher.stop_template(pool.config)))
            for env in (*pool.idle, *pool.provisioned_idle, *pool.provisioning):
                self._stop_later(env)
            pool.idle.clear()
            pool.provisioned_idle.clear()
            pool.provisioning.clear()
            if not pool.busy and not pool.waiters:
                # Invokes waiting for room keep it listed: they still run the old
                # configuration they resolved, in an environment the books can see.
                del self._pools[key]

    def forget_function(self, function_name: str) -> None:
        """A deleted function: its environments retire and its scaling books go."""
        self.retire(function_name)
        self._keep_alive.forget(function_name)
        for key in [key for key in self._init_seconds if key[0] == function_name]:
            del self._init_seconds[key]
        self._buckets.pop(function_name, None)
        self._limits.set_reserved(function_name, None)

    def _environment_exited(self, env: Environment) -> None:
        """The runtime process ended: an idle one is forgotten (or replaced if provisioned)."""
        if env in self._stopping or env not in self._live:
            return
        pool = self._pools.get(_key_of(env))
        if pool is None:
            self._stop_later(env)
            return
        for stack in (pool.idle, pool.provisioned_idle):
            if env in stack:
                stack.remove(env)
                self._stop_later(env)
                if env.is_provisioned:
                    self._provision_wakeup.set()
                return
        # Busy or initializing: its invocation or its Init reports the failure and
        # release() stops it.

    def _stop_later(self, env: Environment) -> None:
        if env in self._stopping:
            return
        self._stopping.add(env)
        self._track(asyncio.create_task(self._stop(env)))

    async def _stop(self, env: Environment) -> None:
        try:
            await env.stop(self._config.shutdown_grace_s)
        finally:
            self._stopping.discard(env)
            if env in self._live:
                self._live.discard(env)
                self._committed_mb -= env.config.memory_mb
            self._wake_capacity_waiters()

    def _drop_if_unused(self, key: PoolKey) -> None:
        """Forget an empty pool, unless the adaptive keep-alive will pre-warm it."""
        pool = self._pools.get(key)
        if pool is not None and pool.is_empty() and self._prewarm_due(key) is None:
            del self._pools[key]

    def _prewarm_due(self, key: PoolKey) -> tuple[float, float] | None:
        """(from, until): when the adaptive keep-alive wants an environment of ``key``
        ready, if it released the last one at once and that window has not passed."""
        window = self._keep_alive.window(key[:2])
        if not window.releases_at_once:
            return None
        last_end = self._keep_alive.last_end(key[:2])
        if last_end is None:
            return None
        # Started early enough for its Init (as long as the last ones took) to be over.
        lead_s = 2 * self._init_seconds.get(key[:2], 0.0)
        keep_from = last_end + max(0.0, window.prewarm_s - lead_s)
        keep_until = last_end + window.prewarm_s + window.keep_alive_s
        return (keep_from, keep_until) if time.monotonic() < keep_until else None

    def _track(self, task: asyncio.Task[None]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- provisioned concurrency ---------------------------------------------------------

    async def _provision_loop(self) -> None:
        while True:
            await self._provision_wakeup.wait()
            self._provision_wakeup.clear()
            self._reconcile_provisioned()

    def _reconcile_provisioned(self) -> None:
        for pool in list(self._pools.values()):
            if pool.is_retired:
                continue
            have = pool.provisioned_count() + len(pool.provisioning)
            surplus = have - pool.provisioned_target
            while surplus > 0 and pool.provisioned_idle:
                env = pool.provisioned_idle.pop()
                env.is_provisioned = False  # kept warm as an on-demand environment
                pool.idle.append(env)
                surplus -= 1
            for env in pool.busy:
                if surplus <= 0:
                    break
                if env.is_provisioned:
                    env.is_provisioned = False
                    surplus -= 1
            if pool.provision_failure is not None:
                continue
            for _ in range(pool.provisioned_target - have):
                created = self._try_create(pool, provisioned=True)
                if not isinstance(created, Environment):
                    if created is Blocked.MEMORY and not self._stopping:
                        pool.provision_failure = (
                            f"INSUFFICIENT_MEMORY: the node's memory budget "
                            f"({self._memory_budget_mb} MB) has no room for the requested "
                            "provisioned environments"
                        )
                    # Otherwise retried when Inits or stops complete.
                    break
                self._track(asyncio.create_task(self._provision(pool, created),
                                                name=_PROVISION_TASK))  # fmt: skip
            self._drop_if_unused(_key_of_pool(pool))

    async def _provision(self, pool: FunctionPool, env: Environment) -> None:
        """Init ahead of any invoke: a provisioned environment, or a pre-warmed one."""
        init_log = InvocationLog(self._config.max_log_bytes_per_invoke)
        request_id = env.env_id
        try:
            await self.initialize(env, init_log, request_id)
            await env.rehearse(_REHEARSAL_TIMEOUT_S)
        except InitFailed as failure:
            if env.is_provisioned:
                pool.provision_failure = _init_failure_reason(failure)
        except Exception as exc:  # a platform failure: report it on the config
            log.exception("initializing an environment of %s ahead failed", pool.config.name)
            if env.is_provisioned:
                pool.provision_failure = f"FUNCTION_ERROR_INIT_FAILURE: {exc}"
        finally:
            pool.provisioning.discard(env)
            if self._stray_output is not None and init_log.body():
                self._stray_output(pool.config.name, init_log.body())
        if env.state is EnvironmentState.IDLE and not pool.is_retired:
            self._make_idle(pool, env)
        else:
            self._stop_later(env)
        self._provision_wakeup.set()

    # --- SnapStart ------------------------------------------------------------------------

    def _ensure_template(self, function: FunctionConfig) -> None:
        """Start the version's SnapStart template once; its later environments fork from it."""
        key = (function.name, function.version, function.revision_id)
        if key in self._templates or self._state is not ManagerState.RUNNING:
            return
        self._templates.add(key)
        self._track(asyncio.create_task(self._start_template(function), name=_TEMPLATE_TASK))

    async def _start_template(self, function: FunctionConfig) -> None:
        stray = self._stray_output
        merged = await self._opt_directory(function) if self._opt_directory is not None else None
        try:
            await self._launcher.start_template(
                function,
                self._code_directory(function),
                str(merged) if merged is not None else None,
                log_output=(lambda data: stray(function.name, data)) if stray else None,
                init_timeout_s=max(self._config.init_timeout_s, 0.1),
            )
        except (TemplateUnavailable, InitFailed, PlatformError) as exc:
            # Environments of this version keep starting the ordinary way.
            log.warning("SnapStart is not used for %s:%s: %s", function.name, function.version,
                        getattr(exc, "error_type", None) or exc)  # fmt: skip
        else:
            log.info("SnapStart template of %s:%s is ready", function.name, function.version)

    # --- keep-alive -----------------------------------------------------------------------

    async def _reap_loop(self) -> None:
        interval = max(0.05, min(30.0, self._config.idle_timeout_s / 4))
        if self._keep_alive.is_adaptive:
            interval = max(0.02, min(interval, self._config.keep_alive_bin_s / 4))
        while True:
            await asyncio.sleep(interval)
            self.reap_idle(time.monotonic())

    def reap_idle(self, now: float) -> int:
        """Stop on-demand environments past their keep-alive, and (adaptive keep-alive)
        pre-warm one where the next invoke is expected; returns how many were stopped."""
        reaped = 0
        for key, pool in list(self._pools.items()):
            due = self._prewarm_due(key)
            if due is not None:
                # Released at once; wanted again from the pre-warm point to the window's end.
                keep_from = due[0]
                keep = [
                    env for env in pool.idle
                    if env.is_alive and (now >= keep_from or env.last_used >= keep_from)
                ]  # fmt: skip
                if now >= keep_from and not (
                    keep or pool.busy or pool.provisioning or pool.is_retired
                ):
                    self._prewarm(pool)
            else:
                cutoff = now - self._keep_alive.window(key[:2]).keep_alive_s
                keep = [env for env in pool.idle if env.last_used > cutoff and env.is_alive]
            for env in pool.idle:
                if env not in keep:
                    self._stop_later(env)
                    reaped += 1
            pool.idle = keep
            self._drop_if_unused(key)
        for name, bucket in list(self._buckets.items()):
            if bucket.is_full(now):
                del self._buckets[name]
        return reaped

    def _prewarm(self, pool: FunctionPool) -> None:
        """Start one environment of ``pool`` ahead of the invoke the policy expects."""
        created = self._try_create(pool, ahead=True)
        log.debug("pre-warming %s:%s: %s", pool.config.name, pool.config.version, created)
        if isinstance(created, Environment):
            self._track(asyncio.create_task(self._provision(pool, created), name=_PROVISION_TASK))


def _end_wait(waiter: asyncio.Future[Environment | None]) -> None:
    """The wait for an environment ran out: the waiter sees None, as after a wake."""
    if not waiter.done():
        waiter.set_result(None)


def _key_of(env: Environment) -> PoolKey:
    return (env.config.name, env.config.version, env.config.revision_id)


def _key_of_pool(pool: FunctionPool) -> PoolKey:
    return (pool.config.name, pool.config.version, pool.config.revision_id)


def _init_failure_reason(failure: InitFailed) -> str:
    try:
        detail = orjson.loads(failure.payload)
        message = detail.get("errorMessage", "") if isinstance(detail, dict) else ""
    except ValueError:
        message = ""
    return f"FUNCTION_ERROR_INIT_FAILURE: {failure.error_type}: {message}".rstrip(": ")


def default_memory_budget_mb() -> int:
    """Three quarters of the host's RAM: the rest is for the node, the OS and page cache."""
    total_bytes: int = psutil.virtual_memory().total
    return math.floor(total_bytes / (1024 * 1024) * 0.75)
