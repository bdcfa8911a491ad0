"""LayerCatalog over a real SqliteStore and CodeStore; merged /opt trees; Layers validation."""

from __future__ import annotations

import io
import os
import stat
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from faas.api.validation import configuration_fields
from faas.catalog import FunctionCatalog
from faas.errors import (
    InvalidParameterValueException,
    ResourceNotFoundException,
    ValidationException,
)
from faas.layers import LayerCatalog, LayerMergeError, merge_trees, unzipped_size
from faas.models import FunctionConfig, LayerVersionState
from faas.store.code import CodeLimits, CodeStore
from faas.store.sqlite import SqliteStore

PREFIX = "arn:aws:lambda:us-east-1:000000000000:layer:"
ROLE = "arn:aws:iam::000000000000:role/r"
CAP = 100_000


def make_zip(files: dict[str, str], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


@dataclass
class Node:
    """The parts of a server that layers need, over one data directory."""

    root: Path
    store: SqliteStore
    code: CodeStore
    layers: LayerCatalog
    functions: FunctionCatalog

    @classmethod
    async def open(cls, root: Path) -> Node:
        store = SqliteStore(root / "db.sqlite3")
        await store.start()
        code = CodeStore(root / "code", CodeLimits(10_000_000, CAP, 1000))
        await code.start()
        layers = LayerCatalog(store, code, PREFIX, root / "opt", CAP)
        await layers.start()
        functions = FunctionCatalog(store, code, "arn:aws:lambda:us-east-1:0:function:", layers)
        await functions.start()
        await layers.collect_garbage(store)
        await code.collect_garbage(await store.code_hashes_in_use())
        return cls(root, store, code, layers, functions)

    async def close(self) -> None:
        await self.functions.stop()
        await self.layers.stop()
        await self.code.stop()
        await self.store.stop()

    async def create(
        self, name: str, layers: list[str], files: dict[str, str] | None = None
    ) -> FunctionConfig:
        fields = {"name": name, "runtime": "python3.12", "role": ROLE, "handler": "app.handler"}
        zip_bytes = make_zip(files or {"app.py": "def handler(e, c):\n    return 1\n"})
        return await self.functions.create({**fields, "layers": tuple(layers)}, zip_bytes)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    opened = await Node.open(tmp_path)
    yield opened
    await opened.close()


# -- catalog ---------------------------------------------------------------------------------


async def test_versions_count_up_per_layer(node: Node) -> None:
    first = await node.layers.publish("a", make_zip({"python/a.py": "A = 1\n"}), "one")
    second = await node.layers.publish("a", make_zip({"python/a.py": "A = 2\n"}))
    other = await node.layers.publish("b", make_zip({"b.txt": "b"}), compatible_runtimes=["go1.x"])
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.unzipped_size == len("A = 1\n")
    assert node.layers.get("a", 1) == first
    assert [x.version for x in node.layers.versions("a")] == [2, 1]
    assert [(x.name, x.version) for x in node.layers.latest_matching()] == [("a", 2), ("b", 1)]
    assert [x.name for x in node.layers.latest_matching(runtime="go1.x")] == ["b"]
    with pytest.raises(ResourceNotFoundException):
        node.layers.get("a", 3)


async def test_deleted_numbers_survive_a_restart(tmp_path: Path) -> None:
    node = await Node.open(tmp_path)
    for _ in range(3):
        await node.layers.publish("a", make_zip({"a.txt": "a"}))
    assert await node.layers.delete("a", 3)
    assert not await node.layers.delete("a", 3)
    assert not await node.layers.delete("nope", 1)
    await node.close()
    reopened = await Node.open(tmp_path)
    try:
        with pytest.raises(ResourceNotFoundException):
            reopened.layers.get("a", 3)
        assert [x.version for x in reopened.layers.versions("a")] == [2, 1]
        assert (await reopened.layers.publish("a", make_zip({"a.txt": "b"}))).version == 4
        states = {x.version: x.state for x in await reopened.store.load_layer_versions()}
        assert states[3] is LayerVersionState.PURGED
    finally:
        await reopened.close()


async def test_referenced_deleted_version_keeps_its_code(tmp_path: Path) -> None:
    node = await Node.open(tmp_path)
    used = await node.layers.publish("used", make_zip({"python/u.py": "U = 1\n"}))
    unused = await node.layers.publish("unused", make_zip({"python/n.py": "N = 1\n"}))
    config = await node.create("f", [PREFIX + "used:1"])
    await node.layers.delete("used", 1)
    await node.layers.delete("unused", 1)
    assert node.layers.directories(config) == [node.code.directory(used.code_sha256_hex)]
    await node.close()

    node = await Node.open(tmp_path)
    try:
        assert node.code.directory(used.code_sha256_hex).is_dir()
        assert not node.code.directory(unused.code_sha256_hex).exists()
        opt = await node.layers.opt_directory(node.functions.get("f"))
        assert opt is not None and (opt / "python" / "u.py").read_text() == "U = 1\n"
        # Still usable by the function that has it, through any later change.
        await node.functions.update_configuration("f", {"description": "x"}, None)
        await node.functions.update_configuration("f", {"layers": (PREFIX + "used:1",)}, None)
        with pytest.raises(InvalidParameterValueException, match="does not exist"):
            await node.create("g", [PREFIX + "used:1"])
    finally:
        await node.close()


async def test_check_refuses_what_lambda_refuses(node: Node) -> None:
    await node.layers.publish("a", make_zip({"a.txt": "a"}))
    await node.layers.publish("a", make_zip({"a.txt": "b"}))
    await node.layers.publish("big", make_zip({"big.bin": "x" * 60_000}))
    await node.layers.publish("big2", make_zip({"big2.bin": "y" * 60_000}))
    cases = {
        "does not exist": [PREFIX + "a:9"],
        "Two different versions": [PREFIX + "a:1", PREFIX + "a:2"],
        "Layers consume more": [PREFIX + "big:1", PREFIX + "big2:1"],
        "more than 5": [PREFIX + "a:1"] * 6,
    }
    for message, layers in cases.items():
        with pytest.raises(InvalidParameterValueException, match=message):
            await node.create("f", layers)
    with pytest.raises(InvalidParameterValueException, match="combined with layers"):
        await node.create("f", [PREFIX + "big:1"], {"app.py": "z" * 50_000})
    with pytest.raises(ResourceNotFoundException):
        node.functions.get("f")
    config = await node.create("f", [PREFIX + "big:1"])
    assert node.layers.references(config) == [
        (PREFIX + "big:1", node.layers.get("big", 1).code_size)
    ]


async def test_opt_directory_overlays_in_order(node: Node) -> None:
    await node.layers.publish(
        "base", make_zip({"python/m.py": "base", "bin/tool": "base", "x/a": "a"})
    )
    await node.layers.publish("top", make_zip({"python/m.py": "top", "lib/l.so": "top"}))
    config = await node.create("f", [PREFIX + "base:1", PREFIX + "top:1"])
    opt = await node.layers.opt_directory(config)
    assert opt is not None
    assert (opt / "python" / "m.py").read_text() == "top"
    assert (opt / "bin" / "tool").read_text() == "base"
    assert (opt / "lib" / "l.so").read_text() == "top"
    reversed_config = await node.create("g", [PREFIX + "top:1", PREFIX + "base:1"])
    other = await node.layers.opt_directory(reversed_config)
    assert other is not None and other != opt
    assert (other / "python" / "m.py").read_text() == "base"
    assert await node.layers.opt_directory(await node.create("h", [])) is None


# -- merging ---------------------------------------------------------------------------------


def _tree(root: Path, files: dict[str, str], links: dict[str, str] | None = None) -> Path:
    root.mkdir(parents=True)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    for name, target in (links or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)
    return root


def test_later_trees_replace_files_directories_and_links(tmp_path: Path) -> None:
    first = _tree(tmp_path / "1", {"a/x": "1", "b": "file", "keep": "1"}, {"c": "keep"})
    second = _tree(tmp_path / "2", {"a/x": "2", "b/inner": "dir", "c": "now a file"})
    target = tmp_path / "merged"
    target.mkdir()
    merge_trees([first, second], target)
    assert (target / "a" / "x").read_text() == "2"
    assert (target / "b" / "inner").read_text() == "dir"
    assert not (target / "c").is_symlink() and (target / "c").read_text() == "now a file"
    assert (target / "keep").read_text() == "1"
    assert os.stat(target / "keep").st_ino == os.stat(first / "keep").st_ino  # a hard link
    assert (first / "b").read_text() == "file", "the sources must never change"


def test_a_directory_never_writes_through_an_earlier_link(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    first = _tree(tmp_path / "1", {}, {"d": "../outside"})  # refused by the code store anyway
    second = _tree(tmp_path / "2", {"d/planted": "x"})
    target = tmp_path / "merged"
    target.mkdir()
    merge_trees([first, second], target)
    assert list(outside.iterdir()) == []
    assert (target / "d" / "planted").read_text() == "x"


def test_links_that_escape_only_in_combination_are_refused(tmp_path: Path) -> None:
    # Alone, each tree is safe: in the first, s is a real directory; in the second, s -> .
    first = _tree(tmp_path / "1", {"s/f": "x"}, {"a": "s/.."})
    second = _tree(tmp_path / "2", {}, {"s": "."})
    target = tmp_path / "merged"
    target.mkdir()
    with pytest.raises(LayerMergeError, match="outside"):
        merge_trees([first, second], target)


def test_unzipped_size_counts_entries_and_link_targets(tmp_path: Path) -> None:
    zip_bytes = make_zip({"a": "12345", "d/b": "123"}, {"l": "a"})
    assert unzipped_size(zip_bytes) == 5 + 3 + 1
    (tmp_path / "code.zip").write_bytes(zip_bytes)
    assert unzipped_size(tmp_path / "code.zip") == 9


# -- the Layers member -----------------------------------------------------------------------


def _body(**members: object) -> dict[str, object]:
    return {"Role": ROLE, "Runtime": "python3.12", "Handler": "app.handler", **members}


def test_layers_member_is_parsed_in_order() -> None:
    arns = [PREFIX + "b:2", PREFIX + "a:1"]
    assert configuration_fields(_body(Layers=arns), creating=True)["layers"] == tuple(arns)
    assert configuration_fields({"Layers": []}, creating=False) == {"layers": ()}
    assert "layers" not in configuration_fields({"Timeout": 3}, creating=False)


@pytest.mark.parametrize(
    "layers",
    [[PREFIX + "a"], ["arn:aws:lambda:us-east-1:1:layer:a:1"], [PREFIX + "a b:1"], [3], "x"],
)
def test_malformed_layers_are_validation_errors(layers: object) -> None:
    with pytest.raises(ValidationException, match="'layers'"):
        configuration_fields(_body(Layers=layers), creating=True)


def test_more_than_five_layers_is_a_parameter_error() -> None:
    with pytest.raises(InvalidParameterValueException, match="5"):
        configuration_fields(_body(Layers=[PREFIX + f"l{i}:1" for i in range(6)]), True)
