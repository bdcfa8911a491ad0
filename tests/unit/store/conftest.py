from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from faas.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A started embedded store in ``tmp_path/db.sqlite3``, stopped after the test."""
    opened = SqliteStore(tmp_path / "db.sqlite3")
    await opened.start()
    try:
        yield opened
    finally:
        await opened.stop()
