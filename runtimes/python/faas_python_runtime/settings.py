"""The runtime's own settings, read once from the environment and then hidden from user code."""

from __future__ import annotations

import os
import signal
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import NoReturn

PRIVATE_PREFIX = "_FAAS_"
CONTROL_FD_VAR = "_FAAS_CONTROL_FD"
MAX_RESPONSE_BYTES_VAR = "_FAAS_MAX_RESPONSE_BYTES"
HANDLER_VAR = "_HANDLER"
DEFAULT_MAX_RESPONSE_BYTES = 6291556


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """What the node tells the runtime through `_FAAS_*` variables and `_HANDLER`."""

    control_fd: int
    handler_name: str
    max_response_bytes: int

    @classmethod
    def take_from(cls, environ: MutableMapping[str, str]) -> RuntimeSettings:
        """Read the settings, then remove every `_FAAS_*` variable from `environ`.

        Raises:
            KeyError: `_FAAS_CONTROL_FD` is missing.
            ValueError: a numeric setting is not an integer.
        """
        settings = cls(
            control_fd=int(environ[CONTROL_FD_VAR]),
            handler_name=environ.get(HANDLER_VAR, ""),
            max_response_bytes=int(environ.get(MAX_RESPONSE_BYTES_VAR, DEFAULT_MAX_RESPONSE_BYTES)),
        )
        for name in [name for name in environ if name.startswith(PRIVATE_PREFIX)]:
            del environ[name]
        return settings


def take_settings() -> RuntimeSettings:
    """Read the settings from (and scrub them out of) this process's environment."""
    return RuntimeSettings.take_from(os.environ)


def kill_own_group() -> NoReturn:
    """SIGKILL our process group if we lead it (the node starts us in our own session).

    A runtime started any other way (a test, a shell) only exits: it must never take
    down a process group that is not its own.
    """
    if os.getpgid(0) == os.getpid():
        os.killpg(0, signal.SIGKILL)
    os._exit(1)
