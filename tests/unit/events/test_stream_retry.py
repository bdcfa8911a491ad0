"""How a stream batch is retried in place, bisected, checkpointed and given up on."""

from __future__ import annotations

from faas.events.mappings.stream_retry import (
    RECORD_AGE_EXCEEDED,
    RETRY_ATTEMPTS_EXHAUSTED,
    StreamRetry,
)
from faas.events.sources.base import SourceRecord


def _records(count: int, arrived_at: float = 1000.0) -> list[SourceRecord]:
    return [SourceRecord(f"{n}-0", {"n": n}, arrived_at + n) for n in range(count)]


def _ids(records: list[SourceRecord]) -> list[str]:
    return [record.item_id for record in records]


def test_success_acks_the_whole_batch() -> None:
    records = _records(3)
    plan = StreamRetry(records, max_retries=-1, bisect=False)
    assert plan.current == records
    plan.invoked()
    settlement = plan.succeeded()
    assert settlement.ack == records
    assert not settlement.give_up
    assert plan.is_done and plan.current == []


def test_retries_until_the_limit_then_gives_up() -> None:
    records = _records(2)
    plan = StreamRetry(records, max_retries=2, bisect=False)
    for _ in range(2):  # the first attempt and the first retry fail; a retry remains
        plan.invoked()
        settlement = plan.failed()
        assert not settlement.ack and not settlement.give_up
        assert plan.current == records
    plan.invoked()
    settlement = plan.failed()
    assert settlement.give_up == records
    assert settlement.condition == RETRY_ATTEMPTS_EXHAUSTED
    assert settlement.invocations == 3
    assert not settlement.ack
    assert plan.is_done


def test_unlimited_retries_never_give_up() -> None:
    plan = StreamRetry(_records(1), max_retries=-1, bisect=False)
    for _ in range(50):
        plan.invoked()
        assert not plan.failed().give_up
    assert not plan.is_done


def test_bisect_splits_without_using_retries() -> None:
    records = _records(4)
    plan = StreamRetry(records, max_retries=0, bisect=True)
    plan.invoked()
    assert plan.failed().give_up == []  # split, not given up, although no retry is allowed
    assert _ids(plan.current) == ["0-0", "1-0"]
    plan.invoked()
    assert plan.succeeded().ack == records[:2]
    assert _ids(plan.current) == ["2-0", "3-0"]
    plan.invoked()
    plan.failed()  # split again
    assert _ids(plan.current) == ["2-0"]
    plan.invoked()
    assert plan.succeeded().ack == records[2:3]
    plan.invoked()
    settlement = plan.failed()  # one record left and no retries: the culprit is isolated
    assert settlement.give_up == records[3:]
    assert settlement.condition == RETRY_ATTEMPTS_EXHAUSTED
    assert settlement.invocations == 3  # the whole batch, its second half, then alone
    assert plan.is_done


def test_partial_failure_checkpoints_at_the_lowest_failed_record() -> None:
    records = _records(5)
    plan = StreamRetry(records, max_retries=0, bisect=False)
    plan.invoked()
    settlement = plan.failed(first_failed=2)
    assert settlement.ack == records[:2]  # before the checkpoint: done
    assert not settlement.give_up  # progress was made: no retry consumed
    assert plan.current == records[2:]
    plan.invoked()
    settlement = plan.failed(first_failed=0)  # no progress, no retries left
    assert settlement.give_up == records[2:]
    assert plan.is_done


def test_records_older_than_the_maximum_age_are_given_up_first() -> None:
    records = _records(4, arrived_at=100.0)  # arrived at 100, 101, 102, 103
    plan = StreamRetry(records, max_retries=-1, bisect=False)
    settlement = plan.expire(oldest_allowed=102.0)
    assert settlement.give_up == records[:2]
    assert settlement.condition == RECORD_AGE_EXCEEDED
    assert plan.current == records[2:]
    assert plan.expire(oldest_allowed=50.0).give_up == []
    assert plan.expire(oldest_allowed=1000.0).give_up == records[2:]
    assert plan.is_done


def test_an_empty_batch_is_done_at_once() -> None:
    assert StreamRetry([], max_retries=-1, bisect=True).is_done
