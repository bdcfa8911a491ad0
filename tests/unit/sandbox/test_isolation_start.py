"""Isolation chooses its mode in the background; nothing may read it before the choice."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from faas.sandbox.namespaces import Isolation, IsolationMode


async def test_mode_is_chosen_in_the_background_and_read_only_after_ready(tmp_path: Path) -> None:
    isolation = Isolation(tmp_path / "tmp", "nobody")
    with pytest.raises(RuntimeError):
        await isolation.ready()  # not started
    await isolation.start({"python": [str(tmp_path)]})
    assert (tmp_path / "tmp").is_dir()  # made before start returns
    with pytest.raises(RuntimeError, match="not chosen"):
        _ = isolation.mode  # the probes have not even begun
    await isolation.ready()
    can_unshare = os.geteuid() == 0 and shutil.which("unshare") is not None
    expected = IsolationMode.NAMESPACE if can_unshare else IsolationMode.TMPDIR
    assert isolation.mode is expected
    spec = isolation.describe("env-1", 512, "python")
    assert spec.is_unshared is (expected is IsolationMode.NAMESPACE)
    await isolation.stop()
    assert not (tmp_path / "tmp").exists()


async def test_stop_while_the_probes_run_ends_them(tmp_path: Path) -> None:
    isolation = Isolation(tmp_path / "tmp", "nobody")
    await isolation.start({"python": [str(tmp_path)]})
    await isolation.stop()  # at once: the probes are cancelled, the directory removed
    assert not (tmp_path / "tmp").exists()
