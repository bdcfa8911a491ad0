from __future__ import annotations

import io
import stat
import warnings
import zipfile
from pathlib import Path

import pytest

from faas.errors import InvalidParameterValueException, RequestTooLargeException
from faas.store.code import CodeLimits, CodeStore, unpack_zip

LIMITS = CodeLimits(max_zip_bytes=10_000_000, max_unzipped_bytes=1_000_000, max_entries=100)


def make_zip(entries: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def test_unpacks_files_and_keeps_exec_bit(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        archive.writestr(info, "#!/bin/sh\n")
        archive.writestr("pkg/mod.py", "x = 1\n")
    written = unpack_zip(buffer.getvalue(), tmp_path, LIMITS)
    assert written == len("#!/bin/sh\n") + len("x = 1\n")
    assert (tmp_path / "pkg" / "mod.py").read_text() == "x = 1\n"
    assert (tmp_path / "bootstrap").stat().st_mode & 0o111


@pytest.mark.parametrize("name", ["../evil.py", "/abs.py", "a/../../evil.py", "C:/x.py", "a\\b.py"])
def test_hostile_paths_are_refused(tmp_path: Path, name: str) -> None:
    target = tmp_path / "code"
    target.mkdir()
    with pytest.raises(InvalidParameterValueException):
        unpack_zip(make_zip({name: b"boom"}), target, LIMITS)
    assert not (tmp_path / "evil.py").exists()
    assert list(target.iterdir()) == []


def test_symlink_leaving_the_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterValueException, match="symlink"):
        unpack_zip(make_zip({}, {"link": "../../etc/passwd"}), tmp_path, LIMITS)
    unpack_zip(make_zip({"a.txt": b"a"}, {"b.txt": "a.txt"}), tmp_path, LIMITS)
    assert (tmp_path / "b.txt").read_text() == "a"


def test_not_a_zip(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterValueException, match="unzip"):
        unpack_zip(b"this is not a zip", tmp_path, LIMITS)


def test_bomb_stops_at_the_cap_even_when_headers_lie(tmp_path: Path) -> None:
    data = make_zip({"zeros.bin": b"\0" * 3_000_000})
    with pytest.raises(InvalidParameterValueException, match="Unzipped size"):
        unpack_zip(data, tmp_path, LIMITS)
    # Forge the central directory's and local header's sizes so only counting catches it.
    archive = zipfile.ZipFile(io.BytesIO(data))
    info = archive.infolist()[0]
    forged = bytearray(data)
    size_bytes = info.file_size.to_bytes(4, "little")
    small = (10).to_bytes(4, "little")
    forged = bytearray(bytes(forged).replace(size_bytes, small))
    target = tmp_path / "forged"
    target.mkdir()
    with pytest.raises(InvalidParameterValueException):
        unpack_zip(bytes(forged), target, LIMITS)
    total = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    assert total <= LIMITS.max_unzipped_bytes


def test_too_many_entries(tmp_path: Path) -> None:
    with pytest.raises(InvalidParameterValueException, match="entries"):
        unpack_zip(make_zip({f"f{i}": b"" for i in range(101)}), tmp_path, LIMITS)


async def test_store_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    store = CodeStore(tmp_path, LIMITS)
    await store.start()
    data = make_zip({"app.py": b"def handler(e, c):\n    return 1\n"})
    first = await store.put(data)
    second = await store.put(data)
    assert first == second
    assert (first.directory / "app.py").is_file()
    assert store.zip_path(first.sha256_hex).read_bytes() == data
    assert await store.collect_garbage(keep=set()) == 1
    assert not first.directory.exists()


async def test_store_refuses_oversize_zip(tmp_path: Path) -> None:
    store = CodeStore(tmp_path, CodeLimits(100, 1000, 10))
    await store.start()
    with pytest.raises(RequestTooLargeException):
        await store.put(b"x" * 101)


def test_file_behind_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO(make_zip({"sub/keep.txt": b"k"}, {"d": "sub"}))
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr("d/x.txt", "x")
    with pytest.raises(InvalidParameterValueException):
        unpack_zip(buffer.getvalue(), tmp_path / "code", LIMITS)


def test_symlink_chain_cannot_climb_out(tmp_path: Path) -> None:
    # Each link looks harmless when made; together l0 would point two levels up.
    chain = {"l0": "l1/..", "l1": "l2/..", "l2": "."}
    target = tmp_path / "a" / "b" / "code"
    with pytest.raises(InvalidParameterValueException, match="outside"):
        unpack_zip(make_zip({}, chain), target, LIMITS)


def test_symlink_loop_stays_inside_and_conflicts_are_refused(tmp_path: Path) -> None:
    unpack_zip(make_zip({}, {"a": "b", "b": "a"}), tmp_path / "1", LIMITS)
    assert (tmp_path / "1" / "a").is_symlink()
    with pytest.raises(InvalidParameterValueException):
        unpack_zip(make_zip({"f": b"file", "f/g": b"under a file"}), tmp_path / "2", LIMITS)
    with pytest.raises(InvalidParameterValueException, match="twice"):
        unpack_zip(_duplicate_zip(), tmp_path / "3", LIMITS)


def _duplicate_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate
        archive.writestr("app.py", "a")
        archive.writestr("app.py", "b")
    return buffer.getvalue()
