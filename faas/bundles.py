"""Deploy function directories (like ``examples/``) straight into a node's catalog.

A function directory holds its code and a ``faas.json`` with CreateFunction
members (``Runtime``, ``Handler``, ``MemorySize``, ``Timeout``, ``Environment``,
...); the function is named after the directory unless ``FunctionName`` is set.
Deploying creates the function, or updates code and configuration when they changed.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import zipfile
from pathlib import Path
from typing import Any

import orjson

from faas.api.validation import configuration_fields
from faas.catalog import FunctionCatalog
from faas.errors import FaasError

log = logging.getLogger(__name__)

MANIFEST = "faas.json"
_DEFAULT_ROLE = "arn:aws:iam::000000000000:role/faas-example"


def zip_directory(directory: Path) -> bytes:
    """A deterministic zip of ``directory`` (sorted entries, fixed timestamps)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for root, dirs, files in os.walk(directory):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                path = Path(root) / name
                if name == MANIFEST and path.parent == directory:
                    continue
                info = zipfile.ZipInfo(str(path.relative_to(directory)), (1980, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def _function_directories(root: Path) -> list[Path]:
    if (root / MANIFEST).is_file():
        return [root]
    return [path for path in sorted(root.iterdir()) if (path / MANIFEST).is_file()]


def _read_bundle(directory: Path) -> tuple[dict[str, Any], bytes]:
    manifest = orjson.loads((directory / MANIFEST).read_bytes())
    return manifest, zip_directory(directory)


async def deploy_directory(catalog: FunctionCatalog, root: Path) -> list[str]:
    """Deploy every function directory under ``root`` (or ``root`` itself); returns names."""
    candidates = await asyncio.to_thread(_function_directories, root)
    deployed = []
    for directory in candidates:
        manifest, zip_bytes = await asyncio.to_thread(_read_bundle, directory)
        name = str(manifest.pop("FunctionName", directory.name))
        manifest.setdefault("Role", _DEFAULT_ROLE)
        try:
            fields = configuration_fields(manifest, creating=True)
            if name in catalog.names():
                current = catalog.get(name)
                config = await catalog.update_code(name, zip_bytes, None)
                if config.code_sha256_hex == current.code_sha256_hex:
                    log.info("function %s unchanged code", name)
                await catalog.update_configuration(name, fields, None)
            else:
                await catalog.create({"name": name, **fields}, zip_bytes)
        except FaasError as exc:
            log.error("could not deploy %s: %s", directory, exc)
            continue
        deployed.append(name)
    return deployed
