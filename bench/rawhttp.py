"""A minimal HTTP/1.1 keep-alive client on asyncio protocols: the load generator's fast path.

Design notes: on this class of machine aiohttp's client costs about as much CPU
per request as aiohttp's server, so an aiohttp generator saturates its core
before a bare aiohttp server does, and the in-process baseline would measure the
generator. This client does only what the benchmark needs: POST with a
Content-Length body to 127.0.0.1, read a Content-Length response, keep the
connection for the next request. It refuses what it does not understand
(chunked bodies, HTTP/1.0 close-delimited bodies) with ``HttpError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

_HEADER_END = b"\r\n\r\n"
_MAX_HEADER_BYTES = 64 * 1024


class HttpError(Exception):
    """The connection broke or the server answered something this client cannot read."""


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    __slots__ = ("_body_length", "_buffer", "_head", "_transport", "_waiter", "is_reusable")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[HttpAnswer] | None = None
        self._head: tuple[int, dict[str, str]] | None = None
        self._body_length = 0
        self.is_reusable = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, but has its methods.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_reusable = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(HttpError(f"connection lost: {exc or 'closed by server'}"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._waiter is None or self._waiter.done():
            return
        try:
            self._parse()
        except HttpError as exc:
            self.is_reusable = False
            self._waiter.set_exception(exc)

    def _parse(self) -> None:
        if self._head is None:
            end = self._buffer.find(_HEADER_END)
            if end < 0:
                if len(self._buffer) > _MAX_HEADER_BYTES:
                    raise HttpError("response header too large")
                return
            self._head = self._parse_head(bytes(self._buffer[:end]))
            del self._buffer[: end + len(_HEADER_END)]
        if len(self._buffer) < self._body_length:
            return
        status, headers = self._head
        body = bytes(self._buffer[: self._body_length])
        del self._buffer[: self._body_length]
        self._head = None
        assert self._waiter is not None
        self._waiter.set_result(HttpAnswer(status, headers, body))

    def _parse_head(self, head: bytes) -> tuple[int, dict[str, str]]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise HttpError(f"bad status line {lines[0]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", ""):
            raise HttpError("chunked responses are not supported")
        if "content-length" not in headers:
            raise HttpError("response without Content-Length")
        self._body_length = int(headers["content-length"])
        if headers.get("connection", "").lower() == "close" or parts[0] == "HTTP/1.0":
            self.is_reusable = False
        return int(parts[1]), headers

    async def request(self, head: bytes, body: bytes) -> HttpAnswer:
        """Send one request and wait for its whole answer."""
        if self._transport is None or self._transport.is_closing():
            raise HttpError("connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._transport.writelines((head, body))
        try:
            return await self._waiter
        finally:
            self._waiter = None

    def close(self) -> None:
        self.is_reusable = False
        if self._transport is not None:
            self._transport.close()


class HttpPool:
    """Keep-alive connections per host and port, reused most-recently-released first."""

    __slots__ = ("_idle",)

    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[HttpConnection]] = {}

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> HttpAnswer:
        """POST ``body`` to ``url`` (plain http only).

        Raises:
            HttpError: the connection failed or the answer was unreadable.
        """
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        ).encode("latin-1")
        connection = await self._acquire(host, port)
        try:
            answer = await connection.request(head, body)
        except BaseException:
            connection.close()
            raise
        if connection.is_reusable:
            self._idle.setdefault((host, port), []).append(connection)
        else:
            connection.close()
        return answer

    async def _acquire(self, host: str, port: int) -> HttpConnection:
        idle = self._idle.get((host, port))
        while idle:
            connection = idle.pop()
            if connection.is_reusable:
                return connection
        try:
            _, protocol = await asyncio.get_running_loop().create_connection(
                HttpConnection, host, port
            )
        except OSError as exc:
            raise HttpError(f"cannot connect to {host}:{port}: {exc}") from exc
        return protocol

    def close(self) -> None:
        """Close every idle connection (in-flight ones close when their request ends)."""
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
