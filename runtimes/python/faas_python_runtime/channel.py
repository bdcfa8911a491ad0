"""The runtime's end of the node's Unix stream socket: msgpack frames in both directions."""

from __future__ import annotations

import json
import os
import resource
import socket
import threading
from typing import Any

import msgpack

from .errors import ErrorBody
from .settings import kill_own_group
from .transport import Invocation

RECEIVE_BYTES = 256 * 1024

# A frame is a msgpack map with str keys; values are str, bytes, int or None.
Frame = dict[str, Any]


class PeakMemory:
    """The memory high-water mark reported with each result: the larger of our own peak RSS
    and the whole environment's (its cgroup's file, kept open and read again in place)."""

    __slots__ = ("_fd", "_path")

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._fd: int | None = None  # opened on first use, by the process that reads it

    def kb(self) -> int:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if self._path is None:
            return own
        try:
            if self._fd is None:
                self._fd = os.open(self._path, os.O_RDONLY)
            return max(own, int(os.pread(self._fd, 64, 0)) // 1024)
        except (OSError, ValueError):
            self.close()  # opened again next time (the handler may have closed it)
            return own

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.close(fd)
            except OSError:
                pass  # closed already


class Channel:
    """Blocking, thread-safe sender and single-reader receiver of protocol frames.

    Each frame goes out with one `sendall` under a lock, so log frames written by user
    threads never interleave with the bytes of another frame. Also the frame protocol's
    `Transport` (transport.py): a received `invoke` frame is the invocation itself.
    """

    __slots__ = ("_packer", "_peak_memory", "_send_lock", "_sock", "_unpacker")

    def __init__(self, sock: socket.socket, peak_memory_file: str | None = None) -> None:
        sock.setblocking(True)
        self._peak_memory = PeakMemory(peak_memory_file)
        self._sock = sock
        self._packer = msgpack.Packer(use_bin_type=True)
        self._unpacker = msgpack.Unpacker(raw=False)
        self._send_lock = threading.Lock()

    @classmethod
    def from_fd(cls, fd: int, peak_memory_file: str | None = None) -> Channel:
        """Wrap the inherited, already connected socket file descriptor `fd`."""
        return cls(socket.socket(fileno=fd), peak_memory_file)

    def send(self, frame: Frame) -> None:
        """Send one frame.

        Raises:
            OSError: the node has closed its end.
        """
        with self._send_lock:
            self._sock.sendall(self._packer.pack(frame))

    def receive(self) -> Frame | None:
        """Block until the next frame arrives; None means the node closed the socket."""
        while True:
            try:
                frame: Frame = next(self._unpacker)
                return frame
            except StopIteration:
                pass
            try:
                data = self._sock.recv(RECEIVE_BYTES)
            except ConnectionResetError:
                return None
            if not data:
                return None
            self._unpacker.feed(data)

    def use_peak_memory_file(self, peak_memory_file: str | None) -> None:
        """Report memory from another cgroup's high-water mark (a restored SnapStart copy)."""
        self._peak_memory.close()
        self._peak_memory = PeakMemory(peak_memory_file)

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    # The Transport interface.

    def send_ready(self, function_init_ms: float) -> None:
        """Send `ready`."""
        self.send({"t": "ready", "function_init_ms": function_init_ms})

    def send_init_error(self, error: ErrorBody) -> None:
        """Send `init_error` with the error JSON."""
        self.send({"t": "init_error", "payload": json.dumps(error).encode("utf-8")})

    def next_invocation(self) -> Invocation | None:
        """The next `invoke` frame; None on `shutdown`.

        End of file means the node is gone: the whole process group (the handler's
        children included) is killed at once, as nobody is left to clean it up.
        """
        while True:
            frame = self.receive()
            if frame is None:
                kill_own_group()
            kind = frame.get("t")
            if kind in ("invoke", "rehearse"):
                return frame
            if kind == "shutdown":
                return None

    def send_result(self, request_id: str, payload: bytes, is_raw: bool) -> None:
        """Send `result` (frames carry no content type, so `is_raw` changes nothing)."""
        self.send(
            {
                "t": "result",
                "id": request_id,
                "payload": payload,
                "max_rss_kb": self._peak_memory.kb(),
            }
        )

    def send_error(self, request_id: str, error: ErrorBody) -> None:
        """Send `error` with the error JSON and its errorType."""
        self.send(
            {
                "t": "error",
                "id": request_id,
                "payload": json.dumps(error).encode("utf-8"),
                "error_type": error["errorType"],
                "max_rss_kb": self._peak_memory.kb(),
            }
        )

    def send_log(self, chunk: memoryview) -> None:
        """Send one `log` frame."""
        self.send({"t": "log", "data": chunk})
