"""The one way an Event invocation enters the durable queue: store it, count it, wake the
dispatcher.

Design notes: the front door (Invoke with ``Event``), destination and dead-letter
deliveries to a function, schedules and ``faas dlq redrive`` all submit here, so
every accepted event is counted once in ``AsyncEventsReceived`` and the dispatcher
learns of it at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib

from faas.observe.metrics import Metrics
from faas.store.base import EventQueue, QueuedEvent


class EventIntake:
    """Durable submission of events, and the signal the dispatcher waits on."""

    __slots__ = ("_metrics", "_queue", "_submitted")

    def __init__(self, queue: EventQueue, metrics: Metrics) -> None:
        self._queue = queue
        self._metrics = metrics
        self._submitted = asyncio.Event()

    async def submit(self, event: QueuedEvent) -> None:
        """Store ``event`` durably, then wake the dispatcher; returns once it is durable."""
        await self._queue.enqueue(event)
        metrics = self._metrics
        metrics.child(metrics.async_events_received, event.function_name).inc()
        self._submitted.set()

    def arm(self) -> None:
        """Forget earlier submissions; call before looking at the queue, so that one made
        while looking still ends the next ``wait_for_submission`` at once."""
        self._submitted.clear()

    async def wait_for_submission(self, timeout_s: float) -> None:
        """Return once an event was submitted since ``arm``, or after ``timeout_s``."""
        if self._submitted.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._submitted.wait()
