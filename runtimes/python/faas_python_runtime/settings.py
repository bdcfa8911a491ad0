"""The runtime's own settings, read once from the environment and then hidden from user code."""

from __future__ import annotations

import enum
import os
import signal
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import NoReturn

PRIVATE_PREFIX = "_FAAS_"
CONTROL_FD_VAR = "_FAAS_CONTROL_FD"
TRANSPORT_VAR = "_FAAS_TRANSPORT"
MAX_RESPONSE_BYTES_VAR = "_FAAS_MAX_RESPONSE_BYTES"
PEAK_MEMORY_FILE_VAR = "_FAAS_PEAK_MEMORY_FILE"
PARENT_PID_VAR = "_FAAS_PARENT_PID"
TEMPLATE_FD_VAR = "_FAAS_TEMPLATE_FD"
HANDLER_VAR = "_HANDLER"
RUNTIME_API_VAR = "AWS_LAMBDA_RUNTIME_API"
DEFAULT_MAX_RESPONSE_BYTES = 6291556


class TransportKind(enum.StrEnum):
    """How the runtime talks to the node (the value is what `_FAAS_TRANSPORT` names)."""

    FRAMES = "frames"  # msgpack frames over the Unix socket `_FAAS_CONTROL_FD` (PROTOCOL.md)
    RUNTIME_API = "runtime-api"  # Lambda's Runtime API over HTTP at `AWS_LAMBDA_RUNTIME_API`


def _choose_transport(environ: MutableMapping[str, str]) -> TransportKind:
    """`_FAAS_TRANSPORT` if set, else frames when a control fd is given, else the Runtime API."""
    named = environ.get(TRANSPORT_VAR)
    if named:
        return TransportKind(named)
    if CONTROL_FD_VAR in environ:
        return TransportKind.FRAMES
    if RUNTIME_API_VAR in environ:
        return TransportKind.RUNTIME_API
    raise KeyError(f"neither {CONTROL_FD_VAR} nor {RUNTIME_API_VAR} is set")


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """What the node tells the runtime through `_FAAS_*` variables, `_HANDLER` and
    `AWS_LAMBDA_RUNTIME_API`."""

    transport: TransportKind
    control_fd: int | None  # set for FRAMES only
    runtime_api_address: str | None  # `host:port`, set for RUNTIME_API only
    handler_name: str
    max_response_bytes: int
    peak_memory_file: str | None = None  # the environment's cgroup high-water mark, in bytes
    # A SnapStart template (template.py): after Init, fork restored copies on this socket.
    template_fd: int | None = None

    @classmethod
    def take_from(cls, environ: MutableMapping[str, str]) -> RuntimeSettings:
        """Read the settings, then remove every `_FAAS_*` variable from `environ`.

        `AWS_LAMBDA_RUNTIME_API` stays visible to user code, as on Lambda.

        Raises:
            KeyError: the chosen transport's variable (`_FAAS_CONTROL_FD` or
                `AWS_LAMBDA_RUNTIME_API`) is missing, or neither is set.
            ValueError: a numeric setting is not an integer, or `_FAAS_TRANSPORT` names
                no transport.
        """
        transport = _choose_transport(environ)
        is_frames = transport is TransportKind.FRAMES
        settings = cls(
            transport=transport,
            control_fd=int(environ[CONTROL_FD_VAR]) if is_frames else None,
            runtime_api_address=None if is_frames else environ[RUNTIME_API_VAR],
            handler_name=environ.get(HANDLER_VAR, ""),
            max_response_bytes=int(environ.get(MAX_RESPONSE_BYTES_VAR, DEFAULT_MAX_RESPONSE_BYTES)),
            peak_memory_file=environ.get(PEAK_MEMORY_FILE_VAR) or None,
            template_fd=int(environ[TEMPLATE_FD_VAR]) if environ.get(TEMPLATE_FD_VAR) else None,
        )
        for name in [name for name in environ if name.startswith(PRIVATE_PREFIX)]:
            del environ[name]
        return settings


def expected_parent_pid() -> int:
    """The pid whose death must end us: `_FAAS_PARENT_PID` if set (a zygote names itself, as
    it may die between our fork and this call), else our parent now."""
    named = os.environ.get(PARENT_PID_VAR)
    return int(named) if named else os.getppid()


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
