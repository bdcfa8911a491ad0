"""How one stream batch is retried in place until every record is acked or given up.

Design notes: a stream's records stay in order, so a failed batch blocks the
stream and is retried where it is (Lambda's Kinesis semantics). This class holds
no I/O: the poller asks for the ``current`` sub-batch, invokes it, and reports the
outcome; the answer says which records to ack and which to give up on.

- A function error (or an invalid partial response) with no progress consumes one
  of ``max_retries`` (-1: unlimited); once they are used up, the sub-batch is
  given up on (condition ``RetryAttemptsExhausted``).
- With ``bisect``, a failed sub-batch of more than one record is first split in
  two halves, retried in order; a split does not consume a retry.
- A partial response (``batchItemFailures``) checkpoints at the lowest failed
  record: the records before it are acked and the rest is retried. When the
  checkpoint moved forward the batch made progress, so no retry is consumed.
- ``expire`` gives up on records older than MaximumRecordAgeInSeconds
  (condition ``RecordAgeExceeded``) before each attempt.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from faas.events.sources.base import SourceRecord

RETRY_ATTEMPTS_EXHAUSTED = "RetryAttemptsExhausted"
RECORD_AGE_EXCEEDED = "RecordAgeExceeded"


@dataclass(slots=True)
class _SubBatch:
    records: list[SourceRecord]
    retries: int = 0  # retries consumed by this sub-batch (inherited by its halves)
    invocations: int = 0  # invocations its records took part in


@dataclass(frozen=True, slots=True)
class Settlement:
    """What to do after one attempt: ack these, give up on those (and why)."""

    ack: list[SourceRecord] = field(default_factory=list)
    give_up: list[SourceRecord] = field(default_factory=list)
    condition: str = ""  # RetryAttemptsExhausted or RecordAgeExceeded when giving up
    invocations: int = 0  # approximateInvokeCount of the records given up


class StreamRetry:
    """The plan for one stream batch: the sub-batch to invoke next and how outcomes settle."""

    __slots__ = ("_bisect", "_max_retries", "_pending")

    def __init__(self, records: Sequence[SourceRecord], max_retries: int, bisect: bool) -> None:
        self._pending: deque[_SubBatch] = deque([_SubBatch(list(records))] if records else [])
        self._max_retries = max_retries
        self._bisect = bisect

    @property
    def current(self) -> list[SourceRecord]:
        """The records to invoke next; empty once everything is settled."""
        return self._pending[0].records if self._pending else []

    @property
    def is_done(self) -> bool:
        return not self._pending

    def invoked(self) -> None:
        """The current sub-batch is being invoked (counts toward approximateInvokeCount)."""
        self._pending[0].invocations += 1

    def expire(self, oldest_allowed: float) -> Settlement:
        """Give up on the current records that arrived before ``oldest_allowed``."""
        batch = self._pending[0]
        expired = [record for record in batch.records if record.arrived_at < oldest_allowed]
        if not expired:
            return Settlement()
        batch.records = [record for record in batch.records if record.arrived_at >= oldest_allowed]
        if not batch.records:
            self._pending.popleft()
        return Settlement(give_up=expired, condition=RECORD_AGE_EXCEEDED,
                          invocations=batch.invocations)  # fmt: skip

    def succeeded(self) -> Settlement:
        """The current sub-batch succeeded: ack all of it."""
        batch = self._pending.popleft()
        return Settlement(ack=batch.records)

    def failed(self, first_failed: int = 0) -> Settlement:
        """The current sub-batch failed from record ``first_failed`` on (0: all of it)."""
        batch = self._pending[0]
        done, rest = batch.records[:first_failed], batch.records[first_failed:]
        if done:  # progress: the checkpoint moved, the rest is a new attempt
            batch.records = rest
            return Settlement(ack=done)
        if self._bisect and len(rest) > 1:
            middle = len(rest) // 2
            self._pending.popleft()
            self._pending.extendleft(
                [
                    _SubBatch(rest[middle:], batch.retries, batch.invocations),
                    _SubBatch(rest[:middle], batch.retries, batch.invocations),
                ]
            )
            return Settlement()
        if self._max_retries < 0 or batch.retries < self._max_retries:
            batch.retries += 1
            return Settlement()
        self._pending.popleft()
        return Settlement(give_up=rest, condition=RETRY_ATTEMPTS_EXHAUSTED,
                          invocations=batch.invocations)  # fmt: skip
