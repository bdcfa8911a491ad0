"""The content-addressed code store: deployment zips by SHA-256, each unpacked once.

Design notes: a zip is checked entry by entry before anything is written (absolute
paths, ``..`` components and symlinks leaving the root are refused), and the
bytes actually written are counted, so a zip whose headers lie about sizes still
cannot fill the disk. Unpacking goes to a temporary directory that is renamed
into place, so a crash never leaves a half-unpacked tree under a valid hash.
All of it is blocking file work, run in a worker thread.
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from faas.errors import InvalidParameterValueException, RequestTooLargeException

_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoredCode:
    """A zip now held by the store."""

    sha256_hex: str
    size: int
    directory: Path


@dataclass(frozen=True, slots=True)
class CodeLimits:
    max_zip_bytes: int
    max_unzipped_bytes: int
    max_entries: int


class CodeStore:
    """Keeps ``zips/<sha>.zip`` and ``unpacked/<sha>/`` under one root directory."""

    __slots__ = ("_limits", "_locks", "_root")

    def __init__(self, root: Path, limits: CodeLimits) -> None:
        self._root = root
        self._limits = limits
        self._locks: dict[str, asyncio.Lock] = {}

    async def start(self) -> None:
        await asyncio.to_thread(self._make_dirs)

    async def stop(self) -> None:
        self._locks.clear()

    def _make_dirs(self) -> None:
        (self._root / "zips").mkdir(parents=True, exist_ok=True)
        (self._root / "unpacked").mkdir(parents=True, exist_ok=True)

    def directory(self, sha256_hex: str) -> Path:
        """Where the code of ``sha256_hex`` is unpacked."""
        return self._root / "unpacked" / sha256_hex

    def zip_path(self, sha256_hex: str) -> Path:
        return self._root / "zips" / f"{sha256_hex}.zip"

    async def put(self, zip_bytes: bytes) -> StoredCode:
        """Check, store and unpack a deployment zip (a no-op if the same bytes are stored).

        Raises:
            RequestTooLargeException: the zip is over the direct-upload limit.
            InvalidParameterValueException: not a zip, a hostile entry, or too big unpacked.
        """
        if len(zip_bytes) > self._limits.max_zip_bytes:
            raise RequestTooLargeException(
                f"Request must be smaller than {self._limits.max_zip_bytes} bytes"
                " for the CreateFunction operation"
            )
        sha256_hex = await asyncio.to_thread(lambda: hashlib.sha256(zip_bytes).hexdigest())
        lock = self._locks.setdefault(sha256_hex, asyncio.Lock())
        async with lock:
            await asyncio.to_thread(self._store_blocking, sha256_hex, zip_bytes)
        return StoredCode(sha256_hex, len(zip_bytes), self.directory(sha256_hex))

    def _store_blocking(self, sha256_hex: str, zip_bytes: bytes) -> None:
        target = self.directory(sha256_hex)
        if target.is_dir() and self.zip_path(sha256_hex).is_file():
            return
        staging = Path(tempfile.mkdtemp(prefix=f".{sha256_hex[:12]}-", dir=self._root / "unpacked"))
        try:
            unpack_zip(zip_bytes, staging, self._limits)
            _precompile(staging)
            staging.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        zip_tmp = self.zip_path(sha256_hex).with_suffix(".tmp")
        zip_tmp.write_bytes(zip_bytes)
        zip_tmp.rename(self.zip_path(sha256_hex))

    async def has(self, sha256_hex: str) -> bool:
        return await asyncio.to_thread(self.directory(sha256_hex).is_dir)

    async def collect_garbage(self, keep: set[str]) -> int:
        """Remove stored code not in ``keep``; returns how many hashes were removed."""
        return await asyncio.to_thread(self._collect_blocking, keep)

    def _collect_blocking(self, keep: set[str]) -> int:
        removed = 0
        for entry in (self._root / "unpacked").iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        for entry in (self._root / "zips").iterdir():
            if entry.name.removesuffix(".zip") not in keep:
                entry.unlink(missing_ok=True)
        return removed


def _precompile(directory: Path) -> None:
    """Compile the code's Python files once, at deploy time.

    Code directories are immutable and shared, so environments never write bytecode
    (PYTHONDONTWRITEBYTECODE) and every cold start reads it ready-made. Files that do
    not compile are left alone: importing them reports the error as Lambda does.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        compileall.compile_dir(directory, quiet=2, workers=1)


def _invalid_zip(detail: str) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        "Could not unzip uploaded file. Please check your file, then try to upload again."
        f" ({detail})"
    )


def _safe_relative_path(name: str) -> PurePosixPath:
    """The entry's path inside the root, or an error for anything that could leave it."""
    if "\\" in name or "\x00" in name:
        raise _invalid_zip(f"entry {name!r} has an illegal character")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and ":" in path.parts[0]):
        raise _invalid_zip(f"entry {name!r} is an absolute path")
    if any(part == ".." for part in path.parts):
        raise _invalid_zip(f"entry {name!r} leaves the code directory")
    return path


def _check_entries(archive: zipfile.ZipFile, limits: CodeLimits) -> list[zipfile.ZipInfo]:
    entries = archive.infolist()
    if len(entries) > limits.max_entries:
        raise _invalid_zip(f"more than {limits.max_entries} entries")
    declared = 0
    seen: set[str] = set()
    for info in entries:
        name = str(_safe_relative_path(info.filename))
        if name in seen and not info.is_dir():
            raise _invalid_zip(f"entry {info.filename!r} appears twice")
        seen.add(name)
        declared += info.file_size
    if declared > limits.max_unzipped_bytes:
        raise _unzipped_too_large(limits)
    return entries


def _unzipped_too_large(limits: CodeLimits) -> InvalidParameterValueException:
    return InvalidParameterValueException(
        f"Unzipped size must be smaller than {limits.max_unzipped_bytes} bytes"
    )


def unpack_zip(zip_bytes: bytes, destination: Path, limits: CodeLimits) -> int:
    """Unpack a deployment zip into ``destination``; returns the bytes written.

    Regular files and directories are written first, while the tree holds no symlink
    that a write could follow; symlinks come last, each created in a real directory,
    and every one is checked against the finished tree, so no chain of links can
    point outside ``destination``.

    Raises:
        InvalidParameterValueException: not a zip, a hostile entry, or over the size cap.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except (zipfile.BadZipFile, ValueError) as exc:
        raise _invalid_zip("not a zip file") from exc
    destination.mkdir(parents=True, exist_ok=True)
    root = destination.resolve()
    with archive:
        try:
            return _unpack_entries(archive, root, limits)
        except OSError as exc:
            raise _invalid_zip(f"entries cannot be unpacked: {exc.strerror or exc}") from exc


def _unpack_entries(archive: zipfile.ZipFile, root: Path, limits: CodeLimits) -> int:
    written = 0
    links: list[tuple[zipfile.ZipInfo, Path]] = []
    for info in _check_entries(archive, limits):
        target = root.joinpath(*_safe_relative_path(info.filename).parts)
        mode = (info.external_attr >> 16) & 0o177777
        if stat.S_ISLNK(mode):
            links.append((info, target))
        elif info.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            written += _copy_entry(archive, info, target, limits.max_unzipped_bytes - written)
            if written > limits.max_unzipped_bytes:
                raise _unzipped_too_large(limits)
            os.chmod(target, 0o755 if mode & 0o111 else 0o644)
    for info, target in links:
        written += _write_symlink(archive, info, target, root)
    for info, target in links:
        if not Path(os.path.realpath(target)).is_relative_to(root):
            raise _invalid_zip(f"symlink {info.filename!r} points outside the code directory")
    return written


def _write_symlink(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, root: Path
) -> int:
    link = archive.read(info)[:4096].decode("utf-8", "replace")
    if os.path.isabs(link) or "\x00" in link:
        raise _invalid_zip(f"symlink {info.filename!r} points outside the code directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    # The link must sit in a real directory of the tree, not behind another link.
    if Path(os.path.realpath(target.parent)) != target.parent:
        raise _invalid_zip(f"symlink {info.filename!r} is placed through another symlink")
    if not Path(os.path.normpath(target.parent / link)).is_relative_to(root):
        raise _invalid_zip(f"symlink {info.filename!r} points outside the code directory")
    target.symlink_to(link)
    return len(link)


def _copy_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    copied = 0
    try:
        with archive.open(info) as source, open(target, "wb") as sink:
            while chunk := source.read(_COPY_CHUNK):
                copied += len(chunk)
                if copied > budget:
                    return copied  # the caller raises; stop before writing past the cap
                sink.write(chunk)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        EOFError,
        NotImplementedError,
    ) as exc:
        raise _invalid_zip(f"entry {info.filename!r} is corrupt") from exc
    return copied
