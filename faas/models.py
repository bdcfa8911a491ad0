"""Frozen value types shared by the packages: function configurations, layers and invocations."""

from __future__ import annotations

import base64
import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

LATEST = "$LATEST"


class InvocationType(enum.StrEnum):
    """How the caller wants an invocation run (the X-Amz-Invocation-Type header)."""

    REQUEST_RESPONSE = "RequestResponse"  # wait for the result
    EVENT = "Event"  # queue durably, answer 202, run later
    DRY_RUN = "DryRun"  # validate only, answer 204


@dataclass(frozen=True, slots=True)
class FunctionConfig:
    """The configuration of one function version, as stored and as served.

    `$LATEST` is the only mutable version; every mutation produces a new
    FunctionConfig with a fresh ``revision_id``.
    """

    name: str
    runtime: str
    role: str
    handler: str
    code_sha256_hex: str
    code_size: int
    revision_id: str
    last_modified: str
    version: str = LATEST
    description: str = ""
    timeout_s: int = 3
    memory_mb: int = 128
    environment: Mapping[str, str] = field(default_factory=dict)
    tags: Mapping[str, str] = field(default_factory=dict)
    architectures: tuple[str, ...] = ("x86_64",)
    ephemeral_storage_mb: int = 512
    tracing_mode: str = "PassThrough"
    dead_letter_target_arn: str = ""
    log_format: str = "Text"
    layers: tuple[str, ...] = ()  # layer version ARNs, in the order they are presented
    snap_start: str = "None"  # SnapStart.ApplyOn: "PublishedVersions" or "None"

    @property
    def uses_snap_start(self) -> bool:
        """A published version of a function with SnapStart on PublishedVersions."""
        return self.snap_start == "PublishedVersions" and self.version != LATEST

    @property
    def code_sha256(self) -> str:
        """The CodeSha256 Lambda reports: base64 of the raw SHA-256 digest of the zip."""
        return base64.b64encode(bytes.fromhex(self.code_sha256_hex)).decode()

    def to_record(self) -> dict[str, Any]:
        """A plain dict for the store."""
        record = asdict(self)
        record["environment"] = dict(self.environment)
        record["tags"] = dict(self.tags)
        record["architectures"] = list(self.architectures)
        record["layers"] = list(self.layers)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FunctionConfig:
        """Rebuild from a dict made by ``to_record`` (unknown keys are ignored)."""
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        known["architectures"] = tuple(known.get("architectures", ("x86_64",)))
        known["layers"] = tuple(known.get("layers", ()))
        return cls(**known)


class LayerVersionState(enum.StrEnum):
    """Where a layer version is in its life; versions are never renumbered."""

    ACTIVE = "active"  # listed, and may be added to functions
    DELETED = "deleted"  # deleted by its owner; kept while functions may still reference it
    PURGED = "purged"  # code released; the record only keeps its number from being reused


@dataclass(frozen=True, slots=True)
class LayerVersion:
    """One immutable version of a Lambda layer."""

    name: str
    version: int
    code_sha256_hex: str
    code_size: int  # bytes of the zip
    unzipped_size: int  # bytes once unpacked (counted against the 250 MB function cap)
    created_date: str
    description: str = ""
    compatible_runtimes: tuple[str, ...] = ()
    compatible_architectures: tuple[str, ...] = ()
    license_info: str | None = None
    state: LayerVersionState = LayerVersionState.ACTIVE

    @property
    def code_sha256(self) -> str:
        """The CodeSha256 Lambda reports: base64 of the raw SHA-256 digest of the zip."""
        return base64.b64encode(bytes.fromhex(self.code_sha256_hex)).decode()

    @property
    def is_active(self) -> bool:
        return self.state is LayerVersionState.ACTIVE

    def to_record(self) -> dict[str, Any]:
        """A plain dict for the store."""
        record = asdict(self)
        record["compatible_runtimes"] = list(self.compatible_runtimes)
        record["compatible_architectures"] = list(self.compatible_architectures)
        record["state"] = self.state.value
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LayerVersion:
        """Rebuild from a dict made by ``to_record`` (unknown keys are ignored)."""
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        known["compatible_runtimes"] = tuple(known.get("compatible_runtimes", ()))
        known["compatible_architectures"] = tuple(known.get("compatible_architectures", ()))
        known["state"] = LayerVersionState(known.get("state", LayerVersionState.ACTIVE))
        return cls(**known)


@dataclass(frozen=True, slots=True)
class InvocationRequest:
    """One invocation handed from the front door or the event queue to the pool."""

    request_id: str
    function: FunctionConfig
    payload: bytes
    invoked_arn: str
    trace_id: str
    client_context: str | None = None  # decoded JSON text
    wants_log_tail: bool = False
    is_event: bool = False
    alias: str | None = None  # the alias invoked, if any (for metrics)


@dataclass(frozen=True, slots=True)
class InvocationResult:
    """What came back from an environment, ready to be answered or recorded."""

    request_id: str
    payload: bytes
    executed_version: str
    function_error: str | None = None  # None, or "Unhandled"
    error_type: str | None = None
    log_tail: bytes = b""
    duration_ms: float = 0.0
    init_duration_ms: float | None = None
    max_memory_mb: int = 0
    # Where the node spent the time, in ms (schedule, spawn, runtime_init, function_init, invoke).
    timings: tuple[tuple[str, float], ...] = ()

    @property
    def is_error(self) -> bool:
        return self.function_error is not None


@dataclass(frozen=True, slots=True)
class AliasConfig:
    """An alias: a name for one published version, optionally routing a weight elsewhere."""

    function_name: str
    name: str
    function_version: str
    revision_id: str
    description: str = ""
    # At most one extra version and the share (0.0-1.0) of invocations it receives.
    additional_version_weights: Mapping[str, float] = field(default_factory=dict)

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["additional_version_weights"] = dict(self.additional_version_weights)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> AliasConfig:
        known = {name: record[name] for name in cls.__dataclass_fields__ if name in record}
        return cls(**known)

    def versions(self) -> set[str]:
        """Every version this alias routes to."""
        return {self.function_version, *self.additional_version_weights}
