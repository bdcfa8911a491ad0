"""An RSS watchdog over an environment's process tree, for nodes without cgroup rights.

Design notes: without a memory cgroup the kernel will not stop a handler that grows past
MemorySize, so this polls the resident memory of the whole tree (the runtime and everything
it started) every ~50 ms and SIGKILLs the tree once the sum exceeds the limit. A process is
a member of the tree if it descends from the root or ever did: membership is remembered, so
a child that is reparented after its parent exits is still counted and killed. On kill, the
root's session is swept as well, which catches a child that forked and exited between two
polls. A process that calls setsid() and orphans itself within one poll interval can still
escape; only a cgroup closes that gap. Sampling reads /proc, so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import threading

import psutil

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 0.05
_KILL_ROUNDS = 5


class ProcessTree:
    """The processes of one environment: a root and every process it ever spawned.

    Methods block (they read /proc); call them through ``asyncio.to_thread``.
    """

    __slots__ = ("_lock", "_members", "_root_pid")

    def __init__(self, root_pid: int) -> None:
        self._root_pid = root_pid
        self._lock = threading.Lock()
        # pid -> Process; psutil's Process checks creation time, so a reused pid is not "ours".
        self._members: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            self._members[root_pid] = psutil.Process(root_pid)

    @property
    def root_pid(self) -> int:
        return self._root_pid

    def refresh(self) -> list[psutil.Process]:
        """Add the current descendants of every known member, drop the dead; the live list."""
        with self._lock:
            for process in list(self._members.values()):
                try:
                    children = process.children(recursive=True)
                except psutil.NoSuchProcess:
                    continue
                for child in children:
                    self._members.setdefault(child.pid, child)
            for pid, process in list(self._members.items()):
                if not _is_alive(process):
                    del self._members[pid]
            return list(self._members.values())

    def sample(self) -> tuple[int, int]:
        """The summed resident set size of the live tree in bytes, and how many processes."""
        total = 0
        members = self.refresh()
        for process in members:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += process.memory_info().rss
        return total, len(members)

    def kill(self) -> None:
        """SIGKILL every member, and whatever else is still in the root's session."""
        for _ in range(_KILL_ROUNDS):
            members = self.refresh()
            session = self._session_members(members)
            if not members and not session:
                return
            for process in [*members, *session]:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    process.kill()

    def _session_members(self, members: list[psutil.Process]) -> list[psutil.Process]:
        # The kernel does not reuse a pid while a live process has it as session id, so while
        # one of our members still leads or belongs to the session, every process in it is ours.
        if not any(_session_of(process.pid) == self._root_pid for process in members):
            return []
        found = []
        for process in psutil.process_iter():
            if process.pid not in self._members and _session_of(process.pid) == self._root_pid:
                found.append(process)
        return found


def _is_alive(process: psutil.Process) -> bool:
    # A zombie has exited: it holds no memory and cannot be killed again.
    try:
        # psutil is untyped here: both calls return plain bool/str.
        return bool(process.is_running()) and bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


class WatchdogState(enum.Enum):
    NEW = "new"  # constructed, not polling yet
    RUNNING = "running"  # polling the tree
    FINISHED = "finished"  # the tree is gone (exited, or killed over the limit); not polling
    STOPPED = "stopped"  # stop() was called


class MemoryWatchdog:
    """Kill an environment's process tree when its RSS goes over the memory limit.

    Args:
        root_pid: the environment's first process (the runtime).
        limit_bytes: the memory limit; the tree is killed once its RSS exceeds it.
        interval_s: how often to sample.
    """

    __slots__ = (
        "_interval_s",
        "_limit_bytes",
        "_peak_bytes",
        "_state",
        "_task",
        "_tree",
        "_tripped",
    )

    def __init__(
        self, root_pid: int, limit_bytes: int, *, interval_s: float = DEFAULT_INTERVAL_S
    ) -> None:
        self._tree = ProcessTree(root_pid)
        self._limit_bytes = limit_bytes
        self._interval_s = interval_s
        self._state = WatchdogState.NEW
        self._task: asyncio.Task[None] | None = None
        self._peak_bytes = 0
        self._tripped = False

    @property
    def state(self) -> WatchdogState:
        return self._state

    @property
    def peak_bytes(self) -> int:
        """The largest tree RSS seen so far."""
        return self._peak_bytes

    @property
    def was_tripped(self) -> bool:
        """True once the watchdog killed the tree for exceeding the limit."""
        return self._tripped

    async def start(self) -> None:
        """Start polling in a task this watchdog owns."""
        if self._state is not WatchdogState.NEW:
            raise RuntimeError(f"watchdog cannot start from {self._state.value}")
        self._state = WatchdogState.RUNNING
        self._task = asyncio.create_task(self._run(), name=f"memory-watchdog-{self._tree.root_pid}")

    async def stop(self) -> None:
        """Stop polling (the tree is left as it is; see ``kill``). Idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._state = WatchdogState.STOPPED

    async def kill(self) -> None:
        """SIGKILL the whole tree now."""
        await asyncio.to_thread(self._tree.kill)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        try:
            while True:
                rss, count = await asyncio.to_thread(self._tree.sample)
                self._peak_bytes = max(self._peak_bytes, rss)
                if rss > self._limit_bytes:
                    self._tripped = True
                    log.info(
                        "environment tree of pid %d used %d bytes over its limit of %d: killed",
                        self._tree.root_pid,
                        rss,
                        self._limit_bytes,
                    )
                    await asyncio.to_thread(self._tree.kill)
                    break
                if count == 0:
                    break
                # Sleep to the next tick, not for a full interval, so sampling does not drift.
                next_tick = max(next_tick + self._interval_s, loop.time())
                await asyncio.sleep(next_tick - loop.time())
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("memory watchdog of pid %d failed", self._tree.root_pid)
        if self._state is WatchdogState.RUNNING:
            self._state = WatchdogState.FINISHED
