"""The two HTTP clients the load generator can drive: the raw keep-alive client or aiohttp's.

``raw`` (the default) is ``bench/rawhttp.py``: a few asyncio protocol callbacks per
request, so one generator core outruns the servers under test. ``aiohttp`` is the
aiohttp client session, slower per request but a standard client. Both send the
same bytes and report the same ``Response``; failures below HTTP raise
``ClientFailure``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from bench.rawhttp import HttpError, HttpPool

_REQUEST_TIMEOUT_S = 120.0
CLIENT_KINDS = ("raw", "aiohttp")


class ClientFailure(Exception):
    """A request failed below HTTP (connection, protocol, timeout); ``kind`` names the cause."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Response:
    """One answered request."""

    status: int
    body: bytes
    headers: Mapping[str, str]  # names in lower case
    latency_ms: float


class LoadClient(Protocol):
    """Sends one POST and times it."""

    @property
    def description(self) -> str: ...

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response: ...

    async def close(self) -> None: ...


class RawClient:
    """The raw keep-alive client (``bench/rawhttp.py``)."""

    __slots__ = ("_pool",)

    def __init__(self) -> None:
        self._pool = HttpPool()

    @property
    def description(self) -> str:
        return "raw HTTP/1.1 keep-alive client on asyncio protocols (bench/rawhttp.py)"

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                answer = await self._pool.post(url, body, headers)
        except HttpError as exc:
            raise ClientFailure("HttpError", str(exc)) from exc
        except TimeoutError as exc:
            raise ClientFailure("Timeout", f"no answer in {_REQUEST_TIMEOUT_S} s") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        return Response(answer.status, answer.body, answer.headers, latency_ms)

    async def close(self) -> None:
        self._pool.close()


class AiohttpClient:
    """aiohttp's client session, keep-alive, no connection cap (the loops bound concurrency)."""

    __slots__ = ("_session",)

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    @property
    def description(self) -> str:
        return f"aiohttp {aiohttp.__version__} client session"

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Response:
        started = time.perf_counter()
        try:
            async with self._session.post(url, data=body, headers=headers) as answer:
                payload = await answer.read()
                latency_ms = (time.perf_counter() - started) * 1000
                names = {name.lower(): value for name, value in answer.headers.items()}
                return Response(answer.status, payload, names, latency_ms)
        except aiohttp.ClientError as exc:
            raise ClientFailure(type(exc).__name__, str(exc)) from exc
        except TimeoutError as exc:
            raise ClientFailure("Timeout", f"no answer in {_REQUEST_TIMEOUT_S} s") from exc

    async def close(self) -> None:
        return None  # the session belongs to whoever opened it


def new_session() -> aiohttp.ClientSession:
    """The control-plane session (create functions, read /metrics); also the aiohttp load client."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
    )
