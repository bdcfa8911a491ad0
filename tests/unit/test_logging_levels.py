"""The node's --log-level: DEBUG reaches faas's own loggers, never the libraries'."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from faas.logs import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    faas_logger = logging.getLogger("faas")
    saved = (root.handlers[:], root.level, faas_logger.level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]
    faas_logger.setLevel(saved[2])


def test_debug_is_for_faas_only(restored_logging: None) -> None:
    configure_logging("DEBUG")
    assert logging.getLogger("faas.events.mappings").isEnabledFor(logging.DEBUG)
    # aiosqlite logs every statement with its parameters at DEBUG.
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("aiosqlite").isEnabledFor(logging.INFO)


def test_a_quieter_level_applies_to_everyone(restored_logging: None) -> None:
    configure_logging("warning")
    assert not logging.getLogger("faas.server").isEnabledFor(logging.INFO)
    assert not logging.getLogger("aiosqlite").isEnabledFor(logging.INFO)


def test_an_unknown_level_is_refused(restored_logging: None) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("LOUD")
