"""Event invoke configs: the retry, age and destination settings of asynchronous invocation
per function, version or alias, and the policy that applies to one event.

Design notes: like the catalogs, configs are served from memory and written to the
store first; a change replaces one frozen value in a dict. Members a caller never
set stay unset (and are reported as such), and the defaults apply when an event
runs. An event is governed by exactly one config, chosen by the qualifier it was
invoked with: the alias's config for an alias invoke, else the config of the
version that runs, else the `$LATEST` (unqualified) config, else the defaults.
The chosen config applies whole: an unset member takes the default, not the value
of a less specific config. A deleted function takes its configs with it (the
store deletes the rows in the same transaction); a deleted alias or version takes
its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from faas.errors import ResourceNotFoundException
from faas.models import LATEST
from faas.store.base import InvokeConfigRegistry
from faas.versions import VersionCatalog

DEFAULT_MAXIMUM_RETRY_ATTEMPTS = 2
DEFAULT_MAXIMUM_EVENT_AGE_S = 21_600


@dataclass(frozen=True, slots=True)
class EventInvokeConfig:
    """One FunctionEventInvokeConfig, as stored; None and "" mean "not set"."""

    function_name: str
    qualifier: str  # `$LATEST` (also for the unqualified function), a version or an alias
    last_modified: float  # epoch seconds, as the API reports it
    maximum_retry_attempts: int | None = None
    maximum_event_age_s: int | None = None
    on_success: str = ""  # destination ARN
    on_failure: str = ""  # destination ARN

    def to_record(self) -> bytes:
        return orjson.dumps(dataclasses.asdict(self))

    @classmethod
    def from_record(cls, record: bytes) -> EventInvokeConfig:
        values: dict[str, Any] = orjson.loads(record)
        return cls(**{name: values[name] for name in cls.__dataclass_fields__ if name in values})


@dataclass(frozen=True, slots=True)
class AsyncPolicy:
    """What governs one event: its config's members with the defaults filled in."""

    retry_attempts: int = DEFAULT_MAXIMUM_RETRY_ATTEMPTS
    event_age_s: int = DEFAULT_MAXIMUM_EVENT_AGE_S
    on_success: str = ""
    on_failure: str = ""

    @classmethod
    def of(cls, config: EventInvokeConfig | None) -> AsyncPolicy:
        if config is None:
            return cls()
        return cls(
            retry_attempts=_or(config.maximum_retry_attempts, DEFAULT_MAXIMUM_RETRY_ATTEMPTS),
            event_age_s=_or(config.maximum_event_age_s, DEFAULT_MAXIMUM_EVENT_AGE_S),
            on_success=config.on_success,
            on_failure=config.on_failure,
        )


def _or(value: int | None, default: int) -> int:
    return default if value is None else value


def _qualifier_order(qualifier: str) -> tuple[int, int, str]:
    """`$LATEST` first, then versions by number, then aliases by name."""
    if qualifier == LATEST:
        return (0, 0, "")
    if qualifier.isdigit():
        return (1, int(qualifier), "")
    return (2, 0, qualifier)


class InvokeConfigs:
    """Event invoke configs by (function, qualifier), in memory over the store."""

    __slots__ = ("_configs", "_lock", "_registry", "_versions")

    def __init__(self, registry: InvokeConfigRegistry, versions: VersionCatalog) -> None:
        self._registry = registry
        self._versions = versions
        self._configs: dict[tuple[str, str], EventInvokeConfig] = {}
        self._lock = asyncio.Lock()  # serialises read-modify-write updates

    async def start(self) -> None:
        for _, _, record in await self._registry.load_invoke_configs():
            config = EventInvokeConfig.from_record(record)
            self._configs[(config.function_name, config.qualifier)] = config

    async def stop(self) -> None:
        self._configs.clear()

    def _check_target(self, function_name: str, qualifier: str) -> None:
        """Raises ResourceNotFoundException unless the function and qualifier exist."""
        self._versions.describe(function_name, None if qualifier == LATEST else qualifier)

    def _not_configured(self, arn: str) -> ResourceNotFoundException:
        return ResourceNotFoundException(f"The function {arn} doesn't have an EventInvokeConfig")

    def get(self, function_name: str, qualifier: str, arn: str) -> EventInvokeConfig:
        """The config of (function, qualifier); ``arn`` names it in the error.

        Raises:
            ResourceNotFoundException: no such function or qualifier, or no config.
        """
        self._check_target(function_name, qualifier)
        config = self._configs.get((function_name, qualifier))
        if config is None:
            raise self._not_configured(arn)
        return config

    def list(self, function_name: str) -> list[EventInvokeConfig]:
        """Every config of a function whose qualifier still exists, `$LATEST` first."""
        self._check_target(function_name, LATEST)
        found = []
        for (name, qualifier), config in self._configs.items():
            if name != function_name:
                continue
            try:
                self._check_target(name, qualifier)
            except ResourceNotFoundException:
                continue  # a deleted version's config: its row went with the version
            found.append(config)
        return sorted(found, key=lambda config: _qualifier_order(config.qualifier))

    async def put(self, config: EventInvokeConfig) -> EventInvokeConfig:
        """Store ``config``, replacing any config of its (function, qualifier)."""
        async with self._lock:
            self._check_target(config.function_name, config.qualifier)
            await self._registry.save_invoke_config(
                config.function_name, config.qualifier, config.to_record()
            )
            self._configs[(config.function_name, config.qualifier)] = config
            return config

    async def update(
        self, function_name: str, qualifier: str, arn: str, changes: Mapping[str, Any]
    ) -> EventInvokeConfig:
        """Change the given members of an existing config; the others keep their values.

        Raises:
            ResourceNotFoundException: no such function or qualifier, or no config.
        """
        async with self._lock:
            current = self.get(function_name, qualifier, arn)
            updated = dataclasses.replace(current, last_modified=time.time(), **changes)
            await self._registry.save_invoke_config(function_name, qualifier, updated.to_record())
            self._configs[(function_name, qualifier)] = updated
            return updated

    async def delete(self, function_name: str, qualifier: str, arn: str) -> None:
        """Raises ResourceNotFoundException if there is no such config."""
        async with self._lock:
            self.get(function_name, qualifier, arn)
            await self._registry.delete_invoke_config(function_name, qualifier)
            del self._configs[(function_name, qualifier)]

    def policy_for(
        self, function_name: str, invoked_qualifier: str, executed_version: str
    ) -> AsyncPolicy:
        """The policy of an event invoked with ``invoked_qualifier`` that runs
        ``executed_version``: the alias's, else the version's, else `$LATEST`'s config."""
        for qualifier in (invoked_qualifier, executed_version, LATEST):
            config = self._configs.get((function_name, qualifier))
            if config is not None:
                return AsyncPolicy.of(config)
        return AsyncPolicy()

    def function_changed(self, function_name: str, version: str | None) -> None:
        """Catalog listener: a deleted function (``version`` None) loses its configs."""
        if version is None:
            for key in [key for key in self._configs if key[0] == function_name]:
                del self._configs[key]

    def alias_changed(self, function_name: str, alias: str) -> None:
        """Alias listener: a deleted alias loses its config (the store row went with it)."""
        try:
            self._versions.get_alias(function_name, alias)
        except ResourceNotFoundException:
            self._configs.pop((function_name, alias), None)
