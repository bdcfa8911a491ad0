"""The mapping manager: event source mappings' control plane, records and pollers.

Design notes: records are durable (the store) and mirrored in memory; every enabled
mapping has one running ``MappingPoller``. A control-plane change is checked and
stored under one lock, answered at once with a transitional state (Creating,
Enabling, Disabling, Updating, Deleting), and completed by a background
transition: stop the old poller (letting in-flight batches finish), start a new
one if the mapping is enabled, store the settled state (Enabled or Disabled) or
remove the record. Transitions of one mapping run one after another; an update or
delete that arrives while one is running answers ResourceInUseException, as on
Lambda. After a restart, a mapping left in a transitional state settles the same
way (a Deleting one is deleted), so enabled mappings resume polling.

LastProcessingResult is kept in memory as batches finish and stored with the next
change of the record, so batches never write to the store. A deleted function
takes its mappings with it (``function_changed`` is a catalog listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import enum
import logging
import time
import uuid

import orjson

from faas.catalog import FunctionCatalog
from faas.config import Config
from faas.errors import (
    ResourceConflictException,
    ResourceInUseException,
    ResourceNotFoundException,
)
from faas.events import sources
from faas.events.destinations import DestinationDelivery
from faas.events.mappings.batches import PollerContext
from faas.events.mappings.model import (
    EventSourceMapping,
    MappingSettings,
    MappingState,
    apply_settings,
    default_batch_size,
)
from faas.events.mappings.poller import MappingPoller
from faas.events.sources import sqs
from faas.events.sources.base import SourceKind, SourceSpec
from faas.observe.metrics import Metrics
from faas.pool.invoker import Invoker
from faas.store.mappings import SqliteMappingStore
from faas.versions import VersionCatalog

log = logging.getLogger(__name__)

# How long a disable, update or delete lets in-flight batches finish: the longest
# function timeout, plus a margin for settling.
IN_FLIGHT_GRACE_S = 900.0 + 30.0
_BATCH_OUTCOMES = ("ok", "partial", "failed", "not_invoked")


class ManagerState(enum.Enum):
    NEW = "new"  # constructed
    RUNNING = "running"  # serving the control plane, pollers running
    STOPPED = "stopped"  # pollers stopped; no more changes


class MappingManager:
    """Creates, updates and deletes event source mappings and runs their pollers."""

    __slots__ = ("_api", "_catalog", "_context", "_lock", "_mappings", "_pollers", "_state",
                 "_stopping_pollers", "_store", "_transitions", "_versions",
                 "arn_prefix")  # fmt: skip

    def __init__(
        self,
        config: Config,
        store: SqliteMappingStore,
        catalog: FunctionCatalog,
        versions: VersionCatalog,
        invoker: Invoker,
        destinations: DestinationDelivery,
        metrics: Metrics,
    ) -> None:
        self._api = config.api
        self._store = store
        self._catalog = catalog
        self._versions = versions
        self._context = PollerContext(
            config.events, versions, invoker, destinations, metrics, self._record_result
        )
        self._mappings: dict[str, EventSourceMapping] = {}
        self._pollers: dict[str, MappingPoller] = {}
        self._stopping_pollers: set[MappingPoller] = set()
        self._transitions: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self._state = ManagerState.NEW
        self.arn_prefix = (
            f"arn:aws:lambda:{self._api.region}:{self._api.account_id}:event-source-mapping:"
        )

    async def start(self) -> None:
        """Load the mappings; settle those left in transition; start the enabled ones."""
        if self._state is not ManagerState.NEW:
            raise RuntimeError(f"mapping manager cannot start from {self._state.value}")
        self._state = ManagerState.RUNNING
        functions = set(self._catalog.names())
        for raw in await self._store.load_mappings():
            mapping = EventSourceMapping.from_record(orjson.loads(raw))
            if mapping.function_name not in functions:  # its function went while we were down
                mapping = dataclasses.replace(mapping, state=MappingState.DELETING)
            elif not mapping.state.is_transitional:
                target = MappingState.ENABLING if mapping.enabled else MappingState.DISABLING
                mapping = dataclasses.replace(mapping, state=target)
            self._mappings[mapping.uuid] = mapping
            self._begin_transition(mapping.uuid)

    async def stop(self, drain_timeout_s: float) -> None:
        """Stop every poller, giving in-flight batches ``drain_timeout_s`` to finish."""
        if self._state is not ManagerState.RUNNING:
            self._state = ManagerState.STOPPED
            return
        self._state = ManagerState.STOPPED
        transitions = list(self._transitions.values())
        for task in transitions:
            task.cancel()
        await asyncio.gather(*transitions, return_exceptions=True)
        pollers = [*self._pollers.values(), *self._stopping_pollers]
        self._pollers.clear()
        self._stopping_pollers.clear()
        await asyncio.gather(*(poller.stop(drain_timeout_s) for poller in pollers))

    # --- reading --------------------------------------------------------------------------

    def get(self, mapping_uuid: str) -> EventSourceMapping:
        """Raises ResourceNotFoundException for an unknown UUID."""
        mapping = self._mappings.get(mapping_uuid)
        if mapping is None:
            raise ResourceNotFoundException("The resource you requested does not exist.")
        return mapping

    def matching(
        self, function_name: str | None, qualifier: str | None, event_source_arn: str | None
    ) -> list[EventSourceMapping]:
        """Mappings of a function (and qualifier, if given) and/or of one source."""
        return [
            mapping
            for mapping in self._mappings.values()
            if (function_name is None or mapping.function_name == function_name)
            and (qualifier is None or mapping.qualifier == qualifier)
            and (event_source_arn is None or mapping.event_source_arn == event_source_arn)
        ]

    def function_arn(self, mapping: EventSourceMapping) -> str:
        return self._catalog.function_arn(mapping.function_name, mapping.qualifier)

    def mapping_arn(self, mapping: EventSourceMapping) -> str:
        return self.arn_prefix + mapping.uuid

    # --- changing -------------------------------------------------------------------------

    async def create(
        self,
        function_name: str,
        qualifier: str | None,
        event_source_arn: str,
        settings: MappingSettings,
    ) -> EventSourceMapping:
        """Store a new mapping (state Creating) and start it in the background.

        Raises:
            ResourceNotFoundException: no such function, version or alias.
            InvalidParameterValueException: the source or a setting is refused.
            ResourceConflictException: this source already maps to this function.
        """
        async with self._lock:
            self._require_running()
            self._versions.describe(function_name, qualifier)
            await sources.load_module(event_source_arn)  # off the loop: imports take ~0.2 s
            mapping_uuid = str(uuid.uuid4())
            probe = SourceSpec(
                address=event_source_arn, mapping_uuid=mapping_uuid, function_name=function_name,
                region=self._api.region, account_id=self._api.account_id,
                starting_position=settings.starting_position or "LATEST",
            )  # fmt: skip
            kind = sources.validate(probe)
            mapping = EventSourceMapping(
                uuid=mapping_uuid,
                function_name=function_name,
                qualifier=qualifier,
                event_source_arn=event_source_arn,
                source_kind=kind,
                enabled=True,
                state=MappingState.CREATING,
                last_modified=time.time(),
                batch_size=default_batch_size(kind),
                starting_position="LATEST" if kind is SourceKind.STREAM else None,
            )
            mapping = self._checked(mapping, settings)
            self._check_unique(mapping)
            await self._save(mapping)
            self._mappings[mapping.uuid] = mapping
            self._begin_transition(mapping.uuid)
            return mapping

    async def update(
        self,
        mapping_uuid: str,
        function: tuple[str, str | None] | None,
        settings: MappingSettings,
    ) -> EventSourceMapping:
        """Change a mapping's function or settings; its poller restarts in the background.

        Raises:
            ResourceNotFoundException: no such mapping, or no such function.
            ResourceInUseException: the mapping is in a transition.
            InvalidParameterValueException: a setting is refused.
            ResourceConflictException: the new function already has a mapping of the source.
        """
        async with self._lock:
            self._require_running()
            current = self._idle_mapping(mapping_uuid, "update")
            updated = current
            if function is not None:
                self._versions.describe(*function)
                updated = dataclasses.replace(
                    updated, function_name=function[0], qualifier=function[1]
                )
            updated = self._checked(updated, settings)
            if function is not None:
                self._check_unique(updated)
            if updated.enabled == current.enabled:
                state = MappingState.UPDATING
            else:
                state = MappingState.ENABLING if updated.enabled else MappingState.DISABLING
            updated = dataclasses.replace(updated, state=state, last_modified=time.time())
            await self._save(updated)
            self._mappings[mapping_uuid] = updated
            self._begin_transition(mapping_uuid)
            return updated

    async def delete(self, mapping_uuid: str) -> EventSourceMapping:
        """Mark a mapping Deleting; its poller stops and its record goes in the background.

        Raises:
            ResourceNotFoundException: no such mapping.
            ResourceInUseException: the mapping is in a transition.
        """
        async with self._lock:
            self._require_running()
            current = self._idle_mapping(mapping_uuid, "delete")
            deleting = dataclasses.replace(current, state=MappingState.DELETING)
            await self._save(deleting)
            self._mappings[mapping_uuid] = deleting
            self._begin_transition(mapping_uuid)
            return deleting

    def function_changed(self, function_name: str, version: str | None) -> None:
        """Catalog listener: a deleted function (``version`` None) takes its mappings along."""
        if version is not None or self._state is not ManagerState.RUNNING:
            return
        for mapping in self.matching(function_name, None, None):
            if mapping.state is not MappingState.DELETING:
                self._mappings[mapping.uuid] = dataclasses.replace(
                    mapping, state=MappingState.DELETING
                )
                self._begin_transition(mapping.uuid)

    def _require_running(self) -> None:
        if self._state is not ManagerState.RUNNING:
            raise RuntimeError("mapping manager is not running")

    def _idle_mapping(self, mapping_uuid: str, operation: str) -> EventSourceMapping:
        mapping = self.get(mapping_uuid)
        if mapping.state.is_transitional:
            raise ResourceInUseException(
                f"Cannot {operation} the event source mapping {mapping_uuid} because it is "
                f"in use: its state is {mapping.state.value}. Try again once it is Enabled "
                "or Disabled."
            )
        return mapping

    def _checked(
        self, mapping: EventSourceMapping, settings: MappingSettings
    ) -> EventSourceMapping:
        address = mapping.event_source_arn
        is_sqs = address.startswith("arn:aws:sqs:")
        updated = apply_settings(mapping, settings, is_sqs, is_sqs and sqs.is_fifo(address))
        if updated.on_failure_destination:
            self._context.destinations.validate_target(updated.on_failure_destination)
        return updated

    def _check_unique(self, mapping: EventSourceMapping) -> None:
        for other in self._mappings.values():
            if (
                other.uuid != mapping.uuid
                and other.state is not MappingState.DELETING
                and other.event_source_arn == mapping.event_source_arn
                and other.function_name == mapping.function_name
                and other.qualifier == mapping.qualifier
            ):
                raise ResourceConflictException(
                    f"An event source mapping with event source ({mapping.event_source_arn}) "
                    f"and function ({mapping.function_name}) already exists. Please update or "
                    f"delete the existing mapping with UUID {other.uuid}"
                )

    async def _save(self, mapping: EventSourceMapping) -> None:
        await self._store.save_mapping(
            mapping.uuid, mapping.function_name, orjson.dumps(mapping.to_record())
        )

    def _record_result(self, mapping_uuid: str, result: str) -> None:
        mapping = self._mappings.get(mapping_uuid)
        if mapping is not None and mapping.last_processing_result != result:
            self._mappings[mapping_uuid] = dataclasses.replace(
                mapping, last_processing_result=result
            )

    # --- transitions ----------------------------------------------------------------------

    def _begin_transition(self, mapping_uuid: str) -> None:
        previous = self._transitions.get(mapping_uuid)
        # A fresh context: the pollers it starts must not log the creating request's id forever.
        task = asyncio.create_task(
            self._transition(mapping_uuid, previous),
            name=f"mapping-{mapping_uuid}-transition",
            context=contextvars.Context(),
        )
        self._transitions[mapping_uuid] = task
        task.add_done_callback(lambda done: self._transition_ended(mapping_uuid, done))

    def _transition_ended(self, mapping_uuid: str, task: asyncio.Task[None]) -> None:
        if self._transitions.get(mapping_uuid) is task:
            del self._transitions[mapping_uuid]
        if not task.cancelled() and task.exception() is not None:
            log.error("mapping %s: transition failed", mapping_uuid, exc_info=task.exception())

    async def _transition(self, mapping_uuid: str, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            with contextlib.suppress(Exception):
                await previous
        poller = self._pollers.pop(mapping_uuid, None)
        if poller is not None:
            self._stopping_pollers.add(poller)
            await poller.stop(IN_FLIGHT_GRACE_S)
            self._stopping_pollers.discard(poller)
        mapping = self._mappings.get(mapping_uuid)
        if mapping is None:  # an earlier transition of this mapping deleted it
            return
        if poller is not None and poller.mapping.function_name != mapping.function_name:
            self._forget_metrics(poller.mapping)  # series of the function it no longer invokes
        if mapping.state is MappingState.DELETING:
            await self._store.delete_mapping(mapping_uuid)
            del self._mappings[mapping_uuid]
            self._forget_metrics(mapping)
            return
        if mapping.enabled:
            poller = MappingPoller(mapping, self._spec(mapping), self.function_arn(mapping),
                                   self._context)  # fmt: skip
            await poller.start()
            self._pollers[mapping_uuid] = poller
        current = self._mappings[mapping_uuid]
        if current.state is MappingState.DELETING:  # deleted meanwhile: the next transition
            return
        settled = MappingState.ENABLED if mapping.enabled else MappingState.DISABLED
        mapping = dataclasses.replace(current, state=settled)
        self._mappings[mapping_uuid] = mapping
        await self._save(mapping)

    def _spec(self, mapping: EventSourceMapping) -> SourceSpec:
        return SourceSpec(
            address=mapping.event_source_arn,
            mapping_uuid=mapping.uuid,
            function_name=mapping.function_name,
            region=self._api.region,
            account_id=self._api.account_id,
            starting_position=mapping.starting_position or "LATEST",
            batch_size=mapping.batch_size,
            max_batches_in_flight=mapping.concurrency,
            sqs_endpoint_url=self._context.config.sqs_endpoint_url,
        )

    def _forget_metrics(self, mapping: EventSourceMapping) -> None:
        metrics = self._context.metrics
        labels = (mapping.uuid, mapping.function_name)
        metrics.event_source_records.remove(*labels)
        metrics.event_source_records_discarded.remove(*labels)
        metrics.event_source_iterator_age.remove(*labels)
        for outcome in _BATCH_OUTCOMES:
            metrics.event_source_batches.remove(*labels, outcome)
