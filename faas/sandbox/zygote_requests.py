"""The requests the node sends its zygote and the state it keeps while they are answered."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import select
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from faas.sandbox.namespaces import IsolationSpec


@dataclass(frozen=True, slots=True)
class ForkRequest:
    """One environment to fork: what the exec path passes through argv, env, cwd and fds.

    The child makes ``isolation.tmp_directory`` itself (as root, before dropping to the
    environment's user).
    """

    env: Mapping[str, str]
    cwd: str
    cgroup_procs: Sequence[str]
    isolation: IsolationSpec
    control: socket.socket | None = None  # the runtime's end of its frame socket
    template: socket.socket | None = None  # a SnapStart template's end of its fork socket


class ParkedChild:
    """A zygote child waiting, inside its cgroup, for the `spawn` that makes it an environment.

    Owns its pidfd until ``hand_over`` gives it to the ForkedProcess it becomes.
    """

    __slots__ = ("_pidfd", "park_id", "pid", "returncode")

    def __init__(self, park_id: int, pid: int, pidfd: int) -> None:
        self.park_id = park_id
        self.pid = pid
        self.returncode: int | None = None  # set if it ended while parked
        self._pidfd: int | None = pidfd

    def __repr__(self) -> str:
        return f"<ParkedChild {self.pid} park_id={self.park_id} returncode={self.returncode}>"

    @property
    def is_waiting(self) -> bool:
        """Alive and not yet handed over. The pidfd is asked directly (it turns readable
        when the child exits), so a child that just died counts as gone even before the
        zygote's exit report arrives."""
        if self._pidfd is None or self.returncode is not None:
            return False
        readable, _, _ = select.select([self._pidfd], [], [], 0)
        return not readable

    @property
    def pidfd(self) -> int:
        if self._pidfd is None:
            raise RuntimeError(f"parked child {self.pid} was handed over or has ended")
        return self._pidfd

    def hand_over(self) -> int:
        """Give up the pidfd to the process this child became."""
        pidfd = self.pidfd
        self._pidfd = None
        return pidfd

    def end(self, returncode: int) -> None:
        """It ended (or died with its zygote) before becoming an environment."""
        self.returncode = returncode
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None


@dataclass(slots=True)
class Pending:
    """One request waiting for its answer, and what the answer will need."""

    # Any: a `spawn` resolves to a ForkedProcess, a `park` to a ParkedChild.
    future: asyncio.Future[Any]
    parked: ParkedChild | None = None  # the parked child a `spawn` names
    stdout: asyncio.StreamReader | None = None
    stderr: asyncio.StreamReader | None = None
    transports: list[asyncio.BaseTransport] = field(default_factory=list)

    def succeed(self, result: Any) -> bool:
        """Deliver the answer; False if nobody waits for it any more."""
        if self.future.done():
            return False
        self.future.set_result(result)
        return True

    def fail(self, error: BaseException) -> None:
        self.close()
        if not self.future.done():
            self.future.set_exception(error)

    def close(self) -> None:
        """Close the output pipes of a spawn that will not happen."""
        for transport in self.transports:
            transport.close()
        self.transports.clear()


async def open_output_pipes(pending: Pending, loop: asyncio.AbstractEventLoop) -> tuple[int, int]:
    """Make the stdout and stderr pipes of a spawn; their write ends, for the child.

    The read ends become ``pending.stdout`` and ``pending.stderr``.
    """
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    pipes = [os.fdopen(stdout_read, "rb", buffering=0), os.fdopen(stderr_read, "rb", buffering=0)]
    pending.stdout = asyncio.StreamReader(loop=loop)
    pending.stderr = asyncio.StreamReader(loop=loop)
    try:
        for reader, pipe in zip((pending.stdout, pending.stderr), pipes, strict=True):
            protocol = functools.partial(asyncio.StreamReaderProtocol, reader, loop=loop)
            transport, _ = await loop.connect_read_pipe(protocol, pipe)
            pending.transports.append(transport)
    except BaseException:
        pending.close()
        for pipe in pipes:
            pipe.close()  # a no-op for those a transport closed already
        for fd in (stdout_write, stderr_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    return stdout_write, stderr_write


def spawn_frame(request: ForkRequest, fd_names: list[str], park_id: int | None) -> dict[str, Any]:
    """The `spawn` frame of ``request`` (PROTOCOL.md), its id still to be added."""
    isolation = request.isolation
    uid, gid = isolation.user_ids if isolation.user_ids is not None else (None, None)
    return {
        "t": "spawn",
        "env": dict(request.env),
        "cwd": request.cwd,
        "cgroup_procs": list(request.cgroup_procs),
        "parked": park_id,
        "isolation": {
            "unshare": isolation.is_unshared,
            "tmp": str(isolation.tmp_directory),
            "keep": list(isolation.keep_paths),
            "opt": isolation.opt_directory,
            "uid": uid,
            "gid": gid,
            "nofile": isolation.max_open_files,
            "fsize": isolation.max_file_bytes,
        },
        "fds": fd_names,
    }
