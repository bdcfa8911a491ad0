"""The scheduler: scheduled rules that enqueue an Event invoke of their function at each tick.

Design notes:

- *Once per tick, across restarts.* Firing a tick enqueues the event through the
  node's durable async queue, then records the tick as the rule's last fired one.
  The event's request id is derived from (rule id, tick), so a crash between the
  two writes makes the next start enqueue the *same* request id again, which the
  queue ignores while the first copy is still there (``INSERT OR IGNORE``). A
  recorded tick is never fired again.
- *Catch-up.* Only the latest tick due is fired: after downtime (or a stall) a rule
  gets at most one catch-up invoke, for its most recent missed tick, then follows
  its schedule. ``start`` runs that pass before the node serves.
- *Sleeping.* Each rule caches its next due time; the loop sleeps until the
  earliest one, woken at once by a rule change. One sleep lasts at most
  ``schedule_tick_s``: asyncio sleeps on the monotonic clock while ticks are
  wall-clock times, so a clock step (NTP, a resumed VM) is noticed that soon. A
  wake-up with nothing due costs a scan of the in-memory rules, no I/O.
- *Deleted target.* A rule outlives its function, as an EventBridge rule does: the
  tick is still enqueued, and the dispatcher drops the event as ``FunctionDeleted``
  (``faas_async_events_dropped_total``); a function created again under that name
  receives the following ticks.
- The clock is injected, so the tick logic can be driven with any instant.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from faas.config import EventsConfig
from faas.errors import InvalidParameterValueException, ResourceNotFoundException
from faas.events.schedule_expressions import (
    ScheduleExpression,
    ScheduleExpressionError,
    iso_utc,
    parse_schedule_expression,
)
from faas.models import LATEST
from faas.observe.metrics import Metrics
from faas.store.base import QueuedEvent
from faas.store.schedules import ScheduleRecord, ScheduleRegistry

log = logging.getLogger(__name__)

Submit = Callable[[QueuedEvent], Awaitable[None]]
Clock = Callable[[], float]

# The Scheduled Event envelope (lambda-compat.md G).
_DETAIL_TYPE = "Scheduled Event"
_SOURCE = "aws.events"
_RETRY_AFTER_FAILURE_S = 5.0  # a tick whose enqueue failed is tried again this much later
_FIRE_BATCH = 64  # ticks enqueued at once (they share the queue's group commit)


class SchedulerState(enum.Enum):
    NEW = "new"  # constructed, rules not loaded
    RUNNING = "running"  # rules loaded, the loop fires due ticks
    STOPPED = "stopped"  # the loop is gone; cannot start again


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """What a user sets on a rule (on create, or the whole rule after an update)."""

    name: str
    expression: str
    function_name: str
    qualifier: str = ""  # "" targets the unqualified function ($LATEST)
    input: str | None = None  # JSON text delivered instead of the Scheduled Event
    description: str = ""
    is_enabled: bool = True


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A rule as the API shows it: the stored record and its next fire time."""

    record: ScheduleRecord
    next_fire_at: float | None  # None: disabled, or no tick left (a cron ending by 2199)


@dataclass(frozen=True, slots=True)
class FiredTick:
    """One tick a pass enqueued."""

    rule: str
    tick_s: float
    request_id: str


class _Rule:
    """A loaded rule: its record, parsed expression and cached next due time."""

    __slots__ = ("expression", "next_due", "record")

    def __init__(self, record: ScheduleRecord, expression: ScheduleExpression | None) -> None:
        self.record = record
        self.expression = expression  # None: stored text this node cannot parse; never fires
        self.next_due = self.next_tick()

    def next_tick(self) -> float | None:
        """The first tick after both the anchor and the last fired tick."""
        record = self.record
        if not record.is_enabled or self.expression is None:
            return None
        after = max(record.anchor_at, record.last_fired_at or record.anchor_at)
        return self.expression.next_fire_after(after, record.anchor_at)


def parse_expression(text: str) -> ScheduleExpression:
    """Raises InvalidParameterValueException naming what is wrong with ``text``."""
    try:
        return parse_schedule_expression(text)
    except ScheduleExpressionError as exc:
        raise InvalidParameterValueException(
            f"Parameter ScheduleExpression is not valid: {exc}."
        ) from exc


def rule_arn(region: str, account_id: str, name: str) -> str:
    return f"arn:aws:events:{region}:{account_id}:rule/{name}"


def tick_request_id(schedule_id: str, tick_s: float) -> str:
    """The request id of a rule's tick: the same (rule, tick) always gives the same id."""
    return str(uuid.uuid5(uuid.UUID(schedule_id), iso_utc(tick_s)))


def _trace_id(now: float) -> str:
    return f"Root=1-{int(now):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=0"


class Scheduler:
    """Keeps scheduled rules and enqueues an Event invoke of each at its ticks."""

    __slots__ = ("_account_id", "_changed", "_clock", "_config", "_lock", "_loop_task",
                 "_metrics", "_region", "_registry", "_rules", "_state", "_submit")  # fmt: skip

    def __init__(
        self,
        config: EventsConfig,
        registry: ScheduleRegistry,
        submit: Submit,
        metrics: Metrics,
        region: str,
        account_id: str,
        clock: Clock = time.time,
    ) -> None:
        self._config = config
        self._registry = registry
        self._submit = submit  # the async dispatcher's durable submit
        self._metrics = metrics
        self._region = region
        self._account_id = account_id
        self._clock = clock
        self._rules: dict[str, _Rule] = {}
        self._lock = asyncio.Lock()  # one pass or one rule change at a time
        self._changed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._state = SchedulerState.NEW

    async def start(self) -> None:
        """Load the rules, fire each one's latest missed tick, then start the loop."""
        if self._state is not SchedulerState.NEW:
            raise RuntimeError(f"scheduler cannot start from {self._state.value}")
        for record in await self._registry.load_schedules():
            expression: ScheduleExpression | None = None
            try:
                expression = parse_schedule_expression(record.expression)
            except ScheduleExpressionError:
                log.exception("schedule %s: unusable expression; it stays idle", record.name)
            self._rules[record.name] = _Rule(record, expression)
        self._state = SchedulerState.RUNNING
        await self.run_due(self._clock())
        self._loop_task = asyncio.create_task(self._loop(), name="scheduler")

    async def stop(self) -> None:
        if self._state is not SchedulerState.RUNNING:
            self._state = SchedulerState.STOPPED
            return
        self._state = SchedulerState.STOPPED
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task

    # Rules

    def views(self) -> list[ScheduleView]:
        return [self._view(self._rules[name]) for name in sorted(self._rules)]

    def get(self, name: str) -> ScheduleView:
        """Raises ResourceNotFoundException if there is no such rule."""
        return self._view(self._rule(name))

    async def create(self, spec: ScheduleSpec) -> ScheduleView:
        """Store a new rule; its schedule starts now.

        Raises:
            InvalidParameterValueException: the expression is not valid.
            ResourceConflictException: a rule of that name exists.
        """
        expression = parse_expression(spec.expression)
        now = self._clock()
        record = ScheduleRecord(
            name=spec.name, id=str(uuid.uuid4()), expression=spec.expression,
            function_name=spec.function_name, qualifier=spec.qualifier, input=spec.input,
            description=spec.description, is_enabled=spec.is_enabled, created_at=now,
            anchor_at=now,
        )  # fmt: skip
        async with self._lock:
            await self._registry.insert_schedule(record)
            rule = self._rules[spec.name] = _Rule(record, expression)
        self._changed.set()
        return self._view(rule)

    async def update(self, spec: ScheduleSpec) -> ScheduleView:
        """Replace a rule's settings; a new expression or a re-enable restarts its schedule
        (no tick from before is owed).

        Raises:
            InvalidParameterValueException: the expression is not valid.
            ResourceNotFoundException: there is no such rule.
        """
        expression = parse_expression(spec.expression)
        async with self._lock:
            rule = self._rule(spec.name)
            current = rule.record
            restarts = spec.expression != current.expression or (
                spec.is_enabled and not current.is_enabled
            )
            record = dataclasses.replace(
                current, expression=spec.expression, function_name=spec.function_name,
                qualifier=spec.qualifier, input=spec.input, description=spec.description,
                is_enabled=spec.is_enabled,
                anchor_at=self._clock() if restarts else current.anchor_at,
            )  # fmt: skip
            await self._registry.replace_schedule(record)
            rule.record, rule.expression = record, expression
            rule.next_due = rule.next_tick()
        self._changed.set()
        return self._view(rule)

    async def delete(self, name: str) -> None:
        """Raises ResourceNotFoundException if there is no such rule."""
        async with self._lock:
            self._rule(name)
            await self._registry.delete_schedule(name)
            del self._rules[name]
        self._changed.set()

    def _rule(self, name: str) -> _Rule:
        rule = self._rules.get(name)
        if rule is None:
            raise ResourceNotFoundException(f"Rule {name} does not exist.")
        return rule

    def _view(self, rule: _Rule) -> ScheduleView:
        return ScheduleView(rule.record, rule.next_tick())

    # Firing

    async def run_due(self, now: float) -> list[FiredTick]:
        """One pass: enqueue the latest due tick of every rule whose next tick is ``<= now``."""
        if self._state is not SchedulerState.RUNNING:
            raise RuntimeError("scheduler is not running")
        fired: list[FiredTick] = []
        async with self._lock:
            due = [r for r in self._rules.values() if r.next_due is not None and r.next_due <= now]
            for start in range(0, len(due), _FIRE_BATCH):
                batch = due[start : start + _FIRE_BATCH]
                results = await asyncio.gather(*(self._fire(rule, now) for rule in batch))
                fired.extend(result for result in results if result is not None)
        return fired

    async def _fire(self, rule: _Rule, now: float) -> FiredTick | None:
        record = rule.record
        if rule.expression is None:
            return None
        tick = rule.expression.last_fire_at_or_before(now, record.anchor_at)
        owed_after = max(record.anchor_at, record.last_fired_at or record.anchor_at)
        if tick is None or tick <= owed_after:  # woken early (a retry, or a clock step back)
            rule.next_due = rule.next_tick()
            return None
        request_id = tick_request_id(record.id, tick)
        try:
            await self._submit(
                QueuedEvent(
                    request_id=request_id,
                    function_name=record.function_name,
                    qualifier=record.qualifier or LATEST,
                    payload=self._payload(record, tick, request_id),
                    enqueued_at=now,
                    trace_id=_trace_id(now),
                )
            )
            await self._registry.mark_fired(record.id, tick)
        except Exception:  # task boundary: the tick stays due and is tried again
            log.exception("schedule %s: enqueueing the %s tick failed", record.name, iso_utc(tick))
            rule.next_due = now + _RETRY_AFTER_FAILURE_S
            return None
        rule.record = dataclasses.replace(record, last_fired_at=tick)
        rule.next_due = rule.next_tick()
        self._metrics.schedule_invocations.labels(record.name).inc()
        log.info("schedule %s fired its %s tick as %s", record.name, iso_utc(tick), request_id)
        return FiredTick(record.name, tick, request_id)

    def _payload(self, record: ScheduleRecord, tick_s: float, event_id: str) -> bytes:
        if record.input is not None:
            return record.input.encode()
        return orjson.dumps(
            {
                "version": "0",
                "id": event_id,
                "detail-type": _DETAIL_TYPE,
                "source": _SOURCE,
                "account": self._account_id,
                "time": iso_utc(tick_s),
                "region": self._region,
                "resources": [rule_arn(self._region, self._account_id, record.name)],
                "detail": {},
            }
        )

    def seconds_until_due(self, now: float) -> float:
        """How long the loop may sleep: until the earliest due tick, at most one check interval."""
        wait_s = self._config.schedule_tick_s
        for rule in self._rules.values():
            if rule.next_due is not None:
                wait_s = min(wait_s, rule.next_due - now)
        return max(wait_s, 0.0)

    async def _loop(self) -> None:
        while self._state is SchedulerState.RUNNING:
            self._changed.clear()
            try:
                await self.run_due(self._clock())
            except Exception:  # task boundary: log, then keep the schedule going
                log.exception("scheduler pass failed")
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives just as the wait ends (a rule change racing stop()).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.seconds_until_due(self._clock())):
                    await self._changed.wait()
