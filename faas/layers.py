"""The layer catalog: every layer version in memory, in step with the store, and /opt trees.

Design notes: reads (every ListLayers, every launch) are dict lookups that never
touch the store; a publish is serialised per layer name, written to the store first,
then added to the dict. Layer zips go through the same content-addressed CodeStore
as function code, so they are checked and unpacked the same way.

A version is never renumbered: deleting one only marks it ``deleted``, so functions
that already reference it keep working (as on Lambda), and at start-up a deleted
version that no function references any more becomes ``purged``: its code is
released but its record stays, so its number is never handed out again.

What a function sees at /opt is one merged tree per ordered list of layers: the
layers' unpacked trees overlaid in order, later files replacing earlier ones, as
Lambda extracts them into /opt. Files are hard links into the code store (copies
where linking fails), so a merge costs no space. A tree is built once per distinct
list, when a function is configured with it (so a list whose symlinks would only
escape in combination is refused up front) or lazily at launch after a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from faas.catalog import lambda_timestamp
from faas.errors import (
    InvalidParameterValueException,
    PlatformError,
    ResourceNotFoundException,
)
from faas.models import FunctionConfig, LayerVersion, LayerVersionState
from faas.store.base import FunctionRegistry, LayerRegistry
from faas.store.code import CodeStore

MAX_FUNCTION_LAYERS = 5
LAYER_NOT_FOUND = "The resource you requested does not exist."


class LayerCatalogState(enum.Enum):
    NEW = "new"  # constructed, nothing loaded
    RUNNING = "running"  # loaded; serving reads and mutations
    STOPPED = "stopped"  # stopped; cannot be started again


class LayerMergeError(Exception):
    """The layers of one list cannot be overlaid safely (a symlink leaves the tree)."""


class LayerCatalog:
    """Layer versions by name and number, cached in memory over a LayerRegistry."""

    __slots__ = (
        "_code",
        "_locks",
        "_max_unzipped_bytes",
        "_merge_locks",
        "_merged_root",
        "_registry",
        "_state",
        "_versions",
        "arn_prefix",
    )

    def __init__(
        self,
        registry: LayerRegistry,
        code: CodeStore,
        arn_prefix: str,
        merged_root: Path,
        max_unzipped_bytes: int,
    ) -> None:
        self._registry = registry
        self._code = code
        self._merged_root = merged_root
        self._max_unzipped_bytes = max_unzipped_bytes
        self._versions: dict[str, dict[int, LayerVersion]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._merge_locks: dict[str, asyncio.Lock] = {}
        self._state = LayerCatalogState.NEW
        self.arn_prefix = arn_prefix  # arn:aws:lambda:<region>:<account>:layer:

    async def start(self) -> None:
        if self._state is not LayerCatalogState.NEW:
            raise RuntimeError(f"layer catalog cannot start from {self._state.value}")
        await asyncio.to_thread(self._merged_root.mkdir, parents=True, exist_ok=True)
        for layer in await self._registry.load_layer_versions():
            self._versions.setdefault(layer.name, {})[layer.version] = layer
        self._state = LayerCatalogState.RUNNING

    async def stop(self) -> None:
        self._state = LayerCatalogState.STOPPED
        self._locks.clear()
        self._merge_locks.clear()

    # -- names -------------------------------------------------------------------------

    def layer_arn(self, name: str) -> str:
        return self.arn_prefix + name

    def version_arn(self, name: str, version: int) -> str:
        return f"{self.arn_prefix}{name}:{version}"

    def _find(self, arn: str) -> LayerVersion | None:
        """The stored version a version ARN names (in any state), if it is one of ours."""
        if not arn.startswith(self.arn_prefix):
            return None
        name, _, number = arn[len(self.arn_prefix) :].rpartition(":")
        if not name or not number.isdigit():
            return None
        return self._versions.get(name, {}).get(int(number))

    # -- reads -------------------------------------------------------------------------

    def get(self, name: str, version: int) -> LayerVersion:
        """An active layer version.

        Raises:
            ResourceNotFoundException: no such version, or it was deleted.
        """
        layer = self._versions.get(name, {}).get(version)
        if layer is None or not layer.is_active:
            raise ResourceNotFoundException(LAYER_NOT_FOUND)
        return layer

    def versions(
        self, name: str, runtime: str | None = None, architecture: str | None = None
    ) -> list[LayerVersion]:
        """Active versions of ``name`` matching the filters, newest first."""
        return [
            layer
            for _, layer in sorted(self._versions.get(name, {}).items(), reverse=True)
            if layer.is_active and _matches(layer, runtime, architecture)
        ]

    def latest_matching(
        self, runtime: str | None = None, architecture: str | None = None
    ) -> list[LayerVersion]:
        """The newest matching active version of every layer that has one, by layer name."""
        found = []
        for name in sorted(self._versions):
            matching = self.versions(name, runtime, architecture)
            if matching:
                found.append(matching[0])
        return found

    def zip_path(self, sha256_hex: str) -> Path | None:
        """The stored zip of a layer version that is not purged, if any has this hash."""
        for versions in self._versions.values():
            for layer in versions.values():
                if layer.code_sha256_hex == sha256_hex and layer.state is not (
                    LayerVersionState.PURGED
                ):
                    return self._code.zip_path(sha256_hex)
        return None

    # -- mutations ---------------------------------------------------------------------

    async def publish(
        self,
        name: str,
        zip_bytes: bytes,
        description: str = "",
        compatible_runtimes: Sequence[str] = (),
        compatible_architectures: Sequence[str] = (),
        license_info: str | None = None,
    ) -> LayerVersion:
        """Store a zip as the next version of ``name`` (1 for a new layer).

        Raises:
            InvalidParameterValueException: the zip is refused by the code store.
            RequestTooLargeException: the zip is over the direct-upload limit.
        """
        self._require_running()
        stored = await self._code.put(zip_bytes)
        size = await asyncio.to_thread(unzipped_size, zip_bytes)
        async with self._lock(name):
            numbers = self._versions.get(name, {})
            layer = LayerVersion(
                name=name,
                version=max(numbers, default=0) + 1,
                code_sha256_hex=stored.sha256_hex,
                code_size=stored.size,
                unzipped_size=size,
                created_date=lambda_timestamp(),
                description=description,
                compatible_runtimes=tuple(compatible_runtimes),
                compatible_architectures=tuple(compatible_architectures),
                license_info=license_info,
            )
            await self._registry.insert_layer_version(layer)
            self._versions.setdefault(name, {})[layer.version] = layer
        return layer

    async def delete(self, name: str, version: int) -> bool:
        """Delete a version; False (and nothing done) if it is absent or already deleted."""
        self._require_running()
        async with self._lock(name):
            layer = self._versions.get(name, {}).get(version)
            if layer is None or not layer.is_active:
                return False
            await self._set_state(layer, LayerVersionState.DELETED)
        return True

    async def _set_state(self, layer: LayerVersion, state: LayerVersionState) -> None:
        await self._registry.set_layer_version_state(layer.name, layer.version, state)
        self._versions[layer.name][layer.version] = dataclasses.replace(layer, state=state)

    async def collect_garbage(self, functions: FunctionRegistry) -> int:
        """Purge deleted versions no stored function references; drop unused /opt trees.

        Run at start-up, before the code store collects garbage (which then frees the
        purged versions' code). Returns how many versions were purged.
        """
        self._require_running()
        lists = [config.layers for config in await functions.load_functions() if config.layers]
        referenced = {arn for arns in lists for arn in arns}
        purged = 0
        for versions in list(self._versions.values()):
            for layer in list(versions.values()):
                arn = self.version_arn(layer.name, layer.version)
                if layer.state is LayerVersionState.DELETED and arn not in referenced:
                    await self._set_state(layer, LayerVersionState.PURGED)
                    purged += 1
        keep = set()
        for arns in lists:
            layers = [self._find(arn) for arn in arns]
            keep.add(_merge_key([layer for layer in layers if layer is not None]))
        await asyncio.to_thread(_remove_entries_except, self._merged_root, keep)
        return purged

    # -- functions' use ----------------------------------------------------------------

    async def check(self, config: FunctionConfig, attached: Iterable[str] = ()) -> None:
        """Refuse a function configuration whose layers Lambda would refuse.

        Args:
            config: the configuration about to be stored.
            attached: the layer ARNs the function has now; these may name deleted
                versions, which stay usable by functions that already reference them.

        Raises:
            InvalidParameterValueException: too many layers, an unknown version, two
                versions of one layer, the 250 MB cap exceeded, or layers that
                cannot be overlaid.
        """
        if not config.layers:
            return
        self._require_running()
        if len(config.layers) > MAX_FUNCTION_LAYERS:
            raise InvalidParameterValueException(
                f"Cannot reference more than {MAX_FUNCTION_LAYERS} layers."
            )
        kept = set(attached)
        layers: list[LayerVersion] = []
        for arn in config.layers:
            layer = self._find(arn)
            if layer is None or not (
                layer.is_active or (layer.state is LayerVersionState.DELETED and arn in kept)
            ):
                raise InvalidParameterValueException(f"Layer version {arn} does not exist.")
            for other in layers:
                if other.name == layer.name:
                    # Wording unconfirmed; Lambda refuses two versions of one layer.
                    first = self.version_arn(other.name, other.version)
                    raise InvalidParameterValueException(
                        "Two different versions of the same layer are not allowed to be "
                        f"referenced in the same function. {first} and {arn} share the same layer."
                    )
            layers.append(layer)
        await self._check_size(config, layers)
        try:
            await self._merged(layers)
        except LayerMergeError as exc:
            raise InvalidParameterValueException(
                f"These layers cannot be combined in this order: {exc}"
            ) from exc

    async def _check_size(self, config: FunctionConfig, layers: list[LayerVersion]) -> None:
        cap = self._max_unzipped_bytes
        layers_size = sum(layer.unzipped_size for layer in layers)
        if layers_size > cap:
            raise InvalidParameterValueException(
                f"Layers consume more than the available size of {cap} bytes"
            )
        code = self._code.zip_path(config.code_sha256_hex)
        total = layers_size + await asyncio.to_thread(unzipped_size, code)
        if total > cap:
            raise InvalidParameterValueException(
                "Function code combined with layers exceeds the maximum allowed size of "
                f"{cap} bytes. The actual size is {total} bytes."
            )

    def references(self, config: FunctionConfig) -> list[tuple[str, int]]:
        """``(Arn, CodeSize)`` of each of the function's layers, in order."""
        found = []
        for arn in config.layers:
            layer = self._find(arn)
            found.append((arn, layer.code_size if layer is not None else 0))
        return found

    def directories(self, config: FunctionConfig) -> list[Path]:
        """The unpacked tree of each of the function's layers, in the function's order.

        Raises:
            PlatformError: a referenced version's code is gone (the store is damaged).
        """
        return [self._code.directory(layer.code_sha256_hex) for layer in self._layers_of(config)]

    async def opt_directory(self, config: FunctionConfig) -> Path | None:
        """The merged tree to present at /opt for ``config`` (None without layers).

        Built on first use and shared by every environment of every function with the
        same ordered layers; treat it as read-only.

        Raises:
            PlatformError: the tree cannot be built.
        """
        if not config.layers:
            return None
        layers = self._layers_of(config)
        try:
            return await self._merged(layers)
        except (LayerMergeError, OSError) as exc:
            raise PlatformError(f"cannot build /opt for {config.name}: {exc}") from exc

    def _layers_of(self, config: FunctionConfig) -> list[LayerVersion]:
        layers = []
        for arn in config.layers:
            layer = self._find(arn)
            if layer is None or layer.state is LayerVersionState.PURGED:
                raise PlatformError(f"layer version {arn} of {config.name} is not stored")
            layers.append(layer)
        return layers

    async def _merged(self, layers: list[LayerVersion]) -> Path:
        key = _merge_key(layers)
        target = self._merged_root / key
        sources = [self._code.directory(layer.code_sha256_hex) for layer in layers]
        async with self._merge_locks.setdefault(key, asyncio.Lock()):
            await asyncio.to_thread(_build_merged, sources, target)
        return target

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _require_running(self) -> None:
        if self._state is not LayerCatalogState.RUNNING:
            raise RuntimeError(f"layer catalog is {self._state.value}, not running")


def _matches(layer: LayerVersion, runtime: str | None, architecture: str | None) -> bool:
    return (runtime is None or runtime in layer.compatible_runtimes) and (
        architecture is None or architecture in layer.compatible_architectures
    )


def _merge_key(layers: Sequence[LayerVersion]) -> str:
    return hashlib.sha256("\n".join(x.code_sha256_hex for x in layers).encode()).hexdigest()


def unzipped_size(zip_file: Path | bytes) -> int:
    """The bytes a stored zip unpacks to, as its central directory declares them.

    Counted from the zip rather than from the unpacked tree, which the code store may
    enrich (bytecode); the store has already refused zips whose entries lie about it.
    """
    source = io.BytesIO(zip_file) if isinstance(zip_file, bytes) else zip_file
    with zipfile.ZipFile(source) as archive:
        return sum(info.file_size for info in archive.infolist() if not info.is_dir())


def _build_merged(sources: list[Path], target: Path) -> None:
    if target.is_dir():
        return
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name[:12]}-", dir=target.parent))
    try:
        merge_trees(sources, staging)
        staging.chmod(0o755)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def merge_trees(sources: Sequence[Path], target: Path) -> None:
    """Overlay ``sources`` in order into the directory ``target``; later entries win.

    Nothing is ever written through a symlink: a directory of a later tree replaces
    whatever non-directory sits at its path. Every symlink of the result is then
    checked, since links that each stay inside their own tree may leave the merge.

    Raises:
        LayerMergeError: a symlink of the result points outside ``target``.
    """
    root = target.resolve()
    for source in sources:
        for directory, dirnames, filenames in os.walk(source):
            here = root / Path(directory).relative_to(source)
            _ensure_directory(here)
            for name in (*dirnames, *filenames):
                entry = Path(directory) / name
                if entry.is_symlink():
                    _remove(here / name)
                    os.symlink(os.readlink(entry), here / name)
                elif not entry.is_dir():
                    _remove(here / name)
                    _link_or_copy(entry, here / name)
    for directory, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = Path(directory) / name
            if path.is_symlink() and not Path(os.path.realpath(path)).is_relative_to(root):
                raise LayerMergeError(f"{path.relative_to(root)} points outside /opt")


def _ensure_directory(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        return
    _remove(path)
    path.mkdir(mode=0o755)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or hard links refused: a copy serves as well
        shutil.copy2(source, target)


def _remove_entries_except(root: Path, keep: set[str]) -> None:
    for entry in root.iterdir():
        if entry.name not in keep:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
