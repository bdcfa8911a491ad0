"""Process one received batch: invoke the function, then settle it with the source.

Design notes (Lambda's semantics, see docs/event-sources.md):

- Queue sources: success acks the batch; a function error releases it; with
  ReportBatchItemFailures the reported records are released and the rest acked
  (an invalid response fails the whole batch). A throttle, a node fault or a
  missing function releases the batch, and the loop waits (throttle backoff)
  before it receives again. A batch cancelled before it was settled (the poller
  stopped past its drain timeout) is released on the way out.
- Stream sources: ``StreamRetry`` retries the batch in place (bisecting if
  asked), with the poller backoff between failed attempts; throttles and node
  faults are retried without consuming retries; records given up on go to the
  on-failure destination and are acked only once that delivery succeeded, so a
  broken destination holds the stream rather than losing records. When the
  poller stops mid-batch, what is unsettled stays with the broker (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson

from faas.config import EventsConfig
from faas.errors import ApiError, ResourceNotFoundException, TooManyRequestsException
from faas.events import sources
from faas.events.destinations import DestinationDelivery
from faas.events.mappings.batch_response import reported_failures
from faas.events.mappings.failure_record import failure_record
from faas.events.mappings.model import PROCESSING_OK, EventSourceMapping
from faas.events.mappings.stream_retry import Settlement, StreamRetry
from faas.events.sources.base import EventSource, SourceRecord
from faas.ids import new_request_id, new_trace_id
from faas.models import InvocationRequest, InvocationResult
from faas.observe.metrics import Metrics
from faas.pool.invoker import Invoker
from faas.versions import VersionCatalog

log = logging.getLogger(__name__)

RELEASE_ON_CANCEL_TIMEOUT_S = 5.0
# LastProcessingResult values beyond OK and "No records processed".
PROBLEM_FUNCTION_FAILED = "PROBLEM: Function call failed"
PROBLEM_INVALID_RESPONSE = "PROBLEM: Invalid batch item failure response"
PROBLEM_THROTTLED = "PROBLEM: Function call throttled"
PROBLEM_FUNCTION_NOT_FOUND = "PROBLEM: Function not found"
PROBLEM_NODE = "PROBLEM: Function could not be invoked"
PROBLEM_SOURCE = "PROBLEM: Event source unavailable"
PROBLEM_SETTLE = "PROBLEM: Records could not be settled with the event source"
PROBLEM_DESTINATION = "PROBLEM: On-failure destination delivery failed"

ResultListener = Callable[[str, str], None]  # (mapping uuid, LastProcessingResult)


class Backoff:
    """Exponential waits between ``min_s`` and ``max_s``; ``reset`` after a success."""

    __slots__ = ("_max_s", "_min_s", "_next_s")

    def __init__(self, min_s: float, max_s: float) -> None:
        self._min_s = min_s
        self._max_s = max(min_s, max_s)
        self._next_s = min_s

    def next(self) -> float:
        wait = self._next_s
        self._next_s = min(self._max_s, max(self._next_s * 2, 0.05))
        return wait

    def reset(self) -> None:
        self._next_s = self._min_s


@dataclass(frozen=True, slots=True)
class PollerContext:
    """What every poller of a node shares."""

    config: EventsConfig
    versions: VersionCatalog
    invoker: Invoker
    destinations: DestinationDelivery
    metrics: Metrics
    on_result: ResultListener

    def poller_backoff(self) -> Backoff:
        """Waits while a source is unreachable, and between failed stream attempts."""
        return Backoff(self.config.poller_backoff_min_s, self.config.poller_backoff_max_s)

    def throttle_backoff(self) -> Backoff:
        """Waits after a batch could not be invoked (throttled, node fault)."""
        return Backoff(self.config.throttle_backoff_min_s, self.config.throttle_backoff_max_s)


async def pause(stop_event: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop_event`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), seconds)


class BatchProcessor:
    """Invokes one mapping's function with its batches and settles them with its source."""

    __slots__ = ("_context", "_function_arn", "_mapping", "_source", "_stop_event")

    def __init__(
        self, mapping: EventSourceMapping, source: EventSource, function_arn: str,
        context: PollerContext, stop_event: asyncio.Event,
    ) -> None:  # fmt: skip
        self._mapping = mapping
        self._source = source
        self._function_arn = function_arn
        self._context = context
        self._stop_event = stop_event  # set when the poller stops: no further attempts

    async def process(self, records: list[SourceRecord], throttle_backoff: Backoff) -> None:
        """Invoke and settle one batch (a stream's: until every record is acked or given up)."""
        meters = self._context.metrics
        meters.event_source_records.labels(*self._labels()).inc(len(records))
        if self._mapping.is_stream:
            await self._process_stream(records)
        else:
            await self._process_queue(records, throttle_backoff)
        newest = max(record.arrived_at for record in records)
        meters.event_source_iterator_age.labels(*self._labels()).set(max(0.0, time.time() - newest))

    def _labels(self) -> tuple[str, str]:
        return self._mapping.uuid, self._mapping.function_name

    def _report(self, result: str) -> None:
        self._context.on_result(self._mapping.uuid, result)

    async def _invoke(self, records: Sequence[SourceRecord]) -> InvocationResult | None:
        """Invoke the function with one batch; None if it could not run (back off, retry)."""
        mapping = self._mapping
        try:
            resolved = self._context.versions.resolve(mapping.function_name, mapping.qualifier)
        except ResourceNotFoundException:
            self._not_invoked(PROBLEM_FUNCTION_NOT_FOUND)
            return None
        request = InvocationRequest(
            request_id=new_request_id(),
            function=resolved.config,
            payload=orjson.dumps(self._source.event(records)),
            invoked_arn=self._function_arn,
            trace_id=new_trace_id(parent=False),
            alias=resolved.alias,
        )
        try:
            return await self._context.invoker.invoke(request)
        except TooManyRequestsException:
            self._not_invoked(PROBLEM_THROTTLED)
        except ApiError as fault:  # a node-side fault (e.g. shutting down)
            log.warning("mapping %s: invoke failed: %s", mapping.uuid, fault)
            self._not_invoked(PROBLEM_NODE)
        return None

    def _not_invoked(self, problem: str) -> None:
        self._report(problem)
        self._context.metrics.event_source_batches.labels(*self._labels(), "not_invoked").inc()

    def _count_batch(self, outcome: str, result: str) -> None:
        self._report(result)
        self._context.metrics.event_source_batches.labels(*self._labels(), outcome).inc()

    # --- queue sources --------------------------------------------------------------------

    async def _process_queue(self, records: list[SourceRecord], throttle_backoff: Backoff) -> None:
        settled = False
        try:
            result = await self._invoke(records)
            if result is None:
                settled = True
                await self._settle([], records)
                await pause(self._stop_event, throttle_backoff.next())
                return
            throttle_backoff.reset()
            failed = self._failed_ids(result, records)
            ok = [record for record in records if record.item_id not in failed]
            settled = True
            await self._settle(ok, [record for record in records if record.item_id in failed])
        except asyncio.CancelledError:
            if not settled:  # stopped mid-batch: hand the records back where the broker can
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        asyncio.shield(self._source.release(records)), RELEASE_ON_CANCEL_TIMEOUT_S
                    )
            raise

    def _failed_ids(self, result: InvocationResult, records: Sequence[SourceRecord]) -> set[str]:
        """The ids to release after ``result``, counting the batch's outcome."""
        all_ids = {record.item_id for record in records}
        if result.is_error:
            self._count_batch("failed", PROBLEM_FUNCTION_FAILED)
            return all_ids
        if not self._mapping.reports_batch_item_failures:
            self._count_batch("ok", PROCESSING_OK)
            return set()
        failed = reported_failures(result.payload, all_ids)
        if failed is None:
            self._count_batch("failed", PROBLEM_INVALID_RESPONSE)
            return all_ids
        self._count_batch("partial" if failed else "ok", PROCESSING_OK)
        return failed

    async def _settle(self, ack: list[SourceRecord], release: list[SourceRecord]) -> None:
        try:
            if ack:
                await self._source.ack(ack)
            if release:
                await self._source.release(release)
        except Exception as exc:  # the broker redelivers what was not settled
            log.warning("mapping %s: settling a batch failed: %s", self._mapping.uuid, exc)
            self._report(PROBLEM_SETTLE)

    # --- stream sources -------------------------------------------------------------------

    async def _process_stream(self, records: list[SourceRecord]) -> None:
        """Retry the batch in place until every record is acked or given up (or we stop)."""
        mapping = self._mapping
        plan = StreamRetry(records, mapping.maximum_retry_attempts,
                           mapping.bisect_batch_on_function_error)  # fmt: skip
        backoff = self._context.poller_backoff()
        last_result: InvocationResult | None = None
        while not plan.is_done and not self._stop_event.is_set():
            if mapping.maximum_record_age_s >= 0:
                expired = plan.expire(time.time() - mapping.maximum_record_age_s)
                if not await self._apply(expired, last_result):
                    return
                if plan.is_done:
                    break
            current = plan.current
            result = await self._invoke(current)
            if result is None:
                await pause(self._stop_event, backoff.next())
                continue
            plan.invoked()
            last_result = result
            settlement = self._stream_outcome(plan, result, current)
            if not await self._apply(settlement, last_result):
                return
            if not plan.is_done and not settlement.ack:  # a failed attempt: wait a little
                await pause(self._stop_event, backoff.next())

    def _stream_outcome(
        self, plan: StreamRetry, result: InvocationResult, current: list[SourceRecord]
    ) -> Settlement:
        if result.is_error:
            self._count_batch("failed", PROBLEM_FUNCTION_FAILED)
            return plan.failed()
        if not self._mapping.reports_batch_item_failures:
            self._count_batch("ok", PROCESSING_OK)
            return plan.succeeded()
        failed = reported_failures(result.payload, {record.item_id for record in current})
        if failed is None:
            self._count_batch("failed", PROBLEM_INVALID_RESPONSE)
            return plan.failed()
        if not failed:
            self._count_batch("ok", PROCESSING_OK)
            return plan.succeeded()
        self._count_batch("partial", PROCESSING_OK)
        first = min(index for index, record in enumerate(current) if record.item_id in failed)
        return plan.failed(first)

    async def _apply(self, settlement: Settlement, last_result: InvocationResult | None) -> bool:
        """Ack and give up as settled; False if the poller stopped before it could."""
        if settlement.give_up:
            if not await self._send_failure(settlement, last_result):
                return False
            self._context.metrics.event_source_records_discarded.labels(*self._labels()).inc(
                len(settlement.give_up)
            )
        done = settlement.ack + settlement.give_up
        if done:
            await self._settle(done, [])
        return True

    async def _send_failure(
        self, settlement: Settlement, last_result: InvocationResult | None
    ) -> bool:
        """Deliver the on-failure record (retrying with backoff); False if stopped first."""
        mapping = self._mapping
        log.warning("mapping %s: giving up on %d records (%s)", mapping.uuid,
                    len(settlement.give_up), settlement.condition)  # fmt: skip
        if not mapping.on_failure_destination:
            return True
        record = failure_record(
            settlement.give_up, settlement.condition, settlement.invocations,
            self._function_arn, sources.public_address(mapping.event_source_arn), last_result,
        )  # fmt: skip
        body = orjson.dumps(record)
        backoff = self._context.poller_backoff()
        while not self._stop_event.is_set():
            try:
                await self._context.destinations.deliver(mapping.on_failure_destination, body)
                return True
            except Exception as exc:  # any target failure: keep the records until delivered
                log.warning("mapping %s: on-failure delivery to %s failed: %s", mapping.uuid,
                            mapping.on_failure_destination, exc)  # fmt: skip
                self._context.metrics.destination_delivery_failures.labels(
                    mapping.function_name
                ).inc()
                self._report(PROBLEM_DESTINATION)
                await pause(self._stop_event, backoff.next())
        return False
