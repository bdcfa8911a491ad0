"""A runtime process forked by a zygote, as the pool sees it: what it uses of asyncio's Process.

Design notes: the node is not the parent of a forked environment (the zygote is), so it can
neither ``waitpid`` it nor learn its exit status from the kernel. The zygote reaps it and
reports the status, which ``finish`` records. Should the zygote die first, its report never
comes; the node then watches the pidfd the zygote sent with its reply (a pidfd names one
process, never a later one with the same pid) and counts the child as killed once it has
ended. Output comes through pipes the node created, so it never passes through the zygote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal


class ForkedProcess:
    """A forked runtime: ``pid``, ``stdout``/``stderr`` readers, ``returncode`` and ``wait()``,
    as on ``asyncio.subprocess.Process``.

    ``returncode`` is None while it runs, then its exit status, or minus the number of the
    signal that killed it (minus SIGKILL when its zygote died first and took the status along).
    """

    __slots__ = ("_exited", "_is_watching", "_loop", "_pidfd", "pid", "returncode", "stderr",
                 "stdout")  # fmt: skip

    def __init__(
        self,
        pid: int,
        pidfd: int,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        """Take ownership of ``pidfd`` (closed once the process has finished)."""
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._loop = loop
        self._exited = asyncio.Event()
        self._is_watching = False

    def __repr__(self) -> str:
        return f"<ForkedProcess {self.pid} returncode={self.returncode}>"

    async def wait(self) -> int:
        """Wait until the process has ended; its return code."""
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, signum: int) -> None:
        """Signal the process itself (not its group), if it has not ended yet."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, signum)

    def kill(self) -> None:
        """SIGKILL the process, as ``asyncio.subprocess.Process.kill`` does."""
        self.send_signal(signal.SIGKILL)

    def finish(self, returncode: int) -> None:
        """Record the status the zygote reported (or the stand-in when it cannot)."""
        if self.returncode is not None:
            return
        self.returncode = returncode
        self._stop_watching()
        os.close(self._pidfd)
        self._exited.set()

    def watch_without_zygote(self) -> None:
        """The zygote is gone: finish as killed once the process has ended too."""
        if self.returncode is not None or self._is_watching:
            return
        self._is_watching = True
        # A pidfd polls readable once its process has ended (reaped or not).
        self._loop.add_reader(self._pidfd, self.finish, -signal.SIGKILL)

    def _stop_watching(self) -> None:
        if self._is_watching:
            self._loop.remove_reader(self._pidfd)
            self._is_watching = False
