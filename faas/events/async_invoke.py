"""The async invoke dispatcher: lease queued events, run them, ack, retry or drop.

Design notes: an Event invoke is acknowledged only after the store holds it, and
leaves the store only after it ran (or was given up on), so a crash at any point
leads to a re-run, never to silence (at-least-once). A function error consumes
one of the retry attempts, waiting ``retry_delays_s`` between them; a throttle
or a node-side fault puts the event back with a short backoff without consuming
an attempt, until the event is older than ``max_event_age_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time

from faas.catalog import FunctionCatalog
from faas.config import EventsConfig
from faas.errors import ApiError, ResourceNotFoundException
from faas.models import LATEST, InvocationRequest
from faas.observe.metrics import Metrics
from faas.pool.invoker import Invoker
from faas.store.base import EventQueue, QueuedEvent
from faas.versions import VersionCatalog

log = logging.getLogger(__name__)

_LEASE_MARGIN_S = 60.0
_THROTTLE_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class DispatcherState(enum.Enum):
    NEW = "new"  # constructed
    RUNNING = "running"  # leasing and running events
    STOPPED = "stopped"  # no longer leasing; leased events return at the next start


class AsyncInvokeDispatcher:
    """Runs queued Event invocations with bounded concurrency."""

    __slots__ = (
        "_catalog",
        "_config",
        "_invoker",
        "_loop_task",
        "_metrics",
        "_queue",
        "_running",
        "_state",
        "_throttle_counts",
        "_versions",
        "_wake",
    )

    def __init__(
        self,
        config: EventsConfig,
        queue: EventQueue,
        catalog: FunctionCatalog,
        versions: VersionCatalog,
        invoker: Invoker,
        metrics: Metrics,
    ) -> None:
        self._config = config
        self._queue = queue
        self._catalog = catalog
        self._versions = versions
        self._invoker = invoker
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._throttle_counts: dict[str, int] = {}
        self._state = DispatcherState.NEW

    async def start(self) -> None:
        if self._state is not DispatcherState.NEW:
            raise RuntimeError(f"dispatcher cannot start from {self._state.value}")
        await self._queue.release_all_leases()
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="async-dispatcher")
        self._state = DispatcherState.RUNNING

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop leasing; give running events ``drain_timeout_s`` to finish, then cancel them."""
        if self._state is not DispatcherState.RUNNING:
            self._state = DispatcherState.STOPPED
            return
        self._state = DispatcherState.STOPPED
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self._running:
            _, pending = await asyncio.wait(self._running, timeout=drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def submit(self, event: QueuedEvent) -> None:
        """Store ``event`` durably, then wake the dispatcher; returns once it is durable."""
        await self._queue.enqueue(event)
        self._metrics.async_events_received.labels(event.function_name).inc()
        self._wake.set()

    async def _dispatch_loop(self) -> None:
        while True:
            free = self._config.dispatch_concurrency - len(self._running)
            if free <= 0:
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                continue
            events = await self._queue.lease(free, self._lease_s(), time.time())
            for event in events:
                task = asyncio.create_task(self._run_guarded(event))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if len(events) < free:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._config.poll_interval_s)

    def _lease_s(self) -> float:
        return 900.0 + _LEASE_MARGIN_S

    async def _run_guarded(self, event: QueuedEvent) -> None:
        try:
            await self._run(event)
        except asyncio.CancelledError:
            raise
        except Exception:  # task boundary: the event stays leased and returns after restart
            log.exception("async event %s failed in the dispatcher", event.request_id)

    async def _run(self, event: QueuedEvent) -> None:
        now = time.time()
        age_s = now - event.enqueued_at
        if age_s > self._config.max_event_age_s:
            await self._drop(event, "EventAgeExceeded")
            return
        qualifier = None if event.qualifier == LATEST else event.qualifier
        try:
            resolved = self._versions.resolve(event.function_name, qualifier)
            function = resolved.config
        except ResourceNotFoundException:
            await self._drop(event, "FunctionDeleted")
            return
        self._metrics.async_event_age.labels(event.function_name).observe(age_s)
        request = InvocationRequest(
            request_id=event.request_id,
            function=function,
            payload=event.payload,
            invoked_arn=self._catalog.function_arn(function.name, qualifier),
            trace_id=event.trace_id,
            is_event=True,
            alias=resolved.alias,
        )
        try:
            result = await self._invoker.invoke(request)
        except ApiError as fault:  # throttled or node-side: retry without using an attempt
            throttles = self._throttle_counts.get(event.request_id, 0)
            self._throttle_counts[event.request_id] = throttles + 1
            delay = _THROTTLE_BACKOFF_S[min(throttles, len(_THROTTLE_BACKOFF_S) - 1)]
            log.info("async event %s deferred %.0fs: %s", event.request_id, delay, fault)
            await self._queue.retry(event.request_id, time.time() + delay, event.attempts)
            return
        self._throttle_counts.pop(event.request_id, None)
        if not result.is_error:
            await self._queue.ack(event.request_id)
            return
        attempts = event.attempts + 1
        if attempts > len(self._config.retry_delays_s):
            await self._drop(event, "RetriesExhausted")
            return
        delay = self._config.retry_delays_s[attempts - 1]
        await self._queue.retry(event.request_id, time.time() + delay, attempts)

    async def _drop(self, event: QueuedEvent, condition: str) -> None:
        log.warning("async event %s dropped: %s", event.request_id, condition)
        self._metrics.async_events_dropped.labels(event.function_name).inc()
        self._throttle_counts.pop(event.request_id, None)
        await self._queue.ack(event.request_id)
