"""Group commit: many concurrent callers, few writes, each caller answered once its item is written.

Design notes: ``submit`` parks the item with a future and returns when a flusher
has written the batch holding it. A few flusher tasks (``flushers``) each take
everything pending (up to ``max_batch``) and write it in one call, so a second
batch can start while the first one commits; under load the batches grow and the
round trips per item shrink, at low load an item is written at once. A failed
write fails every caller of that batch and nothing else. ``stop`` lets pending
items be written for up to ``drain_timeout_s``, then fails whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Item = TypeVar("Item")


class CommitterState(enum.Enum):
    NEW = "new"  # constructed, no flusher yet
    RUNNING = "running"  # accepting and writing
    STOPPED = "stopped"  # refusing; cannot be started again


class GroupCommitter(Generic[Item]):
    """Coalesce concurrent ``submit`` calls into batches written by ``write``."""

    __slots__ = (
        "_drained",
        "_flusher_count",
        "_flushers",
        "_in_flight",
        "_max_batch",
        "_name",
        "_pending",
        "_ready",
        "_state",
        "_write",
    )

    def __init__(
        self,
        name: str,
        write: Callable[[list[Item]], Awaitable[None]],
        *,
        flushers: int = 2,
        max_batch: int = 1000,
    ) -> None:
        if flushers < 1 or max_batch < 1:
            raise ValueError("a group committer needs at least one flusher and a batch of one")
        self._name = name
        self._write = write
        self._flusher_count = flushers
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []
        self._ready = asyncio.Event()  # set exactly while _pending is not empty
        self._drained = asyncio.Event()  # set while nothing is pending or being written
        self._drained.set()
        self._in_flight = 0
        self._flushers: list[asyncio.Task[None]] = []
        self._state = CommitterState.NEW

    async def start(self) -> None:
        if self._state is not CommitterState.NEW:
            raise RuntimeError(f"{self._name} cannot start from {self._state.value}")
        self._flushers = [
            asyncio.create_task(self._flush_loop(), name=f"{self._name}-flusher-{index}")
            for index in range(self._flusher_count)
        ]
        self._state = CommitterState.RUNNING

    async def stop(self, drain_timeout_s: float = 5.0) -> None:
        """Refuse new items, write the pending ones (bounded), fail what is left."""
        if self._state is not CommitterState.RUNNING:
            self._state = CommitterState.STOPPED
            return
        self._state = CommitterState.STOPPED
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(drain_timeout_s):
                await self._drained.wait()
        for task in self._flushers:
            task.cancel()
        await asyncio.gather(*self._flushers, return_exceptions=True)
        self._fail(self._pending, RuntimeError(f"{self._name} stopped before the write"))
        self._pending.clear()

    async def submit(self, item: Item) -> None:
        """Return once ``item`` is written; raise what the write of its batch raised."""
        if self._state is not CommitterState.RUNNING:
            raise RuntimeError(f"{self._name} is not running")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((item, waiter))
        self._ready.set()
        self._drained.clear()
        await waiter

    async def _flush_loop(self) -> None:
        while True:
            await self._ready.wait()
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            if not self._pending:
                self._ready.clear()
            if batch:
                await self._flush(batch)

    async def _flush(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        self._in_flight += 1
        try:
            await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            self._fail(batch, RuntimeError(f"{self._name} stopped during the write"))
            raise
        except Exception as exc:  # task boundary: every caller of the batch gets (and logs) it
            self._fail(batch, exc)
        else:
            for _, waiter in batch:
                if not waiter.done():
                    waiter.set_result(None)
        finally:
            self._in_flight -= 1
            if not self._pending and self._in_flight == 0:
                self._drained.set()

    @staticmethod
    def _fail(batch: list[tuple[Item, asyncio.Future[None]]], exc: BaseException) -> None:
        for _, waiter in batch:
            if not waiter.done():
                waiter.set_exception(exc)
