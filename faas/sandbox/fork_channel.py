"""The node's connection to a fork server (a zygote, or a SnapStart template): requests, answers,
and the exit reports of the children it forked.

Design notes: one Unix SOCK_SEQPACKET socket, one msgpack map per packet, descriptors riding
along by SCM_RIGHTS (PROTOCOL.md, "The zygote"). Answers are matched to requests by id;
``exited`` reports are routed by pid to the ``ForkedProcess`` or ``ParkedChild`` waiting
for them. When the server dies or stops answering, ``close`` fails every pending request
with ``ZygoteUnavailable``, has each running child watched through its pidfd instead, and
counts parked children as dead (they die with their server); ``on_lost`` tells the owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

import msgpack

from faas.errors import PlatformError
from faas.sandbox.forked_process import ForkedProcess
from faas.sandbox.zygote_requests import (
    ForkRequest,
    ParkedChild,
    Pending,
    open_output_pipes,
    spawn_frame,
)

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024  # far above any environment; a small buffer reads faster
MAX_FDS_PER_FRAME = 8

Frame = dict[str, Any]  # Any: msgpack map values


class ZygoteUnavailable(PlatformError):
    """The zygote could not fork this environment (dead, wedged, or refused); exec instead."""


class ForkChannel:
    """Requests to one fork server over its socket, and the children it reports on.

    Args:
        sock: the node's end, connected; owned (closed by ``close``).
        request_timeout_s: how long one request may take to be answered.
        on_lost: called once, with the reason, when the server is gone or wedged.
    """

    __slots__ = ("_children", "_next_id", "_on_lost", "_parked", "_pending", "_sock",
                 "_timeout_s", "ready")  # fmt: skip

    def __init__(
        self, sock: socket.socket, request_timeout_s: float, on_lost: Callable[[str], None]
    ) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self._sock: socket.socket | None = sock
        self._timeout_s = request_timeout_s
        self._on_lost = on_lost
        self._pending: dict[int, Pending] = {}
        self._children: dict[int, ForkedProcess] = {}  # by pid
        self._parked: dict[int, ParkedChild] = {}  # by pid
        self._next_id = 0
        self.ready: asyncio.Future[int] = loop.create_future()  # the server's `ready` pid
        loop.add_reader(sock.fileno(), self._on_readable)

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    async def spawn(self, request: ForkRequest, parked: ParkedChild | None) -> ForkedProcess:
        """Fork one environment, or make ``parked`` become it.

        Raises:
            ZygoteUnavailable: refused, or the server is gone (``is_open`` then says so).
        """
        loop = asyncio.get_running_loop()
        pending = Pending(loop.create_future(), parked=parked)
        write_ends = await open_output_pipes(pending, loop)
        fds = [*write_ends]
        names = ["stdout", "stderr"]
        for name, sock in (("control", request.control), ("template", request.template)):
            if sock is not None:
                names.append(name)
                fds.append(sock.fileno())
        try:
            frame = spawn_frame(request, names, parked.park_id if parked is not None else None)
            result = await self.request(frame, fds, pending)
        finally:
            for fd in write_ends:
                os.close(fd)  # the child has its copies now (or never will)
        assert isinstance(result, ForkedProcess)
        return result

    async def park(self, cgroup_procs: list[str], is_unshared: bool) -> ParkedChild:
        """A child waiting in the cgroup of ``cgroup_procs`` for a spawn naming it.

        Raises:
            ZygoteUnavailable: refused, or the server is gone.
        """
        pending = Pending(asyncio.get_running_loop().create_future())
        frame = {"t": "park", "cgroup_procs": cgroup_procs, "unshare": is_unshared}
        result = await self.request(frame, [], pending)
        assert isinstance(result, ParkedChild)
        return result

    async def call(self, frame: Frame) -> Frame:
        """Any other request, answered by ``{"t": "done", ...}``; the answer.

        Raises:
            ZygoteUnavailable: refused (``failed``), or the server is gone.
        """
        pending = Pending(asyncio.get_running_loop().create_future())
        result = await self.request(frame, [], pending)
        assert isinstance(result, dict)
        return result

    def discard(self, parked: ParkedChild) -> None:
        """Kill a parked child that will not be used (its exit is reported as any other)."""
        if parked.is_waiting:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(parked.pidfd, signal.SIGKILL)

    async def request(self, frame: Frame, fds: list[int], pending: Pending) -> Any:
        """Send one request and wait for its answer (at most ``request_timeout_s``).

        Any: a ForkedProcess, a ParkedChild or a frame, by the kind of request.
        """
        request_id = self._next_id = self._next_id + 1
        self._pending[request_id] = pending
        try:
            await self._send({**frame, "id": request_id}, fds)
            async with asyncio.timeout(self._timeout_s):
                return await pending.future
        except TimeoutError:
            self.close("it did not answer in time")
            raise ZygoteUnavailable("the fork server did not answer in time") from None
        finally:
            if self._pending.pop(request_id, None) is not None:
                pending.close()  # failed or cancelled before its answer came

    def close(self, reason: str) -> None:
        """Stop using the server: fail what waits on it, watch children by pidfd."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        error = ZygoteUnavailable(reason)
        if not self.ready.done():
            self.ready.set_exception(error)
            self.ready.exception()  # retrieved: nobody may be waiting for it any more
        pending, self._pending = self._pending, {}
        for request in pending.values():
            request.fail(error)
        children, self._children = self._children, {}
        for child in children.values():
            child.watch_without_zygote()
        parked, self._parked = self._parked, {}
        for waiting in parked.values():
            waiting.end(-signal.SIGKILL)  # parked children die with their server (PDEATHSIG)
        self._on_lost(reason)

    async def _send(self, frame: Frame, fds: list[int]) -> None:
        loop = asyncio.get_running_loop()
        data = msgpack.packb(frame, use_bin_type=True)
        if len(data) > MAX_FRAME_BYTES:
            raise ZygoteUnavailable(f"a {len(data)}-byte request is more than the zygote takes")
        while True:
            if self._sock is None:
                raise ZygoteUnavailable("the fork server is gone")
            try:
                socket.send_fds(self._sock, [data], fds)
                return
            except BlockingIOError:
                writable = loop.create_future()
                fd = self._sock.fileno()
                loop.add_writer(fd, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(fd)
            except OSError as exc:
                self.close(f"cannot write to it: {exc}")
                raise ZygoteUnavailable(f"cannot write to the fork server: {exc}") from exc

    def _on_readable(self) -> None:
        while self._sock is not None:
            try:
                data, fds, _, _ = socket.recv_fds(self._sock, MAX_FRAME_BYTES, MAX_FDS_PER_FRAME)
            except BlockingIOError:
                return
            except OSError as exc:
                self.close(f"cannot read from it: {exc}")
                return
            if not data and not fds:
                self.close("it exited")
                return
            try:
                self._dispatch(msgpack.unpackb(data, raw=False), fds)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                for fd in fds:
                    os.close(fd)
                self.close(f"it sent a malformed frame: {exc}")
                return

    def _dispatch(self, frame: Frame, fds: list[int]) -> None:
        kind = frame["t"]
        if kind == "exited":
            self._on_exited(int(frame["pid"]), int(frame["returncode"]))
            return
        if kind == "ready":
            if not self.ready.done():
                self.ready.set_result(int(frame["pid"]))
            return
        pending = self._pending.pop(int(frame["id"] or 0), None)
        if kind == "failed":
            if pending is not None:
                pending.fail(ZygoteUnavailable(str(frame.get("error"))))
        elif kind == "done":
            if pending is not None:
                pending.succeed(frame)
        elif kind == "spawned":
            child = self._adopt_child(int(frame["pid"]), fds[0] if fds else None, pending)
            if child is not None:
                self._children[child.pid] = child
        elif kind == "parked":
            parked = ParkedChild(int(frame["id"]), int(frame["pid"]), fds[0])
            if pending is not None and pending.succeed(parked):
                self._parked[parked.pid] = parked
            else:
                self.discard(parked)  # nobody waits for it any more
                parked.end(-signal.SIGKILL)
        else:
            raise ValueError(f"unknown frame {kind!r}")

    def _adopt_child(
        self, pid: int, pidfd: int | None, pending: Pending | None
    ) -> ForkedProcess | None:
        """The ForkedProcess of a `spawned` answer, or None (and the child killed) if its
        request was given up meanwhile."""
        loop = asyncio.get_running_loop()
        if pidfd is None:  # a parked child became the environment: the node has its pidfd
            parked = self._parked.pop(pid, None)
            if parked is None or not parked.is_waiting:
                raise ValueError(f"spawned names {pid}, which is not parked")
            pidfd = parked.hand_over()
        if pending is None or pending.stdout is None or pending.stderr is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            os.close(pidfd)
            return None
        child = ForkedProcess(pid, pidfd, pending.stdout, pending.stderr, loop)
        if not pending.succeed(child):
            child.kill()
            child.finish(-signal.SIGKILL)
            return None
        return child

    def _on_exited(self, pid: int, returncode: int) -> None:
        child = self._children.pop(pid, None)
        if child is not None:
            child.finish(returncode)
            return
        parked = self._parked.pop(pid, None)
        if parked is not None:
            parked.end(returncode)
