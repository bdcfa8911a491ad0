"""A SnapStart template: one function version's environment, initialized once, forking others.

Design notes: the template is forked by the zygote like any environment of the version
(its own cgroup and private /tmp, AWS_LAMBDA_INITIALIZATION_TYPE=snap-start) plus a second
socket, on which it serves forks once Init is done (the runtime's template.py). ``start``
waits for Init (log frames go to ``log``), then asks for the snapshot (the before-snapshot
hooks run); from then on ``spawn`` forks restored copies: each becomes an environment
that never runs Init, only the after-restore hooks. Copies die with their template, so a
template lives as long as its version's environments may be made from it. If it dies,
its state becomes LOST and callers start environments the usual way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import socket
from collections.abc import Callable
from typing import Any

import msgpack
import orjson

from faas.errors import InitFailed, PlatformError
from faas.models import FunctionConfig
from faas.sandbox.environment_cgroup import EnvironmentCgroup
from faas.sandbox.fork_channel import ForkChannel, ZygoteUnavailable
from faas.sandbox.forked_process import ForkedProcess
from faas.sandbox.namespaces import Isolation
from faas.sandbox.zygote import Zygote
from faas.sandbox.zygote_requests import ForkRequest

log = logging.getLogger(__name__)

# errorType strings of the SnapStart phases, as the runtime reports them.
BEFORE_SNAPSHOT_ERROR = "Runtime.BeforeSnapshotError"
INIT_TIMEOUT = "Runtime.InitTimeout"
INIT_EXIT = "Runtime.ExitError"
_READ_BYTES = 64 * 1024
_STOP_WAIT_S = 2.0

Log = Callable[[bytes], None]
Frame = dict[str, Any]  # Any: msgpack map values


class TemplateUnavailable(PlatformError):
    """This version can have no template here (why is the message); start it as usual."""


class TemplateState(enum.Enum):
    NEW = "new"  # constructed
    STARTING = "starting"  # forked, running Init or the before-snapshot hooks
    READY = "ready"  # snapshotted: forks restored copies
    LOST = "lost"  # died; no more copies
    STOPPED = "stopped"  # stopped, cgroup and /tmp released


class Template:
    """The initialized template of one function version.

    Args:
        cgroup: the template's own cgroup (its memory is charged there, copies' to theirs).
        log: where the template's output goes (Init, hooks): the function's log.
    """

    __slots__ = ("_cgroup", "_channel", "_env_id", "_isolation", "_log", "_process",
                 "_readers", "config", "state")  # fmt: skip

    def __init__(
        self,
        config: FunctionConfig,
        env_id: str,
        cgroup: EnvironmentCgroup,
        isolation: Isolation,
        log_output: Log,
    ) -> None:
        self.config = config
        self._env_id = env_id
        self._cgroup = cgroup
        self._isolation = isolation
        self._log = log_output
        self.state = TemplateState.NEW
        self._process: ForkedProcess | None = None
        self._channel: ForkChannel | None = None
        self._readers: list[asyncio.Task[None]] = []

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self, zygote: Zygote, request: ForkRequest, init_timeout_s: float) -> None:
        """Fork the template from ``zygote``, run Init, then the before-snapshot hooks.

        Raises:
            InitFailed: Init or a before-snapshot hook failed, or ran out of time.
            TemplateUnavailable: the zygote could not fork it.
        """
        if self.state is not TemplateState.NEW:
            raise RuntimeError(f"template cannot start from {self.state.value}")
        self.state = TemplateState.STARTING
        control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        forks, forks_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            request = dataclasses.replace(request, control=control_child, template=forks_child)
            self._process = await zygote.spawn(request)
        except ZygoteUnavailable as exc:
            control.close()
            forks.close()
            raise TemplateUnavailable(f"the zygote cannot fork a template: {exc}") from exc
        finally:
            control_child.close()
            forks_child.close()
        self._channel = ForkChannel(forks, init_timeout_s, self._on_lost)
        await self._cgroup.attach(self._process.pid)
        for stream in (self._process.stdout, self._process.stderr):
            self._readers.append(asyncio.create_task(self._pump(stream)))
        initialized: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._readers.append(asyncio.create_task(self._read_frames(control, initialized)))
        try:
            async with asyncio.timeout(init_timeout_s):
                frame = await initialized
        except TimeoutError:
            raise _failure(
                INIT_TIMEOUT, f"Init did not finish within {init_timeout_s:g}s"
            ) from None
        if frame.get("t") != "ready":
            raise InitFailed(_error_type(frame), bytes(frame.get("payload") or b"{}"))
        try:
            await self._channel.call({"t": "snapshot"})
        except ZygoteUnavailable as exc:
            payload = str(exc).encode()
            raise InitFailed(
                _error_type({"payload": payload}, BEFORE_SNAPSHOT_ERROR), payload
            ) from exc
        await self._cgroup.set_init_boost(False)
        self.state = TemplateState.READY

    async def spawn(self, request: ForkRequest) -> ForkedProcess:
        """Fork one restored copy for ``request`` (its cgroup, /tmp, variables, sockets).

        Raises:
            ZygoteUnavailable: the template is not ready, is gone, or refused.
        """
        if self.state is not TemplateState.READY or self._channel is None:
            raise ZygoteUnavailable(f"the template is {self.state.value}")
        return await self._channel.spawn(request, None)

    async def stop(self) -> None:
        """End the template (its copies end with it) and release its cgroup and /tmp."""
        if self.state is TemplateState.STOPPED:
            return
        self.state = TemplateState.STOPPED
        if self._channel is not None:
            self._channel.close("the template was stopped")  # it exits on end of file
        if self._process is not None:
            try:
                await asyncio.wait_for(self._process.wait(), _STOP_WAIT_S)
            except TimeoutError:
                self._process.kill()
        for task in self._readers:
            task.cancel()
        for task in self._readers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._cgroup.remove()
        await self._isolation.release(self._env_id)

    def _on_lost(self, reason: str) -> None:
        if self.state in (TemplateState.STARTING, TemplateState.READY):
            log.warning("SnapStart template of %s:%s lost: %s",
                        self.config.name, self.config.version, reason)  # fmt: skip
            self.state = TemplateState.LOST

    async def _pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(_READ_BYTES):
            self._log(chunk)

    async def _read_frames(self, sock: socket.socket, initialized: asyncio.Future[Frame]) -> None:
        """The template's frame socket: log frames to the log; the first `ready` or
        `init_error` (or end of file) settles ``initialized``."""
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        unpacker = msgpack.Unpacker(raw=False)
        try:
            while data := await reader.read(_READ_BYTES):
                unpacker.feed(data)
                for frame in unpacker:
                    if frame.get("t") == "log":
                        self._log(bytes(frame.get("data") or b""))
                    elif not initialized.done():
                        initialized.set_result(frame)
            if not initialized.done():
                message = "Runtime exited with error before Init finished"
                initialized.set_result({"t": "init_error", "payload": _error(INIT_EXIT, message)})
        finally:
            writer.close()


def _error(error_type: str, message: str) -> bytes:
    return orjson.dumps({"errorType": error_type, "errorMessage": message})


def _failure(error_type: str, message: str) -> InitFailed:
    return InitFailed(error_type, _error(error_type, message))


def _error_type(frame: Frame, default: str = "Runtime.Unknown") -> str:
    try:
        value = orjson.loads(bytes(frame.get("payload") or b"{}")).get("errorType")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return default
    return str(value) if value else default
