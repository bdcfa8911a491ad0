"""The runtime's end of the node's Unix stream socket: msgpack frames in both directions."""

from __future__ import annotations

import socket
import threading
from typing import Any

import msgpack

RECEIVE_BYTES = 256 * 1024

# A frame is a msgpack map with str keys; values are str, bytes, int or None.
Frame = dict[str, Any]


class Channel:
    """Blocking, thread-safe sender and single-reader receiver of protocol frames.

    Each frame goes out with one `sendall` under a lock, so log frames written by user
    threads never interleave with the bytes of another frame.
    """

    __slots__ = ("_packer", "_send_lock", "_sock", "_unpacker")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self._sock = sock
        self._packer = msgpack.Packer(use_bin_type=True)
        self._unpacker = msgpack.Unpacker(raw=False)
        self._send_lock = threading.Lock()

    @classmethod
    def from_fd(cls, fd: int) -> Channel:
        """Wrap the inherited, already connected socket file descriptor `fd`."""
        return cls(socket.socket(fileno=fd))

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

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()
