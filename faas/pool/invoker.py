"""Run one invocation end to end: acquire an environment, Init if cold, invoke, log, measure."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from faas.config import PoolConfig
from faas.errors import (
    FUNCTION_ERROR_UNHANDLED,
    SANDBOX_TIMEDOUT,
    ExecutionEnvironmentError,
    InitFailed,
    TooManyRequestsException,
)
from faas.models import InvocationRequest, InvocationResult
from faas.observe.logs import InvocationLog, LogSink, end_line, report_line, start_line
from faas.observe.metrics import Metrics
from faas.pool.environment import Environment
from faas.pool.manager import PoolManager


@dataclass(frozen=True, slots=True)
class _Ending:
    """How an invocation ended, before it becomes an InvocationResult."""

    payload: bytes
    duration_ms: float
    init_duration_ms: float | None = None
    max_rss_kb: int = 0
    error_type: str | None = None
    status: str | None = None  # REPORT's Status: "error" or "timeout" for platform failures
    is_function_error: bool = False


class Invoker:
    """The one way an invocation runs, for sync invokes and the event dispatcher alike."""

    __slots__ = ("_config", "_metrics", "_pool", "_sink")

    def __init__(
        self, config: PoolConfig, pool: PoolManager, sink: LogSink, metrics: Metrics
    ) -> None:
        self._config = config
        self._pool = pool
        self._sink = sink
        self._metrics = metrics

    async def invoke(self, request: InvocationRequest) -> InvocationResult:
        """Run ``request`` and return its result; function failures are results, not raises.

        Raises:
            TooManyRequestsException: no concurrency is left for a new invocation.
            ServiceException: the node is shutting down.
        """
        entered = time.perf_counter()
        function = request.function
        try:
            lease = await self._pool.acquire(function)
        except TooManyRequestsException as throttle:
            self._metrics.throttles.labels(function.name, throttle.reason).inc()
            raise
        env = lease.environment
        if lease.is_spillover:
            self._metrics.provisioned_spillover.labels(function.name, function.version).inc()
        timings = [("schedule", (time.perf_counter() - entered) * 1000)]
        log = InvocationLog(self._config.max_log_bytes_per_invoke)
        try:
            ending = await self._run(request, env, log, lease.is_cold)
            if lease.is_cold:
                timings.extend(env.init_timings.items())
            timings.append(("invoke", ending.duration_ms))
            return self._finish(request, log, ending, tuple(timings))
        finally:
            self._pool.release(env)

    async def _run(
        self, request: InvocationRequest, env: Environment, log: InvocationLog, is_cold: bool
    ) -> _Ending:
        function = request.function
        init_duration_ms: float | None = None
        if is_cold:
            self._metrics.cold_starts.labels(function.name).inc()
            try:
                await self._pool.initialize(env, log, request.request_id)
            except InitFailed as failure:
                log.write_line(start_line(request.request_id, function.version))
                return _Ending(failure.payload, env.init_duration_ms,
                               error_type=failure.error_type, status="error")  # fmt: skip
            init_duration_ms = env.init_duration_ms
            self._metrics.init_duration.labels(function.name).observe(init_duration_ms / 1000)
        log.write_line(start_line(request.request_id, function.version))
        started = time.perf_counter()
        try:
            outcome = await env.invoke(request, log)
        except ExecutionEnvironmentError as failure:
            duration_ms = (time.perf_counter() - started) * 1000
            if failure.error_type == SANDBOX_TIMEDOUT:
                return _Ending(failure.payload, duration_ms, init_duration_ms, status="timeout")
            return _Ending(failure.payload, duration_ms, init_duration_ms,
                           error_type=failure.error_type, status="error")  # fmt: skip
        duration_ms = (time.perf_counter() - started) * 1000
        return _Ending(
            outcome.payload,
            duration_ms,
            init_duration_ms,
            outcome.max_rss_kb,
            error_type=(outcome.error_type or "Unknown") if outcome.is_error else None,
            is_function_error=outcome.is_error,
        )

    def _finish(
        self,
        request: InvocationRequest,
        log: InvocationLog,
        ending: _Ending,
        timings: tuple[tuple[str, float], ...],
    ) -> InvocationResult:
        function = request.function
        is_error = ending.status is not None or ending.is_function_error
        max_memory_mb = max(1, math.ceil(ending.max_rss_kb / 1024)) if ending.max_rss_kb else 0
        report = report_line(
            request.request_id,
            ending.duration_ms,
            function.memory_mb,
            max_memory_mb,
            ending.init_duration_ms,
            ending.status,
            ending.error_type if ending.status == "error" else None,
        )
        log.write_line(f"{end_line(request.request_id)}\n{report}")
        self._sink.emit(function.name, log.body())
        metrics = self._metrics
        labels = (function.name, function.version, request.alias or "")
        metrics.child(metrics.invocations, *labels).inc()
        metrics.versions.record(function.name, function.version, is_error)
        if is_error:
            metrics.child(metrics.errors, *labels).inc()
        metrics.child(metrics.duration, function.name).observe(ending.duration_ms / 1000)
        return InvocationResult(
            request_id=request.request_id,
            payload=ending.payload,
            executed_version=function.version,
            function_error=FUNCTION_ERROR_UNHANDLED if is_error else None,
            error_type=ending.error_type,
            log_tail=log.tail() if request.wants_log_tail else b"",
            duration_ms=ending.duration_ms,
            init_duration_ms=ending.init_duration_ms,
            max_memory_mb=max_memory_mb,
            timings=timings,
        )
