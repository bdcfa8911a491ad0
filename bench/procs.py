"""Child processes the benchmark starts: start until a ready line, keep output drained, stop.

Design notes: the benchmark only ever signals processes it started itself, by pid:
the servers it launched and, after a server is gone, the server's own children
that outlived it (faas environments run in their own sessions, so they are looked
up while the server is still alive and remembered by pid and start time, which
guards against pid reuse).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import re
import signal
from collections.abc import Mapping, Sequence

import psutil

_STOP_TIMEOUT_S = 30.0
_KILL_TIMEOUT_S = 5.0
_TAIL_LINES = 40


class ProcessStartError(RuntimeError):
    """A child process exited or stayed silent instead of printing its ready line."""


class ManagedProcess:
    """One child process: started, watched for a ready line, drained, stopped by pid."""

    __slots__ = ("_argv", "_drains", "_env", "_process", "_tail", "name", "ready_match")

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None) -> None:
        self.name = name
        self._argv = list(argv)
        self._env = dict(env) if env is not None else None
        self._process: asyncio.subprocess.Process | None = None
        self._drains: list[asyncio.Task[None]] = []
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        self.ready_match: re.Match[str] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self._process.pid

    @property
    def tail(self) -> str:
        """The last lines the process printed (for error messages)."""
        return "\n".join(self._tail)

    async def start(self, ready: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        """Start the process and wait for a stdout line matching ``ready``.

        Raises:
            ProcessStartError: the process exited, or printed no such line in ``timeout_s``.
        """
        if self._process is not None:
            raise RuntimeError(f"{self.name} was already started")
        self._process = await asyncio.create_subprocess_exec(
            *self._argv,
            env=self._env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._drains.append(asyncio.create_task(self._drain(self._process.stderr)))
        try:
            async with asyncio.timeout(timeout_s):
                match = await self._read_until(self._process.stdout, ready)
        except TimeoutError:
            await self.stop()
            raise ProcessStartError(f"{self.name} did not start in {timeout_s} s") from None
        if match is None:
            await self.stop()
            raise ProcessStartError(f"{self.name} exited before it was ready:\n{self.tail}")
        self._drains.append(asyncio.create_task(self._drain(self._process.stdout)))
        self.ready_match = match
        return match

    async def _read_until(
        self, stream: asyncio.StreamReader, ready: re.Pattern[str]
    ) -> re.Match[str] | None:
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip()
            self._tail.append(text)
            if match := ready.search(text):
                return match
        return None

    async def _drain(self, stream: asyncio.StreamReader) -> None:
        # Keep reading so a chatty child never blocks on a full pipe.
        while line := await stream.readline():
            self._tail.append(line.decode(errors="replace").rstrip())

    def children(self) -> list[psutil.Process]:
        """The process's live descendants (empty once it is gone)."""
        try:
            return list(psutil.Process(self.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            return []

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after a grace; then kill descendants that outlived it.

        Returns the exit status, or None if the process was never started.
        """
        process = self._process
        if process is None:
            return None
        descendants = await asyncio.to_thread(self.children) if process.returncode is None else []
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(_STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                async with asyncio.timeout(_KILL_TIMEOUT_S):
                    await process.wait()
        await asyncio.to_thread(_kill_survivors, descendants)
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        self._drains.clear()
        return process.returncode


def _kill_survivors(processes: list[psutil.Process]) -> None:
    """SIGKILL the remembered descendants still running (psutil checks pid and start time)."""
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if process.is_running():
                process.kill()
    psutil.wait_procs(processes, timeout=_KILL_TIMEOUT_S)
