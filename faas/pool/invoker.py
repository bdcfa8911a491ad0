"""Run one invocation end to end: acquire an environment, Init if cold, invoke, log, measure."""

from __future__ import annotations

import math
import time

from faas.config import PoolConfig
from faas.errors import (
    FUNCTION_ERROR_UNHANDLED,
    ExecutionEnvironmentError,
    InitFailed,
    TooManyRequestsException,
)
from faas.models import InvocationRequest, InvocationResult
from faas.observe.logs import InvocationLog, LogSink, end_line, report_line, start_line
from faas.observe.metrics import Metrics
from faas.pool.manager import PoolManager


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
        function = request.function
        try:
            lease = self._pool.acquire(function)
        except TooManyRequestsException:
            self._metrics.throttles.labels(function.name).inc()
            raise
        env = lease.environment
        log = InvocationLog(self._config.max_log_bytes_per_invoke)
        concurrent = self._metrics.concurrent_executions.labels(function.name)
        concurrent.inc()
        init_duration_ms: float | None = None
        try:
            if lease.is_cold:
                self._metrics.cold_starts.labels(function.name).inc()
                try:
                    await env.start(log, max(self._config.init_timeout_s, 0.1), request.request_id)
                except InitFailed as failure:
                    log.write_line(start_line(request.request_id, function.version))
                    return self._finish(request, log, failure.payload, failure.error_type,
                                        duration_ms=env.init_duration_ms, init_duration_ms=None,
                                        max_rss_kb=0, status="error")  # fmt: skip
                init_duration_ms = env.init_duration_ms
                self._metrics.init_duration.labels(function.name).observe(init_duration_ms / 1000)
            log.write_line(start_line(request.request_id, function.version))
            started = time.perf_counter()
            try:
                outcome = await env.invoke(request, log)
            except ExecutionEnvironmentError as failure:
                duration_ms = (time.perf_counter() - started) * 1000
                status = "timeout" if failure.error_type == "Sandbox.Timedout" else "error"
                error_type = None if status == "timeout" else failure.error_type
                return self._finish(request, log, failure.payload, error_type, duration_ms,
                                    init_duration_ms, 0, status)  # fmt: skip
            duration_ms = (time.perf_counter() - started) * 1000
            if outcome.is_error:
                return self._finish(request, log, outcome.payload, outcome.error_type or "Unknown",
                                    duration_ms, init_duration_ms, outcome.max_rss_kb, None,
                                    is_function_error=True)  # fmt: skip
            return self._finish(request, log, outcome.payload, None, duration_ms,
                                init_duration_ms, outcome.max_rss_kb, None)  # fmt: skip
        finally:
            concurrent.dec()
            self._pool.release(env)

    def _finish(
        self,
        request: InvocationRequest,
        log: InvocationLog,
        payload: bytes,
        error_type: str | None,
        duration_ms: float,
        init_duration_ms: float | None,
        max_rss_kb: int,
        status: str | None,
        is_function_error: bool = False,
    ) -> InvocationResult:
        function = request.function
        is_error = status is not None or is_function_error
        log.write_line(end_line(request.request_id))
        max_memory_mb = max(1, math.ceil(max_rss_kb / 1024)) if max_rss_kb else 0
        log.write_line(
            report_line(
                request.request_id,
                duration_ms,
                function.memory_mb,
                max_memory_mb,
                init_duration_ms,
                status,
                error_type if status == "error" else None,
            )
        )
        self._sink.emit(function.name, log.body())
        self._metrics.invocations.labels(function.name, function.version).inc()
        if is_error:
            self._metrics.errors.labels(function.name, function.version).inc()
        self._metrics.duration.labels(function.name).observe(duration_ms / 1000)
        return InvocationResult(
            request_id=request.request_id,
            payload=payload,
            executed_version=function.version,
            function_error=FUNCTION_ERROR_UNHANDLED if is_error else None,
            error_type=error_type,
            log_tail=log.tail() if request.wants_log_tail else b"",
            duration_ms=duration_ms,
            init_duration_ms=init_duration_ms,
            max_memory_mb=max_memory_mb,
        )
