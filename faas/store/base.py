"""Protocols every store backend fills: the only store types other packages import."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from faas.models import AliasConfig, FunctionConfig, LayerVersion, LayerVersionState


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One accepted Event invocation, as kept in the durable queue."""

    request_id: str
    function_name: str
    qualifier: str
    payload: bytes
    enqueued_at: float
    attempts: int = 0  # function-error attempts already made
    trace_id: str = ""
    # Throttles and node-side faults met since the event last ran: its backoff grows with them.
    throttles: int = 0


class FunctionRegistry(Protocol):
    """Function configurations by (name, version)."""

    async def load_functions(self) -> list[FunctionConfig]:
        """Every stored configuration."""
        ...

    async def insert_function(self, config: FunctionConfig) -> None:
        """Store a new function version.

        Raises:
            ResourceConflictException: the (name, version) already exists.
        """
        ...

    async def replace_function(self, config: FunctionConfig, expected_revision: str) -> None:
        """Replace a version's configuration if its stored revision is ``expected_revision``.

        Raises:
            PreconditionFailedException: the stored revision differs.
        """
        ...

    async def delete_function(self, name: str) -> None:
        """Remove every version of a function."""
        ...


class AliasRegistry(Protocol):
    """Published version numbers and aliases."""

    async def next_version_number(self, function_name: str) -> int:
        """Allocate the next version number of a function (never reused)."""
        ...

    async def delete_version(self, function_name: str, version: str) -> None: ...

    async def load_aliases(self) -> list[AliasConfig]: ...

    async def insert_alias(self, alias: AliasConfig) -> None:
        """Raises ResourceConflictException if the alias exists."""
        ...

    async def replace_alias(self, alias: AliasConfig, expected_revision: str) -> None:
        """Raises PreconditionFailedException if the stored revision differs."""
        ...

    async def delete_alias(self, function_name: str, name: str) -> None: ...


@dataclass(frozen=True, slots=True)
class ProvisionedConfig:
    """A PutProvisionedConcurrencyConfig as stored: on a version or an alias."""

    function_name: str
    qualifier: str
    requested: int
    last_modified: str


class ConcurrencyRegistry(Protocol):
    """Reserved and provisioned concurrency; both go when their function is deleted."""

    async def load_reserved(self) -> dict[str, int]: ...

    async def save_reserved(self, function_name: str, reserved: int | None) -> None:
        """Set (or with None remove) a function's reserved concurrency."""

    async def load_provisioned(self) -> list[ProvisionedConfig]: ...

    async def save_provisioned(self, config: ProvisionedConfig) -> None: ...

    async def delete_provisioned(self, function_name: str, qualifier: str) -> None: ...


class DeploymentRegistry(Protocol):
    """Traffic-shifting deployments, as opaque JSON records."""

    async def save_deployment(
        self, deployment_id: str, function_name: str, alias: str, state: str,
        created_at: float, record: bytes,
    ) -> None: ...  # fmt: skip

    async def load_deployments(self) -> list[bytes]: ...


class LayerRegistry(Protocol):
    """Layer versions by (name, version), including deleted and purged ones."""

    async def load_layer_versions(self) -> list[LayerVersion]:
        """Every stored layer version, whatever its state."""
        ...

    async def insert_layer_version(self, layer: LayerVersion) -> None:
        """Store a new layer version.

        Raises:
            ResourceConflictException: the (name, version) already exists.
        """
        ...

    async def set_layer_version_state(
        self, name: str, version: int, state: LayerVersionState
    ) -> None:
        """Move a stored layer version to ``state`` (a no-op if there is no such version)."""
        ...


class EventQueue(Protocol):
    """The durable queue of accepted Event invocations (at-least-once)."""

    async def enqueue(self, event: QueuedEvent) -> None:
        """Return only once the event is durable."""
        ...

    async def lease(self, limit: int, lease_s: float, now: float) -> list[QueuedEvent]:
        """Take up to ``limit`` visible events, hidden for ``lease_s`` seconds."""
        ...

    async def ack(self, request_id: str) -> None:
        """The event is done (succeeded or dropped); remove it."""
        ...

    async def retry(
        self, request_id: str, visible_at: float, attempts: int, throttles: int = 0
    ) -> None:
        """Release a leased event to run again at ``visible_at``, recording its ``attempts``
        (function errors so far) and ``throttles`` (throttles and node faults since it last
        ran); both come back in the QueuedEvent the next ``lease`` returns."""
        ...

    async def release_all_leases(self) -> None:
        """Make every leased event visible again (a fresh node owns nothing)."""
        ...

    async def depth(self) -> int:
        """How many events wait or run."""
        ...


class InvokeConfigRegistry(Protocol):
    """Event invoke configs (PutFunctionEventInvokeConfig) as opaque JSON records."""

    async def load_invoke_configs(self) -> list[tuple[str, str, bytes]]:
        """Every stored (function name, qualifier, record)."""
        ...

    async def save_invoke_config(self, function_name: str, qualifier: str, record: bytes) -> None:
        """Insert or replace the record of (function, qualifier)."""
        ...

    async def delete_invoke_config(self, function_name: str, qualifier: str) -> None: ...


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One message of a dead-letter queue kept in the store."""

    queue: str
    message_id: str
    body: bytes
    attributes: Mapping[str, str]
    sent_at: float


class DeadLetterStore(Protocol):
    """The store's own dead-letter queues, oldest message first."""

    async def put_dead_letter(self, letter: DeadLetter) -> None:
        """Return only once the message is durable."""
        ...

    async def list_dead_letters(self, queue: str, limit: int) -> list[DeadLetter]: ...

    async def count_dead_letters(self, queue: str) -> int: ...

    async def delete_dead_letters(self, queue: str, message_ids: Sequence[str]) -> None:
        """Remove those messages of ``queue`` (ids it does not hold are ignored)."""
        ...
