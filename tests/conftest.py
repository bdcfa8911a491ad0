"""Shared fixtures: real faas servers (see faas_support for the helpers tests import).

Every environment has a private /tmp (its own mount namespace), so the temporary
directories tests share with handlers live under /var/tmp instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from faas_support import make_module_server, make_server

__all__ = ["make_module_server", "make_server"]

_BASETEMP_ROOT = Path("/var/tmp")


def pytest_configure(config: pytest.Config) -> None:
    if config.option.basetemp is None and _BASETEMP_ROOT.is_dir():
        path = _BASETEMP_ROOT / f"faas-pytest-{os.getpid()}"
        config.option.basetemp = str(path)
        config.stash[_basetemp_key] = path


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_basetemp_key, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


_basetemp_key = pytest.StashKey[Path]()
