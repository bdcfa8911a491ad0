"""A UDP listener on 127.0.0.1 that handlers report to while they run.

Design notes: environments may get a private /tmp and another user, so a file
cannot carry a signal from a handler to the benchmark; a datagram to the
benchmark's port can (environments share the host's network today). ``app.hold``
says "held <tag>" and waits for a reply to let go; ``app.record`` reports each
event's id, send time and start time. If environments ever lose the host's
loopback, these two scenarios need a node-side hook instead (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

_QUEUE_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Datagram:
    text: str
    sender: tuple[str, int]
    received_at: float  # time.time() on arrival


class Beacon(asyncio.DatagramProtocol):
    """Collects datagrams from handlers; ``start`` binds an ephemeral port, ``stop`` closes it."""

    __slots__ = ("_queue", "_transport", "dropped")

    def __init__(self) -> None:
        self._queue: asyncio.Queue[Datagram] = asyncio.Queue(_QUEUE_LIMIT)
        self._transport: asyncio.DatagramTransport | None = None
        self.dropped = 0

    async def start(self) -> None:
        if self._transport is not None:
            raise RuntimeError("the beacon is already started")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0)
        )
        self._transport = transport

    async def stop(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def address(self) -> tuple[str, int]:
        if self._transport is None:
            raise RuntimeError("the beacon is not started")
        host, port = self._transport.get_extra_info("sockname")[:2]
        return str(host), int(port)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        try:
            text = data.decode("utf-8", errors="replace")
            self._queue.put_nowait(Datagram(text, (str(addr[0]), int(addr[1])), time.time()))
        except asyncio.QueueFull:
            self.dropped += 1

    def reply(self, sender: tuple[str, int], text: str) -> None:
        if self._transport is not None:
            self._transport.sendto(text.encode(), sender)

    async def wait_for(self, text: str, timeout_s: float) -> Datagram:
        """The next datagram that reads exactly ``text`` (others are discarded).

        Raises:
            TimeoutError: none arrived within ``timeout_s``.
        """
        async with asyncio.timeout(timeout_s):
            while True:
                datagram = await self._queue.get()
                if datagram.text == text:
                    return datagram

    def drain(self) -> list[Datagram]:
        """Every datagram received and not yet taken."""
        taken: list[Datagram] = []
        while not self._queue.empty():
            taken.append(self._queue.get_nowait())
        return taken
