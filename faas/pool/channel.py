"""The node's end of an environment's control socket: msgpack frames in and out.

Frames are parsed by msgpack's streaming Unpacker straight from ``data_received``;
payload bytes stay ``bytes`` from the socket to the HTTP response.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import msgpack

Frame = dict[str, Any]  # Any: msgpack maps carry str, int, bytes and nil values

# Largest frame accepted from a runtime: a maximal response plus framing slack.
MAX_FRAME_BYTES = 8 * 1024 * 1024


class ControlChannel(asyncio.Protocol):
    """Delivers each frame from the runtime to ``on_frame``; ``on_close`` when the socket ends."""

    def __init__(self, on_frame: Callable[[Frame], None], on_close: Callable[[], None]) -> None:
        self._on_frame = on_frame
        self._on_close = on_close
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_FRAME_BYTES * 2)
        self._packer = msgpack.Packer(use_bin_type=True)
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its interface.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self._unpacker.feed(data)
            for frame in self._unpacker:
                if isinstance(frame, dict):
                    self._on_frame(frame)
        except (msgpack.UnpackException, ValueError):
            # A runtime that breaks the protocol is treated as crashed.
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._on_close()

    def send(self, frame: Frame) -> None:
        if self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("environment control socket is closed")
        self._transport.write(self._packer.pack(frame))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
