"""Function logs: per-invocation capture (START/END/REPORT, tail) and per-function log files.

Design notes: an InvocationLog keeps at most ``limit`` bytes for the log file and
always the last 4 KB for ``X-Amz-Log-Result``, so a handler printing 50 MB costs
bounded memory. Finished logs go to a LogSink, whose writer task appends them to
``<data-dir>/logs/<function>/<YYYY-MM-DD>.log`` off the event loop; if the disk
cannot keep up, whole records are dropped and counted rather than slowing invokes.
The writer lets records gather for ``_LINGER_S`` and writes them in one thread hop,
through files it keeps open (a day's file per function), so a busy node pays one
hop per batch rather than a hop, a mkdir and an open per invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from pathlib import Path
from typing import BinaryIO

TAIL_BYTES = 4096
MAX_PENDING_RECORDS = 10_000
_LINGER_S = 0.02
_OPEN_FILES = 64

log = logging.getLogger(__name__)


class InvocationLog:
    """The log of one invocation (and, for a cold start, its environment's Init).

    Until the output passes ``limit`` bytes, writes are only appended (the tail is cut from
    them when asked for); past it, the head stops growing and a separate tail keeps the
    last 4 KB of everything written.
    """

    __slots__ = ("_head", "_head_bytes", "_limit", "_tail", "_tail_bytes", "dropped_bytes")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._head: list[bytes] = []
        self._head_bytes = 0
        self._tail: deque[bytes] | None = None  # only once the head is full
        self._tail_bytes = 0
        self.dropped_bytes = 0

    def write(self, data: bytes) -> None:
        size = self._head_bytes + len(data)
        if size <= self._limit and self._tail is None:
            self._head.append(data)
            self._head_bytes = size
        elif data:
            self._write_past_limit(data)

    def _write_past_limit(self, data: bytes) -> None:
        if self._tail is None:
            self._tail = deque(_last_bytes(self._head, TAIL_BYTES))
            self._tail_bytes = sum(len(chunk) for chunk in self._tail)
        room = self._limit - self._head_bytes
        if room > 0:
            self._head.append(data[:room])
            self._head_bytes += room
        self.dropped_bytes += len(data) - max(room, 0)
        self._tail.append(data[-TAIL_BYTES:])
        self._tail_bytes += min(len(data), TAIL_BYTES)
        while self._tail_bytes - len(self._tail[0]) >= TAIL_BYTES:
            self._tail_bytes -= len(self._tail.popleft())

    def write_line(self, line: str) -> None:
        self.write(line.encode() + b"\n")

    def tail(self) -> bytes:
        """The last 4 KB, as Lambda returns in X-Amz-Log-Result."""
        chunks = self._tail if self._tail is not None else _last_bytes(self._head, TAIL_BYTES)
        return b"".join(chunks)[-TAIL_BYTES:]

    def body(self) -> bytes:
        """What goes to the log file (truncated at the limit, with a note)."""
        text = b"".join(self._head)
        if self.dropped_bytes:
            text += b"[faas] %d bytes of log output truncated\n" % self.dropped_bytes
        return text


def _last_bytes(chunks: list[bytes], count: int) -> list[bytes]:
    """The fewest last ``chunks`` that hold at least ``count`` bytes (or all of them)."""
    total = 0
    start = len(chunks)
    while start > 0 and total < count:
        start -= 1
        total += len(chunks[start])
    return chunks[start:]


def start_line(request_id: str, version: str) -> str:
    return f"START RequestId: {request_id} Version: {version}"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}"


def report_line(
    request_id: str,
    duration_ms: float,
    memory_mb: int,
    max_memory_mb: int,
    init_duration_ms: float | None,
    status: str | None = None,
    error_type: str | None = None,
) -> str:
    """The REPORT line in Lambda's exact tab-separated format."""
    parts = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {max(1, math.ceil(duration_ms))} ms",
        f"Memory Size: {memory_mb} MB",
        f"Max Memory Used: {max_memory_mb} MB",
    ]
    if init_duration_ms is not None:
        parts.append(f"Init Duration: {init_duration_ms:.2f} ms")
    if status is not None:
        parts.append(f"Status: {status}")
        if error_type:
            parts.append(f"Error Type: {error_type}")
    return "\t".join(parts) + "\t"


class LogSink:
    """Appends finished invocation logs to per-function files from a writer task."""

    __slots__ = ("_directory", "_dropped", "_files", "_idle", "_pending", "_wakeup", "_writer")

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        # Records emitted since the writer last took them: a plain list, so that an emit is
        # an append (and, for the first record of a batch, one wakeup).
        self._pending: list[tuple[str, bytes]] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing is pending or being written
        self._idle.set()
        self._writer: asyncio.Task[None] | None = None
        self._dropped = 0
        # Open log files by path, least recently written first; only the writer thread
        # touches them (one batch at a time).
        self._files: dict[Path, BinaryIO] = {}

    async def start(self) -> None:
        if self._writer is not None:
            raise RuntimeError("log sink already started")
        self._writer = asyncio.create_task(self._write_loop(), name="log-sink-writer")

    async def stop(self) -> None:
        """Write what is pending, then end the writer and close its files."""
        if self._writer is None:
            return
        await self._idle.wait()
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
        self._writer = None
        await asyncio.to_thread(self._close_all)

    @property
    def dropped_records(self) -> int:
        return self._dropped

    def emit(self, function_name: str, data: bytes) -> None:
        pending = self._pending
        if len(pending) >= MAX_PENDING_RECORDS:
            self._dropped += 1
            return
        pending.append((function_name, data))
        if len(pending) == 1:
            self._idle.clear()
            self._wakeup.set()

    def path_for(self, function_name: str, epoch_s: float | None = None) -> Path:
        day = time.strftime("%Y-%m-%d", time.gmtime(epoch_s))
        return self._directory / function_name / f"{day}.log"

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            await asyncio.sleep(_LINGER_S)  # let a batch gather behind the first record
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._append, batch)
            except Exception:  # the writer's boundary: count the loss, keep writing
                log.exception("could not write %d function log records", len(batch))
                self._dropped += len(batch)
            if not self._pending:
                self._idle.set()

    def _append(self, batch: list[tuple[str, bytes]]) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        by_function: dict[str, list[bytes]] = {}
        for function_name, data in batch:
            by_function.setdefault(function_name, []).append(data)
        for function_name, chunks in by_function.items():
            path = self._directory / function_name / f"{day}.log"  # one Path per batch
            handle = self._files.pop(path, None)
            if handle is None or not path.parent.is_dir():  # new, or its function was deleted
                if handle is not None:
                    handle.close()
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(path, "ab")  # kept open across batches
            handle.writelines(chunks)
            handle.flush()
            self._files[path] = handle
        while len(self._files) > _OPEN_FILES:
            self._files.pop(next(iter(self._files))).close()
        for stale in [path for path in self._files if not path.name.startswith(day)]:
            self._files.pop(stale).close()

    def _close_all(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
