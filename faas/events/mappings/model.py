"""The event source mapping record, its states, and the rules its settings obey.

Design notes: a mapping is stored as one immutable record; every change makes a
new one. ``enabled`` is what the user asked for, ``state`` where the mapping is on
its way there (Lambda's plain strings: Creating, Enabling, Enabled, Disabling,
Disabled, Updating, Deleting). Requested changes arrive as ``MappingSettings``
(None: not given) and are merged into a record by ``apply_settings``, which knows
which members suit which kind of source: queue sources (SQS, RabbitMQ, NATS) take
``ScalingConfig``; stream sources (Redis Streams, modelled on Kinesis) take
StartingPosition, MaximumRetryAttempts, MaximumRecordAgeInSeconds,
BisectBatchOnFunctionError and an on-failure destination.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from faas.errors import InvalidParameterValueException
from faas.events.sources.base import SourceKind

REPORT_BATCH_ITEM_FAILURES = "ReportBatchItemFailures"
USER_INITIATED = "USER_INITIATED"
NO_RECORDS_PROCESSED = "No records processed"
PROCESSING_OK = "OK"
# Batch loops of a queue source without ScalingConfig (Lambda starts with five).
DEFAULT_QUEUE_CONCURRENCY = 5
DEFAULT_QUEUE_BATCH_SIZE = 10
DEFAULT_STREAM_BATCH_SIZE = 100
SQS_BATCH_WITHOUT_WINDOW_MAX = 10
SQS_FIFO_BATCH_MAX = 10
STARTING_POSITIONS = ("TRIM_HORIZON", "LATEST")
MINIMUM_RECORD_AGE_S = 60
UNLIMITED = -1  # MaximumRetryAttempts / MaximumRecordAgeInSeconds: no limit


class MappingState(enum.Enum):
    CREATING = "Creating"  # stored; its poller is being started
    ENABLING = "Enabling"  # re-enabled; its poller is being started
    ENABLED = "Enabled"  # polling
    DISABLING = "Disabling"  # its poller is finishing in-flight batches
    DISABLED = "Disabled"  # stored, not polling
    UPDATING = "Updating"  # its poller is being restarted with new settings
    DELETING = "Deleting"  # its poller is stopping; then the record goes

    @property
    def is_transitional(self) -> bool:
        return self not in (MappingState.ENABLED, MappingState.DISABLED)


@dataclass(frozen=True, slots=True)
class MappingSettings:
    """The tunable members of a Create/UpdateEventSourceMapping body; None: not given."""

    enabled: bool | None = None
    batch_size: int | None = None
    maximum_batching_window_s: int | None = None
    function_response_types: tuple[str, ...] | None = None
    scaling_given: bool = False  # ScalingConfig was present ({} clears MaximumConcurrency)
    maximum_concurrency: int | None = None
    starting_position: str | None = None
    maximum_retry_attempts: int | None = None
    maximum_record_age_s: int | None = None
    bisect_batch_on_function_error: bool | None = None
    on_failure_destination: str | None = None  # "" clears it
    tags: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class EventSourceMapping:
    """One mapping as stored."""

    uuid: str
    function_name: str
    qualifier: str | None  # version or alias the mapping invokes; None: unqualified
    event_source_arn: str
    source_kind: SourceKind
    enabled: bool
    state: MappingState
    last_modified: float  # epoch seconds (an ESM's LastModified is a number on the wire)
    batch_size: int
    maximum_batching_window_s: int = 0
    function_response_types: tuple[str, ...] = ()
    maximum_concurrency: int | None = None  # queue sources: ScalingConfig.MaximumConcurrency
    starting_position: str | None = None  # stream sources
    maximum_retry_attempts: int = UNLIMITED  # stream sources
    maximum_record_age_s: int = UNLIMITED  # stream sources
    bisect_batch_on_function_error: bool = False  # stream sources
    on_failure_destination: str = ""  # stream sources; "" none
    state_transition_reason: str = USER_INITIATED
    last_processing_result: str = NO_RECORDS_PROCESSED
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_stream(self) -> bool:
        return self.source_kind is SourceKind.STREAM

    @property
    def reports_batch_item_failures(self) -> bool:
        return REPORT_BATCH_ITEM_FAILURES in self.function_response_types

    @property
    def concurrency(self) -> int:
        """Batch loops at most: one for a stream (records stay in order)."""
        if self.is_stream:
            return 1
        return self.maximum_concurrency or DEFAULT_QUEUE_CONCURRENCY

    def to_record(self) -> dict[str, Any]:
        record = dataclasses.asdict(self)
        record["source_kind"] = self.source_kind.value
        record["state"] = self.state.value
        record["function_response_types"] = list(self.function_response_types)
        record["tags"] = dict(self.tags)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> EventSourceMapping:
        fields = dict(record)
        fields["source_kind"] = SourceKind(fields["source_kind"])
        fields["state"] = MappingState(fields["state"])
        fields["function_response_types"] = tuple(fields.get("function_response_types", ()))
        return cls(**fields)


def _unsupported(member: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        f"Unsupported {member} parameter for given event source mapping type."
    )


def _check_kind(kind: SourceKind, settings: MappingSettings) -> None:
    if kind is SourceKind.QUEUE:
        stream_only = (
            ("StartingPosition", settings.starting_position),
            ("MaximumRetryAttempts", settings.maximum_retry_attempts),
            ("MaximumRecordAgeInSeconds", settings.maximum_record_age_s),
            ("BisectBatchOnFunctionError", settings.bisect_batch_on_function_error),
            ("DestinationConfig", settings.on_failure_destination or None),
        )
        for member, value in stream_only:
            if value is not None:
                raise _unsupported(member)
    elif settings.scaling_given:
        raise _unsupported("ScalingConfig")


def apply_settings(
    mapping: EventSourceMapping, settings: MappingSettings, is_sqs: bool, is_fifo: bool
) -> EventSourceMapping:
    """``mapping`` with ``settings`` merged in, checked against the source's rules.

    Raises:
        InvalidParameterValueException: a member does not suit this kind of source, or
            the combination breaks a rule (SQS batches over 10 need a batching window).
    """
    _check_kind(mapping.source_kind, settings)
    changes: dict[str, Any] = {}
    for name in ("enabled", "batch_size", "maximum_batching_window_s", "function_response_types",
                 "starting_position", "maximum_retry_attempts", "maximum_record_age_s",
                 "bisect_batch_on_function_error", "on_failure_destination", "tags"):  # fmt: skip
        value = getattr(settings, name)
        if value is not None:
            changes[name] = value
    if settings.scaling_given:
        changes["maximum_concurrency"] = settings.maximum_concurrency
    updated = dataclasses.replace(mapping, **changes)
    if updated.starting_position not in (None, *STARTING_POSITIONS):
        raise InvalidParameterValueException(
            f"StartingPosition {updated.starting_position} is not supported by this node; "
            f"use one of {', '.join(STARTING_POSITIONS)}."
        )
    if 0 <= updated.maximum_record_age_s < MINIMUM_RECORD_AGE_S:
        raise InvalidParameterValueException(
            f"MaximumRecordAgeInSeconds must be -1 or between {MINIMUM_RECORD_AGE_S} and 604800."
        )
    if is_sqs:
        _check_sqs_batch(updated, is_fifo)
    return updated


def _check_sqs_batch(mapping: EventSourceMapping, is_fifo: bool) -> None:
    if is_fifo and mapping.batch_size > SQS_FIFO_BATCH_MAX:
        raise InvalidParameterValueException(
            f"Batch size for FIFO queues must be at most {SQS_FIFO_BATCH_MAX}."
        )
    if mapping.batch_size > SQS_BATCH_WITHOUT_WINDOW_MAX and mapping.maximum_batching_window_s < 1:
        raise InvalidParameterValueException(
            "Maximum batch window in seconds must be greater than 0 if maximum batch size is "
            f"greater than {SQS_BATCH_WITHOUT_WINDOW_MAX}"
        )


def default_batch_size(kind: SourceKind) -> int:
    return DEFAULT_STREAM_BATCH_SIZE if kind is SourceKind.STREAM else DEFAULT_QUEUE_BATCH_SIZE
