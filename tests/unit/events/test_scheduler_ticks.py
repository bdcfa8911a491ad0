"""The scheduler's tick logic over a real SQLite store, driven by an injected clock.

The event queue is the store's own durable queue (``SqliteStore.enqueue``), so
idempotent re-enqueues (``INSERT OR IGNORE`` on the request id) are the real thing.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from faas.config import EventsConfig
from faas.errors import (
    InvalidParameterValueException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from faas.events.scheduler import Scheduler, ScheduleSpec, tick_request_id
from faas.observe.metrics import Metrics
from faas.store.base import QueuedEvent
from faas.store.schedules import ScheduleRecord, SqliteScheduleStore
from faas.store.sqlite import SqliteStore

REGION = "eu-west-1"
ACCOUNT = "123456789012"


def at(text: str) -> float:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM:SS`` (UTC)."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S")))


class FakeClock:
    """Wall-clock time as the test sets it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FailingMarks(SqliteScheduleStore):
    """A registry whose next ``mark_fired`` fails: a crash between enqueue and record."""

    __slots__ = ("failures_left",)

    def __init__(self, store: SqliteStore, failures: int) -> None:
        super().__init__(store)
        self.failures_left = failures

    async def mark_fired(self, schedule_id: str, tick_s: float) -> None:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise OSError("disk went away before the tick was recorded")
        await super().mark_fired(schedule_id, tick_s)


@dataclass
class Node:
    """A store plus a way to start schedulers on it, as consecutive node incarnations."""

    store: SqliteStore
    clock: FakeClock
    start_scheduler: Callable[..., Awaitable[Scheduler]]

    async def queued(self) -> list[QueuedEvent]:
        """The events in the durable queue, oldest first (read without leasing)."""
        query = "SELECT request_id, function_name, qualifier, payload FROM events ORDER BY seq"
        async with self.store.conn.execute(query) as cursor:
            rows = await cursor.fetchall()
        return [QueuedEvent(r[0], r[1], r[2], bytes(r[3]), enqueued_at=0.0) for r in rows]


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    store = SqliteStore(tmp_path / "registry.sqlite3")
    await store.start()
    clock = FakeClock(at("2024-05-01T10:00:30"))
    schedulers: list[Scheduler] = []

    async def start_scheduler(
        registry: SqliteScheduleStore | None = None, tick_s: float = 1.0
    ) -> Scheduler:
        for running in schedulers:  # one incarnation at a time
            await running.stop()
        scheduler = Scheduler(
            EventsConfig(schedule_tick_s=tick_s), registry or SqliteScheduleStore(store),
            store.enqueue, Metrics(), REGION, ACCOUNT, clock=clock,
        )  # fmt: skip
        schedulers.append(scheduler)
        await scheduler.start()
        return scheduler

    yield Node(store, clock, start_scheduler)
    for scheduler in schedulers:
        await scheduler.stop()
    await store.stop()


def every_minute(
    name: str = "tick", *, qualifier: str = "", input: str | None = None, description: str = ""
) -> ScheduleSpec:
    return ScheduleSpec(name, "cron(* * * * ? *)", "target", qualifier, input, description)


async def test_first_tick_after_creation_fires_once_with_the_scheduled_event(node: Node) -> None:
    scheduler = await node.start_scheduler()
    created = await scheduler.create(every_minute())
    assert created.next_fire_at == at("2024-05-01T10:01:00")
    assert await scheduler.run_due(at("2024-05-01T10:00:59")) == []

    (fired,) = await scheduler.run_due(at("2024-05-01T10:01:00"))
    assert fired.tick_s == at("2024-05-01T10:01:00")
    assert await scheduler.run_due(at("2024-05-01T10:01:30")) == []

    (event,) = await node.queued()
    assert event.request_id == fired.request_id
    assert (event.function_name, event.qualifier) == ("target", "$LATEST")
    assert orjson.loads(event.payload) == {
        "version": "0",
        "id": fired.request_id,
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2024-05-01T10:01:00Z",
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/tick"],
        "detail": {},
    }
    view = scheduler.get("tick")
    assert view.record.last_fired_at == at("2024-05-01T10:01:00")
    assert view.next_fire_at == at("2024-05-01T10:02:00")


async def test_input_replaces_the_envelope_and_the_qualifier_is_kept(node: Node) -> None:
    scheduler = await node.start_scheduler()
    await scheduler.create(every_minute(input='{"job": "nightly"}', qualifier="live"))
    await scheduler.run_due(at("2024-05-01T10:01:00"))
    (event,) = await node.queued()
    assert event.payload == b'{"job": "nightly"}'
    assert event.qualifier == "live"


async def test_every_due_rule_fires_in_one_pass(node: Node) -> None:
    scheduler = await node.start_scheduler()
    for index in range(100):
        await scheduler.create(every_minute(f"rule-{index}"))
    fired = await scheduler.run_due(at("2024-05-01T10:01:00"))
    assert sorted(tick.rule for tick in fired) == sorted(f"rule-{i}" for i in range(100))
    assert len({event.request_id for event in await node.queued()}) == 100


async def test_after_downtime_only_the_latest_missed_tick_fires(node: Node) -> None:
    scheduler = await node.start_scheduler()
    await scheduler.create(every_minute())
    await scheduler.run_due(at("2024-05-01T10:01:00"))

    # Down from 10:01:10 to 10:07:30: six ticks were missed, one is made up at start.
    node.clock.now = at("2024-05-01T10:07:30")
    restarted = await node.start_scheduler()
    events = await node.queued()
    assert [orjson.loads(e.payload)["time"] for e in events] == [
        "2024-05-01T10:01:00Z", "2024-05-01T10:07:00Z",
    ]  # fmt: skip
    assert restarted.get("tick").record.last_fired_at == at("2024-05-01T10:07:00")
    # Then it follows its schedule.
    assert await restarted.run_due(at("2024-05-01T10:07:59")) == []
    (fired,) = await restarted.run_due(at("2024-05-01T10:08:00"))
    assert fired.tick_s == at("2024-05-01T10:08:00")


async def test_a_restart_within_the_same_tick_fires_nothing(node: Node) -> None:
    scheduler = await node.start_scheduler()
    await scheduler.create(every_minute())
    await scheduler.run_due(at("2024-05-01T10:01:00"))
    node.clock.now = at("2024-05-01T10:01:40")
    restarted = await node.start_scheduler()
    assert len(await node.queued()) == 1
    assert restarted.get("tick").next_fire_at == at("2024-05-01T10:02:00")


async def test_a_crash_between_enqueue_and_record_enqueues_the_same_request_id(
    node: Node,
) -> None:
    failing = FailingMarks(node.store, failures=2)
    scheduler = await node.start_scheduler(failing)
    await scheduler.create(every_minute())
    # The event is durable, recording the tick fails: nothing counts as fired.
    assert await scheduler.run_due(at("2024-05-01T10:01:00")) == []
    (event,) = await node.queued()
    rule_id = scheduler.get("tick").record.id
    assert event.request_id == tick_request_id(rule_id, at("2024-05-01T10:01:00"))
    # Retried a little later, still failing: the same id again, still one event.
    assert await scheduler.run_due(at("2024-05-01T10:01:04")) == []  # not yet retried
    assert await scheduler.run_due(at("2024-05-01T10:01:05")) == []
    # The next incarnation fires the tick again: the queue ignores the duplicate id.
    node.clock.now = at("2024-05-01T10:01:20")
    restarted = await node.start_scheduler()
    assert restarted.get("tick").record.last_fired_at == at("2024-05-01T10:01:00")
    assert [e.request_id for e in await node.queued()] == [event.request_id]


async def test_a_recreated_rule_gets_new_request_ids(node: Node) -> None:
    scheduler = await node.start_scheduler()
    await scheduler.create(every_minute())
    (first,) = await scheduler.run_due(at("2024-05-01T10:01:00"))
    await scheduler.delete("tick")
    await scheduler.create(every_minute())
    (second,) = await scheduler.run_due(at("2024-05-01T10:02:00"))
    recreated_id = scheduler.get("tick").record.id
    assert second.request_id == tick_request_id(recreated_id, at("2024-05-01T10:02:00"))
    # The same rule name and tick under the new rule id: a different request id.
    assert tick_request_id(recreated_id, first.tick_s) != first.request_id


async def test_rate_ticks_from_creation_and_reenabling_owes_nothing(node: Node) -> None:
    node.clock.now = at("2024-05-01T10:02:40")
    scheduler = await node.start_scheduler()
    created = await scheduler.create(ScheduleSpec("every5", "rate(5 minutes)", "target"))
    assert created.next_fire_at == at("2024-05-01T10:07:00")
    fired = await scheduler.run_due(at("2024-05-01T10:07:00"))
    assert [tick.tick_s for tick in fired] == [at("2024-05-01T10:07:00")]

    node.clock.now = at("2024-05-01T10:08:00")
    disabled = await scheduler.update(ScheduleSpec("every5", "rate(5 minutes)", "target",
                                                   is_enabled=False))  # fmt: skip
    assert disabled.next_fire_at is None
    assert await scheduler.run_due(at("2024-05-01T10:30:00")) == []

    # Re-enabled at 10:30:10: the schedule starts again from 10:30, no catch-up.
    node.clock.now = at("2024-05-01T10:30:10")
    enabled = await scheduler.update(ScheduleSpec("every5", "rate(5 minutes)", "target"))
    assert enabled.next_fire_at == at("2024-05-01T10:35:00")
    assert await scheduler.run_due(at("2024-05-01T10:34:59")) == []
    assert len(await scheduler.run_due(at("2024-05-01T10:35:00"))) == 1


async def test_a_new_expression_restarts_the_schedule(node: Node) -> None:
    scheduler = await node.start_scheduler()
    await scheduler.create(ScheduleSpec("daily", "cron(0 12 * * ? *)", "target"))
    assert scheduler.get("daily").next_fire_at == at("2024-05-01T12:00:00")
    node.clock.now = at("2024-05-01T10:05:00")
    hourly = await scheduler.update(ScheduleSpec("daily", "rate(1 hour)", "target"))
    assert hourly.next_fire_at == at("2024-05-01T11:05:00")
    # A rule changed to a bad expression stays as it was.
    with pytest.raises(InvalidParameterValueException, match="rate value 'x'"):
        await scheduler.update(ScheduleSpec("daily", "rate(x hours)", "target"))
    assert scheduler.get("daily").record.expression == "rate(1 hour)"


async def test_rules_are_kept_in_the_store(node: Node) -> None:
    scheduler = await node.start_scheduler()
    await scheduler.create(every_minute("a", description="first", input="[1, 2]"))
    await scheduler.create(ScheduleSpec("b", "rate(1 day)", "other", "3", is_enabled=False))
    with pytest.raises(ResourceConflictException, match="Rule a already exists"):
        await scheduler.create(every_minute("a"))
    with pytest.raises(ResourceNotFoundException, match="Rule nope does not exist"):
        await scheduler.delete("nope")
    with pytest.raises(InvalidParameterValueException, match=r"is not valid: .*six fields"):
        await scheduler.create(ScheduleSpec("c", "cron(* * * *)", "target"))
    before = [view.record for view in scheduler.views()]
    restarted = await node.start_scheduler()
    after: list[ScheduleRecord] = [view.record for view in restarted.views()]
    assert after == before
    assert [(r.name, r.description, r.input, r.qualifier, r.is_enabled) for r in after] == [
        ("a", "first", "[1, 2]", "", True), ("b", "", None, "3", False),
    ]  # fmt: skip


async def test_sleep_is_until_the_next_tick_at_most_one_check_interval(node: Node) -> None:
    scheduler = await node.start_scheduler(tick_s=60.0)
    assert scheduler.seconds_until_due(at("2024-05-01T10:00:30")) == 60.0  # no rules
    await scheduler.create(every_minute())
    assert scheduler.seconds_until_due(at("2024-05-01T10:00:40")) == 20.0
    assert scheduler.seconds_until_due(at("2024-05-01T10:01:05")) == 0.0  # overdue
    short = await node.start_scheduler(tick_s=1.0)
    assert short.seconds_until_due(at("2024-05-01T10:00:40")) == 1.0


async def test_the_loop_fires_when_the_clock_reaches_a_tick(node: Node) -> None:
    scheduler = await node.start_scheduler(tick_s=0.01)
    await scheduler.create(every_minute())
    assert await node.queued() == []
    node.clock.now = at("2024-05-01T10:01:00")
    async with asyncio.timeout(5):
        while not (events := await node.queued()):  # noqa: ASYNC110 - polling the store
            await asyncio.sleep(0.01)
    assert orjson.loads(events[0].payload)["time"] == "2024-05-01T10:01:00Z"
    assert scheduler.get("tick").record.last_fired_at == at("2024-05-01T10:01:00")
