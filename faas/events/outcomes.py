"""How an Event invocation ends: the destination record, the dead-letter message, and
leaving the durable queue.

Design notes: an event leaves the queue only after everything it owes was handed
over (the OnSuccess record; or the dead-letter message and the OnFailure record),
so a crash in between sends them again rather than never (at-least-once, as for
the invocation itself). A delivery that fails is counted
(``faas_dead_letter_errors_total`` / ``faas_destination_delivery_failures_total``)
and logged with the event's request id and payload size; the event then leaves
the queue anyway, as on Lambda: retrying a broken target forever would hold the
event's function back. Records follow Lambda's invocation-record shape
(lambda-compat.md F); an event that never got a response (it expired while
throttled, or reserved concurrency is 0) has no ``responsePayload``, and its
``responseContext`` carries the throttle's status code only.
"""

from __future__ import annotations

import datetime
import enum
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from faas.catalog import FunctionCatalog
from faas.events.destinations import DestinationDelivery
from faas.events.invoke_configs import AsyncPolicy
from faas.models import FunctionConfig, InvocationResult
from faas.observe.metrics import Metrics
from faas.store.base import EventQueue, QueuedEvent

log = logging.getLogger(__name__)

# Dead-letter message attributes (lambda-compat.md F).
ATTRIBUTE_REQUEST_ID = "RequestID"
ATTRIBUTE_ERROR_CODE = "ErrorCode"
ATTRIBUTE_ERROR_MESSAGE = "ErrorMessage"
_ERROR_MESSAGE_MAX_BYTES = 1024
_RECORD_VERSION = "1.0"
# The invoke's HTTP status when the function ran (function errors come back in a 200).
STATUS_RAN = 200
STATUS_THROTTLED = 429


class Condition(enum.StrEnum):
    """Why an event left the queue, as the record's requestContext.condition says."""

    SUCCESS = "Success"  # the function succeeded
    RETRIES_EXHAUSTED = "RetriesExhausted"  # it failed on every allowed attempt
    EVENT_AGE_EXCEEDED = "EventAgeExceeded"  # it grew older than its maximum age


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one event ended."""

    condition: Condition
    function: FunctionConfig  # the version that ran (or would have)
    invoke_count: int  # times the function ran for this event
    result: InvocationResult | None = None  # the last response, if the function ran
    status_code: int = STATUS_RAN
    reason: str = ""  # why it never ran (no result): for the dead-letter message


def _timestamp(epoch_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(epoch_s, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _json_or_text(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "replace")


def destination_record(
    event: QueuedEvent, outcome: Outcome, function_arn: str, now: float
) -> bytes:
    """The invocation record an OnSuccess / OnFailure destination receives."""
    record: dict[str, Any] = {
        "version": _RECORD_VERSION,
        "timestamp": _timestamp(now),
        "requestContext": {
            "requestId": event.request_id,
            "functionArn": function_arn,
            "condition": outcome.condition.value,
            "approximateInvokeCount": outcome.invoke_count,
        },
        "requestPayload": _json_or_text(event.payload),
    }
    result = outcome.result
    if result is None:
        record["responseContext"] = {"statusCode": outcome.status_code}
        return orjson.dumps(record)
    response_context: dict[str, Any] = {
        "statusCode": outcome.status_code,
        "executedVersion": result.executed_version,
    }
    if result.function_error is not None:
        response_context["functionError"] = result.function_error
    record["responseContext"] = response_context
    record["responsePayload"] = _json_or_text(result.payload)
    return orjson.dumps(record)


def _error_message(outcome: Outcome) -> str:
    message = outcome.reason
    if outcome.result is not None:
        response = _json_or_text(outcome.result.payload)
        if isinstance(response, dict) and isinstance(response.get("errorMessage"), str):
            message = response["errorMessage"]
        else:
            message = outcome.result.payload.decode("utf-8", "replace")
    return message.encode()[:_ERROR_MESSAGE_MAX_BYTES].decode("utf-8", "ignore")


def dead_letter_attributes(event: QueuedEvent, outcome: Outcome) -> dict[str, str]:
    """RequestID, ErrorCode (the invoke's HTTP status) and ErrorMessage (first 1 KB)."""
    return {
        ATTRIBUTE_REQUEST_ID: event.request_id,
        ATTRIBUTE_ERROR_CODE: str(outcome.status_code),
        ATTRIBUTE_ERROR_MESSAGE: _error_message(outcome),
    }


class OutcomeDelivery:
    """Hands an ended event to its destinations and dead-letter target, then acks it."""

    __slots__ = ("_catalog", "_destinations", "_metrics", "_queue")

    def __init__(
        self,
        queue: EventQueue,
        destinations: DestinationDelivery,
        catalog: FunctionCatalog,
        metrics: Metrics,
    ) -> None:
        self._queue = queue
        self._destinations = destinations
        self._catalog = catalog
        self._metrics = metrics

    async def finish(
        self, event: QueuedEvent, policy: AsyncPolicy, outcome: Outcome, now: float
    ) -> None:
        """Deliver what ``outcome`` owes, then remove the event from the queue."""
        if outcome.condition is Condition.SUCCESS:
            if policy.on_success:
                record = destination_record(event, outcome, self._arn_of(event), now)
                await self._send_record(event, policy.on_success, record)
            await self._queue.ack(event.request_id)
            return
        log.warning("async event %s of %s failed: %s after %d invocation(s)",
                    event.request_id, event.function_name, outcome.condition.value,
                    outcome.invoke_count)  # fmt: skip
        dead_letter_arn = outcome.function.dead_letter_target_arn
        if dead_letter_arn:
            await self._send_dead_letter(event, outcome, dead_letter_arn)
        if policy.on_failure:
            record = destination_record(event, outcome, self._arn_of(event), now)
            await self._send_record(event, policy.on_failure, record)
        self._metrics.child(self._metrics.async_events_dropped, event.function_name).inc()
        await self._queue.ack(event.request_id)

    def _arn_of(self, event: QueuedEvent) -> str:
        return self._catalog.function_arn(event.function_name, event.qualifier)

    async def discard(self, event: QueuedEvent, reason: str) -> None:
        """Remove an event nothing can be done for (its function is gone)."""
        log.warning("async event %s of %s dropped: %s",
                    event.request_id, event.function_name, reason)  # fmt: skip
        self._metrics.child(self._metrics.async_events_dropped, event.function_name).inc()
        await self._queue.ack(event.request_id)

    async def _send_dead_letter(self, event: QueuedEvent, outcome: Outcome, arn: str) -> None:
        try:
            await self._destinations.deliver(
                arn, event.payload, dead_letter_attributes(event, outcome)
            )
        except Exception:  # a broken target must not hold the queue; counted and logged
            self._metrics.child(self._metrics.dead_letter_errors, event.function_name).inc()
            log.exception("async event %s of %s (%d bytes) could not be sent to its "
                          "dead-letter target %s", event.request_id, event.function_name,
                          len(event.payload), arn)  # fmt: skip

    async def _send_record(self, event: QueuedEvent, arn: str, record: bytes) -> None:
        try:
            await self._destinations.deliver(arn, record)
        except Exception:  # a broken target must not hold the queue; counted and logged
            metrics = self._metrics
            metrics.child(metrics.destination_delivery_failures, event.function_name).inc()
            log.exception("async event %s of %s: its invocation record could not be sent "
                          "to the destination %s", event.request_id, event.function_name,
                          arn)  # fmt: skip
