"""How the node talks to a runtime: an inbox of frames, and the native msgpack transport.

Both doors into an environment look the same to ``Environment``: it sends frames
(``invoke``, ``shutdown``) and reads frames from an inbox (``ready``, ``init_error``,
``result``, ``error``; ``{}`` once the runtime is gone). The native Python runtime
speaks those frames directly over its socket; the Runtime API session
(``faas.runtime_api.session``) turns HTTP calls into the same frames.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from typing import Protocol

from faas.pool.channel import ControlChannel, Frame

LogWriter = Callable[[bytes], None]


class FrameInbox:
    """Frames from a runtime, waited for one at a time; closing it yields ``{}`` forever."""

    __slots__ = ("_closed", "_frames", "_waiter")

    def __init__(self) -> None:
        self._frames: deque[Frame] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def is_closed(self) -> bool:
        return self._closed

    def put(self, frame: Frame) -> None:
        self._frames.append(frame)
        self._wake()

    def close(self) -> None:
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout_s: float) -> Frame | None:
        """The next frame; ``{}`` once closed and drained; None when ``timeout_s`` passes."""
        if not self._frames and not self._closed:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiter = waiter
            # A timer that ends the wait, rather than wait_for's extra future and callbacks.
            timer = loop.call_later(timeout_s, _expire, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._frames and not self._closed:
                return None
        if self._frames:
            return self._frames.popleft()
        return {}


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class RuntimeTransport(Protocol):
    """The node's side of one runtime connection."""

    @property
    def inbox(self) -> FrameInbox: ...

    def send(self, frame: Frame) -> None:
        """Send ``invoke`` or ``shutdown``; raises ConnectionResetError if the runtime is gone."""
        ...

    def close(self) -> None: ...


class NativeTransport:
    """The msgpack frame socket of the native Python runtime."""

    __slots__ = ("_channel", "_inbox", "_on_log")

    def __init__(self, on_log: LogWriter) -> None:
        self._inbox = FrameInbox()
        self._on_log = on_log
        self._channel: ControlChannel | None = None

    @property
    def inbox(self) -> FrameInbox:
        return self._inbox

    async def connect(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        _, channel = await loop.connect_accepted_socket(
            lambda: ControlChannel(self._on_frame, self._inbox.close), sock
        )
        self._channel = channel

    def _on_frame(self, frame: Frame) -> None:
        if frame.get("t") == "log":
            data = frame.get("data")
            if isinstance(data, bytes):
                self._on_log(data)
            return
        self._inbox.put(frame)

    def send(self, frame: Frame) -> None:
        if self._channel is None:
            raise ConnectionResetError("native transport is not connected")
        self._channel.send(frame)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._inbox.close()
