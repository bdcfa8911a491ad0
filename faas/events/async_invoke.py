"""The async invoke dispatcher: lease queued events, run them, then ack, retry or give up.

Design notes: an Event invoke is acknowledged only after the store holds it, and
leaves the store only after it ran (or was given up on and handed to its
dead-letter target and destinations), so a crash at any point leads to a re-run,
never to silence (at-least-once). Each event is governed by the policy of the
qualifier it was invoked with (``InvokeConfigs.policy_for``):

- a function error uses one of ``MaximumRetryAttempts`` (default 2); retry *n*
  waits ``retry_delays_s[n-1]`` (the last delay repeats), 60 s then 120 s by default;
  an empty ``retry_delays_s`` turns retries off on the whole node;
- a throttle or a node-side fault returns the event to the queue without using an
  attempt, after ``throttle_backoff_min_s * 2**k`` capped at ``throttle_backoff_max_s``
  (k = throttles since it last ran, kept in the queue row so restarts keep the
  backoff);
- an event older than its maximum age (``MaximumEventAgeInSeconds``, default
  21,600 s, never more than the node's ``max_event_age_s``) is given up with
  ``EventAgeExceeded``; a retry that would come after that age is given up at once;
- with reserved concurrency 0 an event is given up at once with ``RetriesExhausted``
  (no retries, as on Lambda).

At most ``dispatch_concurrency`` events run at once, so the dispatcher, which
shares the event loop (and on a small node the core) with the front door, cannot
crowd out accepts. One lease takes as many events as there are free slots: while
a lease is with the store, more slots free up and the next lease takes them all,
so under load the store sees one lease per batch of events, not one per event
(and the embedded store writes the acks of a batch in one transaction too). A
lease that fails (the store is unreachable or broken) is logged and tried again
after a backoff; the loop never ends but with ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable

from faas.catalog import FunctionCatalog
from faas.config import EventsConfig
from faas.errors import ApiError, PlatformError, ResourceNotFoundException
from faas.events.intake import EventIntake
from faas.events.invoke_configs import AsyncPolicy, InvokeConfigs
from faas.events.outcomes import STATUS_THROTTLED, Condition, Outcome, OutcomeDelivery
from faas.models import LATEST, FunctionConfig, InvocationRequest, InvocationResult
from faas.observe.metrics import Metrics
from faas.pool.invoker import Invoker
from faas.store.base import EventQueue, QueuedEvent
from faas.versions import VersionCatalog

log = logging.getLogger(__name__)

_LEASE_MARGIN_S = 60.0
_MAX_TIMEOUT_S = 900.0
# Waits after a failed lease: doubling from the first to the last.
_LEASE_RETRY_FIRST_S = 0.05
_LEASE_RETRY_LAST_S = 5.0
# Dead-letter ErrorMessage of an event given up without running.
_EXPIRED = "The event expired before the function could run it (throttled or queued too long)."
_RESERVED_0 = (
    "The function's reserved concurrency is 0 (ReservedFunctionConcurrentInvocationLimitExceeded)."
)


class DispatcherState(enum.Enum):
    NEW = "new"  # constructed
    RUNNING = "running"  # leasing and running events
    STOPPED = "stopped"  # no longer leasing; leased events return at the next start


class AsyncInvokeDispatcher:
    """Runs queued Event invocations with bounded concurrency."""

    __slots__ = (
        "_catalog",
        "_config",
        "_intake",
        "_invoker",
        "_loop_task",
        "_metrics",
        "_outcomes",
        "_policies",
        "_queue",
        "_reserved_of",
        "_running",
        "_slot_freed",
        "_state",
        "_versions",
    )

    def __init__(
        self,
        config: EventsConfig,
        *,
        queue: EventQueue,
        intake: EventIntake,
        catalog: FunctionCatalog,
        versions: VersionCatalog,
        invoker: Invoker,
        metrics: Metrics,
        policies: InvokeConfigs,
        outcomes: OutcomeDelivery,
        reserved_of: Callable[[str], int | None],
    ) -> None:
        self._config = config
        self._queue = queue
        self._intake = intake
        self._catalog = catalog
        self._versions = versions
        self._invoker = invoker
        self._metrics = metrics
        self._policies = policies
        self._outcomes = outcomes
        self._reserved_of = reserved_of  # a function's reserved concurrency, if it has one
        self._running: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()  # an event finished since the loop last looked
        self._loop_task: asyncio.Task[None] | None = None
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

    def submit(self, event: QueuedEvent) -> Awaitable[None]:
        """Store ``event`` durably, then wake the dispatcher; done once it is durable."""
        return self._intake.submit(event)

    async def _dispatch_loop(self) -> None:
        failures = 0  # leases failed in a row
        while True:
            free = self._config.dispatch_concurrency - len(self._running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._intake.arm()
            try:
                events = await self._queue.lease(
                    free, _MAX_TIMEOUT_S + _LEASE_MARGIN_S, time.time()
                )
            except Exception:  # a broken store must not end the loop: log, back off, retry
                failures += 1
                delay_s = min(_LEASE_RETRY_LAST_S, _LEASE_RETRY_FIRST_S * 2 ** min(failures, 16))
                log.exception("leasing async events failed (%d in a row); next try in %.2fs",
                              failures, delay_s)  # fmt: skip
                await asyncio.sleep(delay_s)
                continue
            failures = 0
            for event in events:
                task = asyncio.create_task(self._run_guarded(event))
                self._running.add(task)
                task.add_done_callback(self._finished)
            if len(events) < free:
                await self._intake.wait_for_submission(self._config.poll_interval_s)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._slot_freed.set()

    async def _run_guarded(self, event: QueuedEvent) -> None:
        try:
            await self._run(event)
        except asyncio.CancelledError:
            raise
        except Exception:  # task boundary: the event stays leased and returns after restart
            log.exception("async event %s failed in the dispatcher", event.request_id)

    async def _run(self, event: QueuedEvent) -> None:
        now = time.time()
        qualifier = None if event.qualifier == LATEST else event.qualifier
        try:
            resolved = self._versions.resolve(event.function_name, qualifier)
        except ResourceNotFoundException:
            await self._outcomes.discard(event, "FunctionDeleted")
            return
        function = resolved.config
        policy = self._policies.policy_for(function.name, event.qualifier, function.version)
        expires_at = event.enqueued_at + min(policy.event_age_s, self._config.max_event_age_s)
        if now >= expires_at:
            outcome = self._unanswered(Condition.EVENT_AGE_EXCEEDED, function, event, _EXPIRED)
            await self._outcomes.finish(event, policy, outcome, now)
            return
        if self._reserved_of(function.name) == 0:
            outcome = self._unanswered(Condition.RETRIES_EXHAUSTED, function, event, _RESERVED_0)
            await self._outcomes.finish(event, policy, outcome, now)
            return
        metrics = self._metrics
        metrics.child(metrics.async_event_age, event.function_name).observe(now - event.enqueued_at)
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
        except (ApiError, PlatformError) as fault:  # throttled or node-side: not an attempt
            await self._defer(event, fault, expires_at)
            return
        await self._settle(event, policy, function, result, expires_at)

    async def _settle(
        self,
        event: QueuedEvent,
        policy: AsyncPolicy,
        function: FunctionConfig,
        result: InvocationResult,
        expires_at: float,
    ) -> None:
        """After a run: done, retry after the next delay, or give up."""
        attempts = event.attempts + 1
        now = time.time()
        if not result.is_error:
            outcome = Outcome(Condition.SUCCESS, function, attempts, result)
            await self._outcomes.finish(event, policy, outcome, now)
            return
        if attempts > policy.retry_attempts or not self._config.retry_delays_s:
            outcome = Outcome(Condition.RETRIES_EXHAUSTED, function, attempts, result)
            await self._outcomes.finish(event, policy, outcome, now)
            return
        retry_at = now + self._retry_delay_s(attempts)
        if retry_at >= expires_at:
            outcome = Outcome(Condition.EVENT_AGE_EXCEEDED, function, attempts, result)
            await self._outcomes.finish(event, policy, outcome, now)
            return
        await self._queue.retry(event.request_id, retry_at, attempts, throttles=0)

    def _retry_delay_s(self, attempts: int) -> float:
        """The wait before retry number ``attempts`` (1-based); the last delay repeats."""
        delays = self._config.retry_delays_s
        return delays[min(attempts, len(delays)) - 1]

    def _throttle_delay_s(self, throttles: int) -> float:
        """Exponential backoff after ``throttles`` earlier throttles since the last run."""
        low, high = self._config.throttle_backoff_min_s, self._config.throttle_backoff_max_s
        return float(min(high, low * 2 ** min(throttles, 32)))

    async def _defer(self, event: QueuedEvent, fault: Exception, expires_at: float) -> None:
        delay_s = self._throttle_delay_s(event.throttles)
        # Never later than its expiry: it is given up then, not an interval after.
        visible_at = min(time.time() + delay_s, expires_at)
        log.info("async event %s deferred %.1fs: %s", event.request_id, delay_s, fault)
        await self._queue.retry(
            event.request_id, visible_at, event.attempts, throttles=event.throttles + 1
        )

    @staticmethod
    def _unanswered(
        condition: Condition, function: FunctionConfig, event: QueuedEvent, reason: str
    ) -> Outcome:
        """The outcome of an event given up without a (new) response from the function."""
        return Outcome(condition, function, event.attempts, None, STATUS_THROTTLED, reason)
