"""One mapping's poller: batch loops that receive records and hand them on.

Design notes: a poller serves one immutable mapping record; a changed mapping
gets a new poller. Its supervisor starts the source (backing off while the broker
is unreachable) and then runs batch loops, each receiving one batch and handing it
to the ``BatchProcessor`` (invoke, settle) before receiving the next:

- Scaling: a queue source starts with one loop; every loop that receives records
  starts another, up to ``mapping.concurrency`` (ScalingConfig.MaximumConcurrency,
  default ``DEFAULT_QUEUE_CONCURRENCY``), and a loop whose receive comes back
  empty ends unless it is the last one. So an idle mapping holds a single long
  poll and a busy one grows to its cap. A stream source has exactly one loop.
- Batching: the first receive waits up to ``IDLE_WAIT_S`` for any record; with a
  MaximumBatchingWindowInSeconds the loop keeps receiving until the batch is
  full or the window (counted from the first record) has passed.
- Source unavailable: the loop backs off from ``poller_backoff_min_s`` doubling
  to ``poller_backoff_max_s`` and tries again; the source reconnects by itself.
  An outage is logged once, and so is the recovery.

``stop`` ends idle loops at once, lets loops in the middle of a batch finish it
within the drain timeout, then cancels what is left; unsettled records go back
to the broker by its own rules (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from faas.events import sources
from faas.events.mappings.batches import (
    PROBLEM_SOURCE,
    Backoff,
    BatchProcessor,
    PollerContext,
    pause,
)
from faas.events.mappings.model import NO_RECORDS_PROCESSED, EventSourceMapping
from faas.events.sources.base import EventSource, SourceRecord, SourceSpec, SourceUnavailable

log = logging.getLogger(__name__)

IDLE_WAIT_S = 20.0  # the first receive of a batch: Lambda's long poll


class MappingPoller:
    """Receives, invokes and settles the batches of one enabled mapping."""

    __slots__ = ("_context", "_function_arn", "_is_source_down", "_loops", "_mapping",
                 "_receiving", "_source", "_spec", "_stop_event", "_supervisor")  # fmt: skip

    def __init__(
        self, mapping: EventSourceMapping, spec: SourceSpec, function_arn: str,
        context: PollerContext,
    ) -> None:  # fmt: skip
        self._mapping = mapping
        self._spec = spec
        self._function_arn = function_arn
        self._context = context
        self._source: EventSource | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._loops: set[asyncio.Task[None]] = set()
        self._receiving: set[asyncio.Task[None]] = set()  # loops waiting for records
        self._stop_event = asyncio.Event()
        self._is_source_down = False  # logged once per outage

    @property
    def mapping(self) -> EventSourceMapping:
        return self._mapping

    async def start(self) -> None:
        """Start polling in the background (the source connects there, with backoff)."""
        if self._supervisor is not None:
            raise RuntimeError("poller already started")
        self._supervisor = asyncio.create_task(
            self._supervise(), name=f"mapping-{self._mapping.uuid}"
        )

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop receiving; give batches in progress ``drain_timeout_s``, then cancel them."""
        self._stop_event.set()
        if self._supervisor is not None and not self._supervisor.done():
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for task in self._receiving:
            task.cancel()
        if self._loops:
            _, pending = await asyncio.wait(self._loops, timeout=drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._loops, return_exceptions=True)
        source, self._source = self._source, None
        if source is not None:
            try:
                await source.stop()
            except Exception:  # stopping anyway; the broker takes back what was unsettled
                log.exception("mapping %s: stopping its source failed", self._mapping.uuid)

    # --- supervision ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        await sources.load_module(self._spec.address)  # after a restart, not yet imported
        source = sources.open_source(self._spec)
        self._source = source
        backoff = self._context.poller_backoff()
        while not self._stop_event.is_set():
            try:
                await source.start()
                break
            except SourceUnavailable as exc:
                self._source_down(exc)
            except Exception:  # a source bug must not end the mapping; keep trying
                log.exception("mapping %s: starting its source failed", self._mapping.uuid)
                self._report(PROBLEM_SOURCE)
            await pause(self._stop_event, backoff.next())
        if not self._stop_event.is_set():
            self._spawn_loop()

    def _spawn_loop(self) -> None:
        task = asyncio.create_task(self._batch_loop(), name=f"mapping-{self._mapping.uuid}-batch")
        self._loops.add(task)
        task.add_done_callback(self._loop_ended)

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        self._loops.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("mapping %s: a batch loop failed", self._mapping.uuid,
                      exc_info=task.exception())  # fmt: skip

    def _report(self, result: str) -> None:
        self._context.on_result(self._mapping.uuid, result)

    def _source_down(self, exc: SourceUnavailable) -> None:
        """Log an outage once at warning level (then at debug level) and report it."""
        if self._is_source_down:
            log.debug("mapping %s: event source still unavailable: %s", self._mapping.uuid, exc)
        else:
            self._is_source_down = True
            log.warning("mapping %s: event source unavailable, retrying with backoff: %s",
                        self._mapping.uuid, exc)  # fmt: skip
        self._report(PROBLEM_SOURCE)

    def _source_up(self) -> None:
        if self._is_source_down:
            self._is_source_down = False
            log.info("mapping %s: event source reachable again", self._mapping.uuid)
            self._report(NO_RECORDS_PROCESSED)

    # --- one batch at a time --------------------------------------------------------------

    async def _batch_loop(self) -> None:
        me = asyncio.current_task()
        assert me is not None and self._source is not None
        processor = BatchProcessor(self._mapping, self._source, self._function_arn,
                                   self._context, self._stop_event)  # fmt: skip
        backoff = self._context.poller_backoff()
        throttle_backoff = self._context.throttle_backoff()
        while not self._stop_event.is_set():
            self._receiving.add(me)
            try:
                records = await self._receive_batch(backoff)
            except Exception:  # a source bug must not end the mapping's polling; keep trying
                log.exception("mapping %s: receiving a batch failed", self._mapping.uuid)
                self._report(PROBLEM_SOURCE)
                await pause(self._stop_event, backoff.next())
                records = []
            finally:
                self._receiving.discard(me)
            if not records:
                if len(self._loops) > 1:
                    self._loops.discard(me)  # no await since the check: never drops to zero
                    return
                continue
            if len(self._loops) < self._mapping.concurrency and not self._stop_event.is_set():
                self._spawn_loop()
            try:
                await processor.process(records, throttle_backoff)
            except Exception:  # task boundary: the broker redelivers what was not settled
                log.exception("mapping %s: processing a batch failed", self._mapping.uuid)
                await pause(self._stop_event, backoff.next())

    async def _receive_batch(self, backoff: Backoff) -> list[SourceRecord]:
        """One batch: the first records within IDLE_WAIT_S, then more within the window."""
        assert self._source is not None
        mapping = self._mapping
        try:
            records = await self._source.receive(mapping.batch_size, IDLE_WAIT_S)
        except SourceUnavailable as exc:
            self._source_down(exc)
            await pause(self._stop_event, backoff.next())
            return []
        backoff.reset()
        self._source_up()
        if not records or mapping.maximum_batching_window_s <= 0:
            return records
        deadline = time.monotonic() + mapping.maximum_batching_window_s
        while len(records) < mapping.batch_size and not self._stop_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                records += await self._source.receive(mapping.batch_size - len(records), remaining)
            except SourceUnavailable as exc:  # keep what arrived; settle it as usual
                self._source_down(exc)
                break
        return records
