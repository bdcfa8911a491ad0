"""The node's side of the native Python runtime's zygote: start it, have it fork environments.

Design notes: the zygote (``runtimes/python/faas_python_runtime/zygote.py``) is one
single-threaded process with the runtime and common modules already imported. The node
talks to it over a Unix SOCK_SEQPACKET socket (fork_channel.py; PROTOCOL.md, "The
zygote"): a ``spawn`` carries the child's environment, cwd, cgroup and isolation plus its
control socket and the write ends of the stdout/stderr pipes the node made; the answer
carries the pid and a pidfd; ``exited`` comes once the zygote has reaped the child. A
``park`` asks for a child that goes as far as it can without an environment (into a spare
cgroup, its own mount namespace) and then waits for a ``spawn`` naming it.

If the zygote dies or stops answering, pending requests fail with ``ZygoteUnavailable``,
children already running are watched through their pidfds instead, parked ones are gone
(they die with it), and the next spawn starts a new zygote (at most once per
``restart_backoff_s``); callers exec when a spawn fails. Whether an environment may be
forked at all is ``can_fork``: only if its start-up-only variables (PYTHON*, LANG/LC_*,
LD_*, OpenSSL's and malloc's) equal the zygote's own, since a fresh interpreter reads those
once, at exec, and a fork cannot read them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import socket
import sys
from collections.abc import Mapping, Sequence

from faas.sandbox.fork_channel import ForkChannel, ZygoteUnavailable
from faas.sandbox.forked_process import ForkedProcess
from faas.sandbox.lambda_env import base_environment
from faas.sandbox.scheduling import enter_batch_class
from faas.sandbox.zygote_requests import ForkRequest, ParkedChild

log = logging.getLogger(__name__)

# The zygote's side of the protocol (PROTOCOL.md): variables it is started with, frame limits.
ZYGOTE_MODULE = "faas_python_runtime.zygote"
ZYGOTE_FD_VAR = "_FAAS_ZYGOTE_FD"
ZYGOTE_PARENT_VAR = "_FAAS_ZYGOTE_PARENT_PID"
ENVIRON_ROOM_VAR = "_FAAS_ZYGOTE_ENVIRON_ROOM"
ENVIRON_ROOM_BYTES = 32 * 1024  # room for a child's environment in /proc/<pid>/environ

# Variables a fresh interpreter (or the C library under it) reads only when it starts.
_STARTUP_PREFIXES = ("PYTHON", "LC_", "LD_", "OPENSSL_", "MALLOC_", "GLIBC_")
_STARTUP_NAMES = frozenset({"LANG"})
_REBUILT_PER_CHILD = frozenset({"PYTHONPATH"})  # the child rebuilds sys.path from it

__all__ = [
    "Zygote",
    "ZygoteState",
    "ZygoteUnavailable",
    "fork_unavailable_reason",
    "is_startup_variable",
]


class ZygoteState(enum.Enum):
    NEW = "new"  # constructed; no process
    RUNNING = "running"  # started and answering
    LOST = "lost"  # died or stopped answering; the next spawn starts another one
    STOPPED = "stopped"  # stopped for good


def fork_unavailable_reason() -> str | None:
    """Why this node cannot fork environments from a zygote; None if it can."""
    if not hasattr(os, "fork") or not hasattr(os, "pidfd_open"):
        return "this platform has no fork() or no pidfds"
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError as exc:
        return f"this kernel has no pidfds: {exc}"
    return None


def is_startup_variable(name: str) -> bool:
    """True for a variable a fresh interpreter reads at start-up only (PYTHONPATH aside)."""
    if name in _REBUILT_PER_CHILD:
        return False
    return name in _STARTUP_NAMES or name.startswith(_STARTUP_PREFIXES)


class Zygote:
    """One zygote process and the children it forked.

    Args:
        argv: how to start it, e.g. ``[python, "-S", "-m", "faas_python_runtime.zygote"]``.
        env: its environment (start-up variables as environments get them, and PYTHONPATH).
        start_timeout_s: how long start-up (its imports) may take.
        request_timeout_s: how long one fork or park may take to be answered.
        restart_backoff_s: after a failed restart, how long spawns fail without trying again.
    """

    __slots__ = ("_argv", "_channel", "_env", "_process", "_request_timeout_s",
                 "_restart_backoff_s", "_restart_lock", "_retry_after", "_start_timeout_s",
                 "state")  # fmt: skip

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        start_timeout_s: float = 10.0,
        request_timeout_s: float = 5.0,
        restart_backoff_s: float = 30.0,
    ) -> None:
        self._argv = list(argv)
        self._env = dict(env)
        self._start_timeout_s = start_timeout_s
        self._request_timeout_s = request_timeout_s
        self._restart_backoff_s = restart_backoff_s
        self.state = ZygoteState.NEW
        self._process: asyncio.subprocess.Process | None = None
        self._channel: ForkChannel | None = None
        self._restart_lock = asyncio.Lock()
        self._retry_after = 0.0

    @classmethod
    def for_native_runtime(cls, python_path: str) -> Zygote:
        """The native runtime's zygote, started as an exec'd runtime would be: -S, its
        PYTHONPATH, and the variables every environment starts from."""
        env = {**base_environment("/opt"), "PYTHONPATH": python_path}
        return cls([sys.executable, "-S", "-m", ZYGOTE_MODULE], env)

    @property
    def pid(self) -> int | None:
        """The zygote's own pid while it runs."""
        if self._process is None or self._process.returncode is not None:
            return None
        return self._process.pid

    @property
    def environment(self) -> Mapping[str, str]:
        """The variables it was started with (its children's start-up variables)."""
        return self._env

    def _is_lost(self) -> bool:
        return self.state is ZygoteState.LOST

    def can_fork(self, env: Mapping[str, str]) -> bool:
        """Whether a fork started with ``env`` would behave as an exec'd interpreter does."""
        names = {name for name in (*env, *self._env) if is_startup_variable(name)}
        return all(env.get(name) == self._env.get(name) for name in names)

    async def start(self) -> None:
        """Start the zygote and wait until it has imported everything.

        Raises:
            ZygoteUnavailable: it could not start, or did not get ready in time.
        """
        if self.state is not ZygoteState.NEW:
            raise RuntimeError(f"zygote cannot start from {self.state.value}")
        await self._launch()

    async def stop(self) -> None:
        """Close the socket (the zygote exits), kill its own pid if it lingers, and reap it.

        Environments it forked are not touched: they end with it (or already have).
        """
        if self.state is ZygoteState.STOPPED:
            return
        self.state = ZygoteState.STOPPED
        if self._channel is not None:
            self._channel.close("the zygote was stopped")  # it exits on end of file
        await self._reap_process()

    async def spawn(self, request: ForkRequest, parked: ParkedChild | None = None) -> ForkedProcess:
        """Fork one environment, or make ``parked`` (in the request's cgroup) become it.

        A lost zygote is started again first; a parked child that is gone is replaced by a
        fresh fork.

        Raises:
            ZygoteUnavailable: no zygote could fork it; start the environment by exec.
        """
        if parked is not None and not parked.is_waiting:
            parked = None
        if self.state is ZygoteState.LOST:
            await self._restart()
            parked = None  # it died with the zygote it was parked in
        try:
            return await self._running_channel().spawn(request, parked)
        except ZygoteUnavailable:
            if self._is_lost():
                await self._restart()
            elif parked is None:
                raise  # refused this very request (say, fork failed): no retry helps
        return await self._running_channel().spawn(request, None)

    async def park(self, cgroup_procs: Sequence[str], is_unshared: bool) -> ParkedChild:
        """Fork a child that enters the cgroup of ``cgroup_procs`` (and, if ``is_unshared``,
        its own mount namespace) and waits; for ``spawn(..., parked=...)``.

        A lost zygote is started again first.

        Raises:
            ZygoteUnavailable: no zygote runs, or the child failed to park.
        """
        if self.state is ZygoteState.LOST:
            await self._restart()
        return await self._running_channel().park(list(cgroup_procs), is_unshared)

    def discard(self, parked: ParkedChild) -> None:
        """Kill a parked child that will not be used (its exit is reported as any other)."""
        if self._channel is not None:
            self._channel.discard(parked)

    def _running_channel(self) -> ForkChannel:
        if self.state is not ZygoteState.RUNNING or self._channel is None:
            raise ZygoteUnavailable(f"the zygote is {self.state.value}")
        return self._channel

    # -- the process ---------------------------------------------------------------------

    async def _launch(self) -> None:
        node_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            ENVIRON_ROOM_VAR: "x" * ENVIRON_ROOM_BYTES,  # first: proctitle.py relies on it
            **self._env,
            ZYGOTE_FD_VAR: str(zygote_end.fileno()),
            ZYGOTE_PARENT_VAR: str(os.getpid()),
        }
        try:
            self._process = await asyncio.create_subprocess_exec(
                *self._argv,
                env=env,
                cwd="/",
                pass_fds=(zygote_end.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                start_new_session=True,  # a terminal's Ctrl-C is the node's to handle
            )
        except OSError as exc:
            node_end.close()
            self.state = ZygoteState.LOST
            raise ZygoteUnavailable(f"cannot start the zygote: {exc}") from exc
        finally:
            zygote_end.close()
        enter_batch_class(self._process.pid)  # every environment it forks inherits it
        channel = ForkChannel(node_end, self._request_timeout_s, self._on_lost)
        self._channel = channel
        self.state = ZygoteState.RUNNING
        try:
            async with asyncio.timeout(self._start_timeout_s):
                pid = await channel.ready
        except (TimeoutError, ZygoteUnavailable) as exc:
            channel.close("the zygote did not get ready")
            await self._reap_process()
            raise ZygoteUnavailable(f"the zygote did not start: {exc}") from exc
        log.info("zygote %d ready", pid)

    def _on_lost(self, reason: str) -> None:
        if self.state is ZygoteState.RUNNING:
            self.state = ZygoteState.LOST
            log.warning("zygote lost: %s", reason)
            if self._process is not None and self._process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self._process.kill()  # it may be wedged rather than dead

    async def _restart(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._restart_lock:
            if self.state is not ZygoteState.LOST:
                return  # another spawn restarted it meanwhile (or it was stopped)
            if loop.time() < self._retry_after:
                raise ZygoteUnavailable("the zygote was lost and cannot be restarted yet")
            await self._reap_process()
            log.warning("starting another zygote")
            try:
                await self._launch()
            except ZygoteUnavailable:
                self.state = ZygoteState.LOST
                self._retry_after = loop.time() + self._restart_backoff_s
                raise

    async def _reap_process(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            await asyncio.wait_for(process.wait(), 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # the zygote's own pid, never its children's
            await process.wait()
