"""The function catalog: the in-memory view of every function, kept in step with the store.

Design notes: reads (every Invoke) are plain dict lookups and never touch the
store. Mutations are serialised per function name, written to the store first,
then swapped into the dict in one assignment, so a concurrent reader sees either
the old configuration or the new one, never a mix. Listeners hear of every change
after it is durable (the pool uses that to retire environments of old code).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faas.errors import (
    InvalidParameterValueException,
    PreconditionFailedException,
    ResourceConflictException,
    ResourceNotFoundException,
)
from faas.models import LATEST, FunctionConfig
from faas.store.base import FunctionRegistry
from faas.store.code import CodeStore

if TYPE_CHECKING:  # faas.layers imports this module at run time
    from faas.layers import LayerCatalog

# Told (function name, version) after a change; version None means every version went.
ChangeListener = Callable[[str, str | None], None]


def lambda_timestamp(epoch_s: float | None = None) -> str:
    """LastModified as Lambda writes it: ``2019-11-21T19:32:12.000+0000``."""
    now = time.time() if epoch_s is None else epoch_s
    millis = int((now % 1) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{millis:03d}+0000"


class FunctionCatalog:
    """Function configurations by name, cached in memory over a FunctionRegistry."""

    __slots__ = (
        "_code",
        "_functions",
        "_layers",
        "_listeners",
        "_locks",
        "_registry",
        "arn_prefix",
    )

    def __init__(
        self,
        registry: FunctionRegistry,
        code: CodeStore,
        arn_prefix: str,
        layers: LayerCatalog | None = None,
    ) -> None:
        self._registry = registry
        self._code = code
        self._layers = layers  # checks a configuration's Layers; None: layers are refused
        self._functions: dict[str, FunctionConfig] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[ChangeListener] = []
        self.arn_prefix = arn_prefix  # arn:aws:lambda:<region>:<account>:function:

    async def start(self) -> None:
        for config in await self._registry.load_functions():
            if config.version == LATEST:
                self._functions[config.name] = config

    async def stop(self) -> None:
        self._listeners.clear()

    def add_listener(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    def function_arn(self, name: str, qualifier: str | None = None) -> str:
        arn = self.arn_prefix + name
        return f"{arn}:{qualifier}" if qualifier else arn

    def get(self, name: str) -> FunctionConfig:
        """The current `$LATEST` configuration.

        Raises:
            ResourceNotFoundException: no such function.
        """
        config = self._functions.get(name)
        if config is None:
            raise ResourceNotFoundException(f"Function not found: {self.function_arn(name)}")
        return config

    def names(self) -> list[str]:
        return sorted(self._functions)

    def __len__(self) -> int:
        return len(self._functions)

    def code_directory(self, config: FunctionConfig) -> str:
        return str(self._code.directory(config.code_sha256_hex))

    def zip_path(self, config: FunctionConfig) -> Path:
        return self._code.zip_path(config.code_sha256_hex)

    async def create(self, fields: Mapping[str, Any], zip_bytes: bytes) -> FunctionConfig:
        """Store new code and a new function.

        Raises:
            ResourceConflictException: the name is taken.
        """
        name = str(fields["name"])
        async with self._lock(name):
            if name in self._functions:
                raise ResourceConflictException(f"Function already exist: {name}")
            stored = await self._code.put(zip_bytes)
            config = FunctionConfig(
                code_sha256_hex=stored.sha256_hex,
                code_size=stored.size,
                revision_id=str(uuid.uuid4()),
                last_modified=lambda_timestamp(),
                **fields,
            )
            await self._check_layers(config, ())
            await self._registry.insert_function(config)
            self._functions[name] = config
        self._notify(name)
        return config

    async def update_code(
        self, name: str, zip_bytes: bytes, expected_revision: str | None
    ) -> FunctionConfig:
        """Replace a function's code; environments of the old code retire."""
        stored = await self._code.put(zip_bytes)
        return await self._mutate(
            name,
            expected_revision,
            {"code_sha256_hex": stored.sha256_hex, "code_size": stored.size},
        )

    async def update_configuration(
        self, name: str, changes: Mapping[str, Any], expected_revision: str | None
    ) -> FunctionConfig:
        """Change configuration fields; environments of the old configuration retire."""
        return await self._mutate(name, expected_revision, changes)

    async def _mutate(
        self, name: str, expected_revision: str | None, changes: Mapping[str, Any]
    ) -> FunctionConfig:
        async with self._lock(name):
            current = self.get(name)
            if expected_revision and expected_revision != current.revision_id:
                raise PreconditionFailedException(
                    "The Revision Id provided does not match the latest Revision Id. "
                    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id"
                )
            updated = dataclasses.replace(
                current,
                revision_id=str(uuid.uuid4()),
                last_modified=lambda_timestamp(),
                **changes,
            )
            await self._check_layers(updated, current.layers)
            await self._registry.replace_function(updated, current.revision_id)
            self._functions[name] = updated
        self._notify(name)
        return updated

    async def delete(self, name: str) -> None:
        async with self._lock(name):
            self.get(name)
            await self._registry.delete_function(name)
            del self._functions[name]
        self._locks.pop(name, None)
        self._notify(name, None)

    async def _check_layers(self, config: FunctionConfig, attached: tuple[str, ...]) -> None:
        if not config.layers:
            return
        if self._layers is None:
            raise InvalidParameterValueException("Layers are not supported by this node.")
        await self._layers.check(config, attached)

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _notify(self, name: str, version: str | None = LATEST) -> None:
        for listener in self._listeners:
            listener(name, version)
