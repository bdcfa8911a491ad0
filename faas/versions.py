"""Published versions and aliases: immutable snapshots of `$LATEST`, names that point at
them with weighted routing, and the resolution of a qualifier to what actually runs.

Design notes: like the function catalog, everything is served from memory and written
to the store first. An alias change replaces one frozen AliasConfig in a dict in one
assignment, so an invocation resolving it concurrently sees the old alias or the new
one, never a mix. The weighted draw uses a Random owned by the catalog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from faas.catalog import FunctionCatalog, lambda_timestamp
from faas.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
    ValidationException,
)
from faas.models import LATEST, AliasConfig, FunctionConfig
from faas.store.base import AliasRegistry, FunctionRegistry

_ALIAS_NAME = re.compile(r"(?!^[0-9]+$)([a-zA-Z0-9-_]+)")
_VERSION = re.compile(r"(\$LATEST|[0-9]+)")
# Fields that make a version differ from another (not its identity or bookkeeping).
_IDENTITY_FIELDS = {"version", "revision_id", "last_modified", "description", "tags"}


class VersionRegistry(FunctionRegistry, AliasRegistry, Protocol):
    """What the version catalog needs from the store."""


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a qualifier resolved to for one invocation."""

    config: FunctionConfig  # the version that runs
    alias: str | None = None  # the alias invoked, if any


def _same_content(a: FunctionConfig, b: FunctionConfig) -> bool:
    return all(
        getattr(a, name) == getattr(b, name)
        for name in FunctionConfig.__dataclass_fields__
        if name not in _IDENTITY_FIELDS
    )


def _version_sort_key(version: str) -> int:
    return int(version)


class VersionCatalog:
    """Published versions and aliases of every function."""

    __slots__ = ("_alias_listeners", "_aliases", "_functions", "_locks", "_random", "_registry",
                 "_versions")  # fmt: skip

    def __init__(
        self, registry: VersionRegistry, functions: FunctionCatalog, rng: random.Random
    ) -> None:
        self._registry = registry
        self._functions = functions
        self._random = rng
        self._versions: dict[str, dict[str, FunctionConfig]] = {}
        self._aliases: dict[str, dict[str, AliasConfig]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._alias_listeners: list[Callable[[str, str], None]] = []

    def add_alias_listener(self, listener: Callable[[str, str], None]) -> None:
        """Called with (function, alias) after an alias is created, changed or deleted."""
        self._alias_listeners.append(listener)

    def _alias_changed(self, name: str, alias: str) -> None:
        for listener in self._alias_listeners:
            listener(name, alias)

    async def start(self) -> None:
        for config in await self._registry.load_functions():
            if config.version != LATEST:
                self._versions.setdefault(config.name, {})[config.version] = config
        for alias in await self._registry.load_aliases():
            self._aliases.setdefault(alias.function_name, {})[alias.name] = alias

    async def stop(self) -> None:
        self._locks.clear()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _not_found(self, name: str, qualifier: str) -> ResourceNotFoundException:
        return ResourceNotFoundException(
            f"Function not found: {self._functions.function_arn(name, qualifier)}"
        )

    # Resolution

    def version(self, name: str, version: str) -> FunctionConfig:
        """`$LATEST` or a published version.

        Raises:
            ResourceNotFoundException: no such function or version.
        """
        if version == LATEST:
            return self._functions.get(name)
        self._functions.get(name)
        config = self._versions.get(name, {}).get(version)
        if config is None:
            raise self._not_found(name, version)
        return config

    def resolve(self, name: str, qualifier: str | None) -> Resolved:
        """The version to run for ``qualifier`` (None, `$LATEST`, a number or an alias);
        an alias with routing draws its version per call, by weight."""
        if qualifier is None or qualifier == LATEST or qualifier.isdigit():
            return Resolved(self.version(name, qualifier or LATEST))
        alias = self.get_alias(name, qualifier)
        version = alias.function_version
        for extra, weight in alias.additional_version_weights.items():
            if self._random.random() < weight:
                version = extra
        return Resolved(self.version(name, version), alias.name)

    def describe(self, name: str, qualifier: str | None) -> FunctionConfig:
        """The configuration a qualifier names for reading: an alias gives its main version."""
        if qualifier is None or qualifier == LATEST or qualifier.isdigit():
            return self.version(name, qualifier or LATEST)
        return self.version(name, self.get_alias(name, qualifier).function_version)

    def versions(self, name: str) -> list[FunctionConfig]:
        """`$LATEST` then every published version, in order."""
        published = self._versions.get(name, {})
        ordered = sorted(published, key=_version_sort_key)
        return [self._functions.get(name), *(published[v] for v in ordered)]

    # Publishing

    async def publish(
        self,
        name: str,
        code_sha256: str | None = None,
        description: str | None = None,
        revision_id: str | None = None,
    ) -> FunctionConfig:
        """Snapshot `$LATEST` as the next version, or return the newest one if nothing changed.

        Raises:
            InvalidParameterValueException: ``code_sha256`` is not `$LATEST`'s.
            PreconditionFailedException: ``revision_id`` is not `$LATEST`'s.
        """
        async with self._lock(name):
            latest = self._functions.get(name)
            if code_sha256 and code_sha256 != latest.code_sha256:
                raise InvalidParameterValueException(
                    f"CodeSHA256 ({code_sha256}) is different from current CodeSHA256 in "
                    f"$LATEST ({latest.code_sha256}). Please try again with the CodeSHA256 "
                    "in $LATEST."
                )
            if revision_id and revision_id != latest.revision_id:
                raise PreconditionFailedException(
                    "The Revision Id provided does not match the latest Revision Id. "
                    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
                )
            published = self._versions.setdefault(name, {})
            if published:
                newest = published[max(published, key=_version_sort_key)]
                if _same_content(newest, latest):
                    return newest
            number = await self._registry.next_version_number(name)
            version = dataclasses.replace(
                latest,
                version=str(number),
                revision_id=str(uuid.uuid4()),
                last_modified=lambda_timestamp(),
                description=latest.description if description is None else description,
            )
            await self._registry.insert_function(version)
            published[version.version] = version
            return version

    async def delete_version(self, name: str, version: str) -> None:
        """Delete one published version.

        Raises:
            ResourceConflictException: an alias routes to it.
        """
        async with self._lock(name):
            self.version(name, version)
            users = [
                a.name for a in self._aliases.get(name, {}).values() if version in a.versions()
            ]
            if users:
                raise ResourceConflictException(
                    f"Unable to delete version because the following aliases reference it: "
                    f"[{', '.join(sorted(users))}]"
                )
            await self._registry.delete_version(name, version)
            del self._versions[name][version]

    def forget(self, name: str) -> None:
        """Drop a deleted function's versions and aliases (the store removed them)."""
        self._versions.pop(name, None)
        self._aliases.pop(name, None)
        self._locks.pop(name, None)

    # Aliases

    def get_alias(self, name: str, alias: str) -> AliasConfig:
        self._functions.get(name)
        found = self._aliases.get(name, {}).get(alias)
        if found is None:
            raise ResourceNotFoundException(
                f"Alias not found: {self._functions.function_arn(name, alias)}"
            )
        return found

    def aliases(self, name: str, function_version: str | None = None) -> list[AliasConfig]:
        self._functions.get(name)
        found = sorted(self._aliases.get(name, {}).values(), key=lambda a: a.name)
        if function_version:
            found = [a for a in found if function_version in a.versions()]
        return found

    async def create_alias(
        self, name: str, alias: str, function_version: str, description: str,
        weights: Mapping[str, float],
    ) -> AliasConfig:  # fmt: skip
        """Raises ResourceConflictException if it exists; validation errors as Lambda's."""
        async with self._lock(name):
            _check_alias_name(alias)
            self._check_target(name, function_version, weights)
            if alias in self._aliases.get(name, {}):
                raise ResourceConflictException(
                    f"Alias already exists: {self._functions.function_arn(name, alias)}"
                )
            config = AliasConfig(name, alias, function_version, str(uuid.uuid4()),
                                 description, dict(weights))  # fmt: skip
            await self._registry.insert_alias(config)
            self._aliases.setdefault(name, {})[alias] = config
        self._alias_changed(name, alias)
        return config

    async def update_alias(self, name: str, alias: str, changes: Mapping[str, Any],
                           revision_id: str | None) -> AliasConfig:  # fmt: skip
        """Change an alias atomically; a stale ``revision_id`` is refused."""
        async with self._lock(name):
            current = self.get_alias(name, alias)
            if revision_id and revision_id != current.revision_id:
                raise PreconditionFailedException(
                    "The Revision Id provided does not match the latest Revision Id. "
                    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
                )
            updated = dataclasses.replace(current, revision_id=str(uuid.uuid4()), **changes)
            self._check_target(name, updated.function_version, updated.additional_version_weights)
            await self._registry.replace_alias(updated, current.revision_id)
            self._aliases[name][alias] = updated
        self._alias_changed(name, alias)
        return updated

    async def delete_alias(self, name: str, alias: str) -> None:
        """Deleting a missing alias is a no-op, as on Lambda."""
        async with self._lock(name):
            self._functions.get(name)
            if alias in self._aliases.get(name, {}):
                await self._registry.delete_alias(name, alias)
                del self._aliases[name][alias]
        self._alias_changed(name, alias)

    def _check_target(self, name: str, version: str, weights: Mapping[str, float]) -> None:
        _check_version_shape(version, "functionVersion")
        primary = self.version(name, version)
        if not weights:
            return
        if len(weights) > 1:
            raise InvalidParameterValueException(
                "Number of items in AdditionalVersionWeights cannot be greater than 1"
            )
        if version == LATEST:
            raise InvalidParameterValueException(
                "$LATEST is not supported for an alias pointing to more than 1 version"
            )
        for extra, weight in weights.items():
            _check_version_shape(extra, "routingConfig.additionalVersionWeights")
            if extra == LATEST:
                raise InvalidParameterValueException(
                    "$LATEST is not supported for an alias pointing to more than 1 version"
                )
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not (0.0 <= weight <= 1.0)
            ):
                raise ValidationException(
                    f"1 validation error detected: Value '{weight}' at "
                    "'routingConfig.additionalVersionWeights' failed to satisfy constraint: "
                    "Map value must satisfy constraint: [Member must have value less than or "
                    "equal to 1.0, Member must have value greater than or equal to 0.0]"
                )
            if extra == version:
                raise InvalidParameterValueException(
                    "Version and additional version cannot be the same"
                )
            other = self.version(name, extra)
            if other.role != primary.role:
                raise InvalidParameterValueException(
                    "The function versions of an alias must have the same execution role"
                )
            if other.dead_letter_target_arn != primary.dead_letter_target_arn:
                raise InvalidParameterValueException(
                    "The function versions of an alias must have the same dead-letter "
                    "queue configuration"
                )


def _check_alias_name(alias: str) -> None:
    if not (1 <= len(alias) <= 128) or not _ALIAS_NAME.fullmatch(alias):
        raise ValidationException(
            f"1 validation error detected: Value '{alias}' at 'name' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: "
            "(?!^[0-9]+$)([a-zA-Z0-9-_]+)"
        )


def _check_version_shape(version: str, member: str) -> None:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValidationException(
            f"1 validation error detected: Value '{version}' at '{member}' failed to satisfy "
            r"constraint: Member must satisfy regular expression pattern: (\$LATEST|[0-9]+)"
        )
