"""A fork server: forks children on request over a Unix SOCK_SEQPACKET socket, reaps them and
reports their exits (PROTOCOL.md, "The zygote"). The zygote is one; a SnapStart template,
which forks restored copies of an initialized environment, is another.

Design notes: single-threaded and free of signal handlers, so a fork is safe and each child
starts from the signal state the server started with. Children are watched through pidfds
in the same poll set as the socket: no SIGCHLD handler, no threads. A parked child is one
forked ahead of need; it reports ready over its own socketpair, and the `spawn` that names
it later is forwarded to it, descriptors and all.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import msgpack

from .fork_child import PARKED_READY
from .zygote_protocol import ParkRequest, SpawnRequest

MAX_FRAME_BYTES = 64 * 1024
MAX_FDS_PER_FRAME = 8

Frame = dict[str, Any]  # Any: msgpack map values
Release = Callable[[], object]  # gives up the server's socket object in a child
SpawnChild = Callable[[SpawnRequest, Release], NoReturn]
ParkChild = Callable[[ParkRequest, int, Release], NoReturn]


class ForkServer:
    """Serves `spawn` and `park` requests (and ``on_call`` ones) and reports exits until the
    node closes the socket.

    Args:
        spawn: what a child forked for a `spawn` runs (never returns); it gets a function
            that gives up the server's socket object without closing its descriptor.
        park: what a child forked for a `park` runs; None refuses parks.
        on_call: answers any other request (its answer goes out as ``done``); raises
            ValueError to refuse it.
    """

    __slots__ = ("_children", "_on_call", "_park_child", "_parked", "_poller", "_sock",
                 "_spawn_child", "_waiting")  # fmt: skip

    def __init__(
        self,
        sock: socket.socket,
        spawn: SpawnChild,
        park: ParkChild | None = None,
        on_call: Callable[[Frame], Frame] | None = None,
    ) -> None:
        self._sock = sock
        self._spawn_child = spawn
        self._park_child = park
        self._on_call = on_call
        self._children: dict[int, int] = {}  # pidfd -> pid
        self._parked: dict[int, tuple[int, socket.socket]] = {}  # park id -> pid, channel
        # Parked children not yet ready: channel fd -> their request, pid, pidfd.
        self._waiting: dict[int, tuple[ParkRequest, int, int]] = {}
        self._poller = select.poll()
        self._poller.register(sock.fileno(), select.POLLIN)

    def send(self, frame: Frame, fds: list[int] | None = None) -> None:
        """Send one frame (one packet) to the node, with ``fds`` attached."""
        data = msgpack.packb(frame, use_bin_type=True)
        if fds:
            socket.send_fds(self._sock, [data], fds)
        else:
            self._sock.send(data)

    def serve(self) -> None:
        """Poll the socket, the children's pidfds and the parking channels until the node
        goes away."""
        self.send({"t": "ready", "pid": os.getpid()})
        while True:
            for fd, _ in self._poller.poll():
                if fd in self._children:
                    self._reap(fd)
                elif fd in self._waiting:
                    self._on_parked(fd)
                elif not self._take_request():
                    return

    def _take_request(self) -> bool:
        """Handle one packet; False once the node has closed its end."""
        try:
            data, fds, flags, _ = socket.recv_fds(self._sock, MAX_FRAME_BYTES, MAX_FDS_PER_FRAME)
        except ConnectionResetError:
            return False
        if not data and not fds:
            return False
        frame: Frame = {}
        try:
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                raise ValueError("request truncated")
            decoded = msgpack.unpackb(data, raw=False)
            if not isinstance(decoded, dict):
                raise ValueError("a request must be a map")
            frame = decoded
            kind = frame.get("t")
            if kind == "park" and not fds and self._park_child is not None:
                self._park(ParkRequest.from_frame(frame))
            elif kind == "spawn":
                self._spawn(SpawnRequest.from_frame(frame, fds), data)
            elif self._on_call is not None and not fds:
                self.send({**self._on_call(frame), "t": "done", "id": frame.get("id")})
            else:
                raise ValueError(f"unknown request {kind!r}")
        except (KeyError, TypeError, ValueError) as exc:
            for fd in fds:
                os.close(fd)
            self.send({"t": "failed", "id": frame.get("id"), "error": str(exc)})
        return True

    def _fork(self, child: Callable[[], None]) -> int:
        """Fork; the child runs ``child`` (which never returns). Returns its pidfd.

        Raises:
            OSError: fork failed.
        """
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child()
            os._exit(1)  # unreachable: a child ends in os._exit
        pidfd = os.pidfd_open(pid)  # not yet reaped (only this loop reaps), so never stale
        self._children[pidfd] = pid
        self._poller.register(pidfd, select.POLLIN)
        return pidfd

    def _spawn(self, request: SpawnRequest, data: bytes) -> None:
        """Fork one environment (or hand ``request`` to a parked child); tell the node."""
        try:
            if request.parked_id is not None:
                self._unpark(request, data)
                return
            spawn_child = self._spawn_child
            pidfd = self._fork(lambda: spawn_child(request, self._sock.detach))
        except OSError as exc:
            self.send({"t": "failed", "id": request.request_id, "error": str(exc)})
            return
        finally:
            for fd in request.fds.values():
                os.close(fd)
        pid = self._children[pidfd]
        self.send({"t": "spawned", "id": request.request_id, "pid": pid}, [pidfd])

    def _unpark(self, request: SpawnRequest, data: bytes) -> None:
        """Tell the node, then forward ``request`` (its packet and descriptors) to its parked
        child. In that order: once woken, the child may take the CPU for its whole start,
        and the node should not wait that long to learn the spawn succeeded (should the
        child have died just now, its exit is reported as any other).

        Raises:
            OSError: no such parked child.
        """
        assert request.parked_id is not None
        try:
            pid, channel = self._parked.pop(request.parked_id)
        except KeyError:
            raise OSError(f"no parked child {request.parked_id}") from None
        self.send({"t": "spawned", "id": request.request_id, "pid": pid})
        with channel, contextlib.suppress(OSError):
            socket.send_fds(channel, [data], list(request.fds.values()))

    def _park(self, park: ParkRequest) -> None:
        """Fork a child that prepares and waits; tell the node once it is ready."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        park_child = self._park_child
        assert park_child is not None

        def child() -> None:
            ours.detach()
            park_child(park, theirs.detach(), self._sock.detach)

        try:
            pidfd = self._fork(child)
        except OSError as exc:
            ours.close()
            self.send({"t": "failed", "id": park.request_id, "error": str(exc)})
            return
        finally:
            theirs.close()
        self._waiting[ours.fileno()] = (park, self._children[pidfd], pidfd)
        self._parked[park.request_id] = (self._children[pidfd], ours)
        self._poller.register(ours.fileno(), select.POLLIN)

    def _on_parked(self, channel_fd: int) -> None:
        park, pid, pidfd = self._waiting.pop(channel_fd)
        self._poller.unregister(channel_fd)
        _, channel = self._parked[park.request_id]
        try:
            is_ready = channel.recv(16) == PARKED_READY
        except OSError:
            is_ready = False
        if not is_ready:  # it failed to prepare (and exits; its exit is reported as any)
            del self._parked[park.request_id]
            channel.close()
            self.send({"t": "failed", "id": park.request_id, "error": "the child did not park"})
            return
        self.send({"t": "parked", "id": park.request_id, "pid": pid}, [pidfd])

    def _reap(self, pidfd: int) -> None:
        pid = self._children[pidfd]
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == 0:
            return  # readable but not yet waitable; poll says so again
        self._poller.unregister(pidfd)
        del self._children[pidfd]
        os.close(pidfd)
        for park_id, (parked_pid, channel) in list(self._parked.items()):
            if parked_pid == pid and channel.fileno() not in self._waiting:
                del self._parked[park_id]
                channel.close()
        self.send({"t": "exited", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})
