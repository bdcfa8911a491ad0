"""Reserved and provisioned concurrency: the control plane's records and Lambda's rules.

Design notes: the records are durable (the store) and mirrored in memory; the pool
manager enforces them. Reserved concurrency is function-wide and may never leave less
than ``UNRESERVED_MINIMUM`` of the account limit to the other functions. Provisioned
concurrency is set on a published version or an alias; an alias's allocation follows
its routing (the main version gets its share, each additional version its weight),
so repointing or shifting an alias moves the environments with it. A version may be
covered by only one configuration.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from faas.catalog import FunctionCatalog, lambda_timestamp
from faas.errors import (
    InvalidParameterValueException,
    ProvisionedConcurrencyConfigNotFoundException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from faas.models import LATEST
from faas.pool.concurrency_limits import UNRESERVED_MINIMUM
from faas.pool.manager import PoolManager
from faas.store.base import ConcurrencyRegistry, ProvisionedConfig
from faas.versions import VersionCatalog

STATUS_IN_PROGRESS = "IN_PROGRESS"
STATUS_READY = "READY"
STATUS_FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class ProvisionedState:
    """A provisioned configuration as GetProvisionedConcurrencyConfig reports it."""

    config: ProvisionedConfig
    allocated: int
    available: int
    status: str
    status_reason: str | None


class ConcurrencyControl:
    """Puts, gets and deletes reserved and provisioned concurrency; keeps the pool in step."""

    __slots__ = ("_catalog", "_lock", "_pool", "_provisioned", "_registry", "_reserved",
                 "_versions")  # fmt: skip

    def __init__(
        self,
        registry: ConcurrencyRegistry,
        catalog: FunctionCatalog,
        versions: VersionCatalog,
        pool: PoolManager,
    ) -> None:
        self._registry = registry
        self._catalog = catalog
        self._versions = versions
        self._pool = pool
        self._reserved: dict[str, int] = {}
        self._provisioned: dict[tuple[str, str], ProvisionedConfig] = {}
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Load the records and apply them (provisioned environments start initializing)."""
        names = set(self._catalog.names())
        for name, reserved in (await self._registry.load_reserved()).items():
            if name in names:
                self._reserved[name] = reserved
                self._pool.set_reserved(name, reserved)
        for config in await self._registry.load_provisioned():
            if config.function_name in names:
                self._provisioned[(config.function_name, config.qualifier)] = config
        for name in {name for name, _ in self._provisioned}:
            self.apply_provisioned(name)

    async def stop(self) -> None:
        self._provisioned.clear()
        self._reserved.clear()

    # --- reserved concurrency -------------------------------------------------------------

    def reserved(self, function_name: str) -> int | None:
        self._catalog.get(function_name)
        return self._reserved.get(function_name)

    @property
    def unreserved_limit(self) -> int:
        return self._pool.limits.unreserved_limit

    async def put_reserved(self, function_name: str, reserved: int) -> int:
        """Raises InvalidParameterValueException if it would leave too little unreserved."""
        async with self._lock:
            self._catalog.get(function_name)
            others = sum(n for name, n in self._reserved.items() if name != function_name)
            if self._pool.limits.account_limit - others - reserved < UNRESERVED_MINIMUM:
                raise InvalidParameterValueException(
                    "Specified ReservedConcurrentExecutions for function decreases account's "
                    f"UnreservedConcurrentExecution below its minimum value of "
                    f"[{UNRESERVED_MINIMUM}]."
                )
            provisioned = self._provisioned_total(function_name)
            if reserved < provisioned:
                raise InvalidParameterValueException(
                    f"Specified ReservedConcurrentExecutions for function is less than "
                    f"function's ProvisionedConcurrentExecutions [{provisioned}]."
                )
            await self._registry.save_reserved(function_name, reserved)
            self._reserved[function_name] = reserved
            self._pool.set_reserved(function_name, reserved)
            return reserved

    async def delete_reserved(self, function_name: str) -> None:
        async with self._lock:
            self._catalog.get(function_name)
            await self._registry.save_reserved(function_name, None)
            self._reserved.pop(function_name, None)
            self._pool.set_reserved(function_name, None)

    # --- provisioned concurrency ----------------------------------------------------------

    def _provisioned_total(self, function_name: str, except_qualifier: str = "") -> int:
        return sum(
            config.requested
            for (name, qualifier), config in self._provisioned.items()
            if name == function_name and qualifier != except_qualifier
        )

    def _check_qualifier(self, function_name: str, qualifier: str) -> None:
        """RNFE for an unknown function, version or alias; IPVE for $LATEST."""
        self._catalog.get(function_name)
        if qualifier == LATEST:
            raise InvalidParameterValueException(
                "Provisioned Concurrency Configs cannot be applied to unpublished function "
                "versions."
            )
        if qualifier.isdigit():
            self._versions.version(function_name, qualifier)
        else:
            self._versions.get_alias(function_name, qualifier)

    def _covered_versions(self, function_name: str, qualifier: str) -> set[str]:
        if qualifier.isdigit():
            return {qualifier}
        return self._versions.get_alias(function_name, qualifier).versions()

    def targets(self, function_name: str, qualifier: str, requested: int) -> dict[str, int]:
        """How a configuration's environments split over the versions it covers."""
        if qualifier.isdigit():
            return {qualifier: requested}
        alias = self._versions.get_alias(function_name, qualifier)
        split: dict[str, int] = {}
        for version, weight in alias.additional_version_weights.items():
            split[version] = math.floor(requested * weight + 0.5)
        split[alias.function_version] = requested - sum(split.values())
        return split

    async def put_provisioned(
        self, function_name: str, qualifier: str, requested: int
    ) -> ProvisionedState:
        """Create or replace the configuration; its environments start initializing.

        Raises:
            ResourceNotFoundException: no such function, version or alias.
            InvalidParameterValueException: $LATEST, or more than the concurrency allows.
            ResourceConflictException: another configuration covers one of its versions.
        """
        async with self._lock:
            self._check_qualifier(function_name, qualifier)
            covered = self._covered_versions(function_name, qualifier)
            for (name, other), _ in self._provisioned.items():
                if name != function_name or other == qualifier:
                    continue
                overlap = covered & self._covered_versions(name, other)
                if overlap:
                    raise ResourceConflictException(
                        f"Provisioned Concurrency is already configured for version "
                        f"{sorted(overlap)[0]} of function {function_name} through {other}."
                    )
            total = self._provisioned_total(function_name, qualifier) + requested
            reserved = self._reserved.get(function_name)
            if reserved is not None and total > reserved:
                raise InvalidParameterValueException(
                    "Requested Provisioned Concurrency should not be greater than the "
                    "reservedConcurrentExecution for function"
                )
            if reserved is None:
                unreserved_provisioned = sum(
                    config.requested
                    for (name, other), config in self._provisioned.items()
                    if name not in self._reserved and (name, other) != (function_name, qualifier)
                )
                room = self.unreserved_limit - UNRESERVED_MINIMUM - unreserved_provisioned
                if requested > room:
                    raise InvalidParameterValueException(
                        "Requested Provisioned Concurrency should not be greater than the "
                        f"account's unreserved concurrency less its minimum of "
                        f"{UNRESERVED_MINIMUM} ({max(room, 0)} available)."
                    )
            config = ProvisionedConfig(function_name, qualifier, requested, lambda_timestamp())
            await self._registry.save_provisioned(config)
            self._provisioned[(function_name, qualifier)] = config
            self.apply_provisioned(function_name)
            return self.state(function_name, qualifier)

    def state(self, function_name: str, qualifier: str) -> ProvisionedState:
        """Raises ProvisionedConcurrencyConfigNotFoundException if there is none."""
        self._check_qualifier(function_name, qualifier)
        config = self._provisioned.get((function_name, qualifier))
        if config is None:
            raise ProvisionedConcurrencyConfigNotFoundException(
                "No Provisioned Concurrency Config found for this function"
            )
        allocated = 0
        failure = None
        for version, wanted in self.targets(function_name, qualifier, config.requested).items():
            status = self._pool.provisioned_status(function_name, version)
            allocated += min(status.allocated, wanted)
            failure = failure or status.failure
        if failure is not None:
            return ProvisionedState(config, allocated, allocated, STATUS_FAILED, failure)
        ready = allocated >= config.requested
        return ProvisionedState(config, allocated, allocated,
                                STATUS_READY if ready else STATUS_IN_PROGRESS, None)  # fmt: skip

    def list_states(self, function_name: str) -> list[ProvisionedState]:
        self._catalog.get(function_name)
        return [
            self.state(name, qualifier)
            for (name, qualifier) in sorted(self._provisioned)
            if name == function_name
        ]

    async def delete_provisioned(self, function_name: str, qualifier: str) -> None:
        async with self._lock:
            self._check_qualifier(function_name, qualifier)
            await self._registry.delete_provisioned(function_name, qualifier)
            self._provisioned.pop((function_name, qualifier), None)
            self.apply_provisioned(function_name)

    def apply_provisioned(self, function_name: str) -> None:
        """Tell the pool each version's target, from every configuration of the function."""
        wanted: dict[str, int] = {}
        for (name, qualifier), config in self._provisioned.items():
            if name != function_name:
                continue
            try:
                split = self.targets(name, qualifier, config.requested)
            except ResourceNotFoundException:  # its alias was deleted a moment ago
                continue
            for version, count in split.items():
                wanted[version] = wanted.get(version, 0) + count
        for name, version, _ in self._pool.provisioned_pools():
            if name == function_name:
                wanted.setdefault(version, 0)  # no longer covered: released
        for version, count in wanted.items():
            try:
                function = self._versions.version(function_name, version)
            except ResourceNotFoundException:  # the version is gone: nothing to keep warm
                continue
            self._pool.set_provisioned(function, count)

    def alias_changed(self, function_name: str, alias: str) -> None:
        """An alias moved: a configuration on it follows to its new versions."""
        if (function_name, alias) in self._provisioned:
            self.apply_provisioned(function_name)

    async def forget_qualifier(self, function_name: str, qualifier: str) -> None:
        """A deleted version or alias takes its configuration with it."""
        async with self._lock:
            if (function_name, qualifier) in self._provisioned:
                await self._registry.delete_provisioned(function_name, qualifier)
                del self._provisioned[(function_name, qualifier)]
                self.apply_provisioned(function_name)

    def forget_function(self, function_name: str) -> None:
        """A deleted function (the store removed its rows with it)."""
        self._reserved.pop(function_name, None)
        for key in [key for key in self._provisioned if key[0] == function_name]:
            del self._provisioned[key]
        self._pool.forget_function(function_name)
