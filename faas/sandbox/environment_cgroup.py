"""The cgroup of one execution environment: enter it, read its stats, kill it, remove it.

Design notes: a process enters its cgroup before it becomes the runtime. ``wrap`` returns
an argv prefix that runs ``/bin/sh``, which writes ``0`` into each ``cgroup.procs`` file
(``0`` means "the writing process", and ``echo`` is a shell builtin, so the shell moves
itself) and then execs the real program. The pid does not change across exec, so the
process the launcher holds is the runtime, and everything the runtime ever forks is born
inside the cgroup. If a write fails, the shell exits with ``WRAP_FAILED_EXIT`` instead of
running the program unconfined. When the node runs as root and the environment must not,
privileges are dropped *after* the move, by exec'ing ``setpriv`` between shell and program
(an unprivileged process may not move itself into a root-owned cgroup). A process forked by
a runtime's zygote enters the same way without the shell: it writes its pid into each of
``procs_files`` itself, and exits with ``WRAP_FAILED_EXIT`` if one is refused.

Three implementations share one interface: ``V1Cgroup`` (``cgroup_v1``: a directory per
controller hierarchy), ``V2Cgroup`` (``cgroup_v2``: one directory in the unified hierarchy),
both built on ``KernelCgroup`` here, and ``WatchdogCgroup`` (no kernel enforcement; a psutil
RSS watchdog over the process tree).
"""

from __future__ import annotations

import abc
import asyncio
import enum
import logging
import posixpath
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from faas.errors import PlatformError
from faas.sandbox import cgroupfs
from faas.sandbox.limits import EnvironmentLimits
from faas.sandbox.watchdog import MemoryWatchdog

log = logging.getLogger(__name__)

# The exit status of a wrapped process whose move into its cgroup failed (as env(1) uses 125).
WRAP_FAILED_EXIT = 125
_ENTER_SCRIPT = (
    'for f in "$@"; do [ "$f" = -- ] && break; '
    f'echo 0 >"$f" || exit {WRAP_FAILED_EXIT}; shift; done; shift; exec "$@"'
)
_POLL_S = 0.01
_ENTER_POLL_S = 0.001
_ENTER_POLL_MAX_S = 0.008


class CgroupKind(enum.Enum):
    V2 = "v2"  # unified hierarchy: one directory, memory + cpu (+ pids) controllers
    V1 = "v1"  # legacy hierarchies: one directory per controller (memory, cpu, pids)
    NONE = "none"  # no cgroup rights: an RSS watchdog; CPU and pids are not enforced


class CgroupState(enum.Enum):
    ACTIVE = "active"  # created; processes may enter
    REMOVED = "removed"  # processes killed and directories removed; final


@dataclass(frozen=True, slots=True)
class RunAs:
    """The unprivileged user and group an environment's processes run as."""

    uid: int
    gid: int


class EnvironmentCgroup(abc.ABC):
    """The limits of one execution environment's process tree, as the kernel enforces them.

    Use: ``wrap`` the runtime's argv, spawn it, ``attach`` its pid; read
    ``peak_memory_bytes``/``was_oom_killed`` for reports; ``remove`` when the environment ends.
    """

    __slots__ = ("_final", "_is_cpu_boosted", "_on_removed", "_setpriv", "env_id", "limits",
                 "state")  # fmt: skip

    def __init__(
        self,
        env_id: str,
        limits: EnvironmentLimits,
        setpriv: str | None,
        on_removed: Callable[[str], None],
    ) -> None:
        self.env_id = env_id
        self.limits = limits
        self.state = CgroupState.ACTIVE
        self._setpriv = setpriv
        self._on_removed = on_removed
        # (peak bytes, OOM-killed) read just before removal, so reports work afterwards too.
        self._final: tuple[int, bool] | None = None
        self._is_cpu_boosted = False  # the CPU quota is lifted (Init), not the memory share

    @property
    @abc.abstractmethod
    def kind(self) -> CgroupKind:
        """Which backend enforces the limits."""

    def wrap(self, argv: Sequence[str], *, run_as: RunAs | None = None) -> list[str]:
        """The argv to spawn instead of ``argv`` so the process starts inside this cgroup.

        Args:
            argv: the program and its arguments (``argv[0]`` is looked up in ``PATH``).
            run_as: drop to this uid/gid (supplementary groups cleared) after entering.

        Raises:
            RuntimeError: the cgroup was removed, or ``run_as`` was asked and there is no
                ``setpriv`` on this node.
        """
        if self.state is not CgroupState.ACTIVE:
            raise RuntimeError(f"cgroup of {self.env_id} is {self.state.value}")
        if not argv:
            raise ValueError("argv is empty")
        command = list(argv)
        if run_as is not None:
            if self._setpriv is None:
                raise RuntimeError("running as another user needs setpriv (util-linux)")
            command = [
                self._setpriv,
                f"--reuid={run_as.uid}",
                f"--regid={run_as.gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        procs = self._procs_files()
        if not procs:
            return command
        return ["/bin/sh", "-c", _ENTER_SCRIPT, "faas-cgroup", *map(str, procs), "--", *command]

    @property
    def procs_files(self) -> list[str]:
        """The ``cgroup.procs`` files a process writes its own pid into to enter this cgroup,
        as ``wrap``'s shell does (a zygote's child does it itself). Empty for the watchdog,
        which has none: there, ``attach`` after the spawn is all it takes.

        Raises:
            RuntimeError: the cgroup was removed.
        """
        if self.state is not CgroupState.ACTIVE:
            raise RuntimeError(f"cgroup of {self.env_id} is {self.state.value}")
        return [str(path) for path in self._procs_files()]

    @abc.abstractmethod
    async def attach(self, pid: int, *, is_inside: bool = False) -> None:
        """Tell the cgroup the pid of the environment's first process, just after spawning.

        Args:
            is_inside: the caller knows ``pid`` is inside already (it entered before the
                environment existed: a zygote's parked child); nothing to wait for.
        """

    async def reconfigure(self, *, is_cpu_boosted: bool) -> None:
        """Write ``limits`` again (they changed: a spare cgroup was given to an environment,
        ``env_id`` is now its), with the CPU quota lifted for Init if ``is_cpu_boosted``,
        and reset its counters. Its directories take the name ``env_id`` where the kernel
        can rename them (v1) with the processes inside; elsewhere they keep theirs."""
        await asyncio.to_thread(self._reassign, is_cpu_boosted)
        self._is_cpu_boosted = is_cpu_boosted

    def _reassign(self, is_cpu_boosted: bool) -> None:
        """Blocking: ``reconfigure`` (nothing to write without kernel cgroups)."""
        return None

    @abc.abstractmethod
    async def adopt(self, pid: int) -> None:
        """Move a process that was started without ``wrap`` (say, forked by a zygote) in.

        Only what it starts afterwards is born inside, so adopt it before it runs user
        code; then ``attach`` it as usual.

        Raises:
            PlatformError: the process is gone, or the kernel refused the move.
        """

    @property
    def peak_memory_file(self) -> str | None:
        """A file holding the environment's memory high-water mark in bytes, if the kernel
        keeps one (the native runtime reads it itself, off the node's event loop)."""
        return None

    async def set_init_boost(self, is_boosted: bool) -> None:
        """Lift the CPU quota for the Init phase, or restore the memory-proportional share.

        Lambda gives on-demand Init the host's full CPU; invocations then run at their
        share. Without kernel cgroups there is no quota to lift.
        """
        if is_boosted == self._is_cpu_boosted:
            return  # already so (a spare cgroup is handed over boosted)
        await asyncio.to_thread(self._write_cpu_quota, is_boosted)
        self._is_cpu_boosted = is_boosted

    def _write_cpu_quota(self, is_unlimited: bool) -> None:
        """Blocking: write the CPU quota (nothing to write without kernel cgroups)."""
        return None

    async def peak_memory_bytes(self) -> int:
        """The most memory the environment's tree has used at once, in bytes."""
        if self._final is not None:
            return self._final[0]
        return await self._read_peak_memory_bytes()

    async def was_oom_killed(self) -> bool:
        """True if a process of the environment was killed for going over the memory limit."""
        if self._final is not None:
            return self._final[1]
        return await self._read_was_oom_killed()

    @abc.abstractmethod
    async def kill_all(self) -> None:
        """SIGKILL every process of the environment, however it detached itself.

        Raises:
            PlatformError: processes were still alive after the kill timeout.
        """

    async def remove(self) -> None:
        """Kill every process and delete the cgroup. Idempotent; after a failure, try again.

        Raises:
            PlatformError: processes survived or the directories stayed busy.
        """
        if self.state is CgroupState.REMOVED:
            return
        await self.kill_all()
        if self._final is None:
            try:
                self._final = (
                    await self._read_peak_memory_bytes(),
                    await self._read_was_oom_killed(),
                )
            except OSError as exc:
                log.warning("no final memory figures for environment %s: %s", self.env_id, exc)
                self._final = (0, False)
        await self._remove()
        self.state = CgroupState.REMOVED
        self._on_removed(self.env_id)

    def _procs_files(self) -> list[Path]:
        return []

    @abc.abstractmethod
    async def _read_peak_memory_bytes(self) -> int: ...

    @abc.abstractmethod
    async def _read_was_oom_killed(self) -> bool: ...

    @abc.abstractmethod
    async def _remove(self) -> None:
        """Release what is left once every process has been killed."""


class KernelCgroup(EnvironmentCgroup):
    """Shared parts of the v1 and v2 backends: directories, entering, killing, removal.

    Args:
        dirs: controller -> this environment's directory (``""`` for the v2 hierarchy).
        member_paths: controller -> the path ``/proc/<pid>/cgroup`` shows for a member.
    """

    __slots__ = ("_dirs", "_kill_timeout_s", "_member_paths")

    def __init__(
        self,
        env_id: str,
        limits: EnvironmentLimits,
        setpriv: str | None,
        on_removed: Callable[[str], None],
        *,
        dirs: dict[str, Path],
        member_paths: dict[str, str],
        kill_timeout_s: float,
    ) -> None:
        super().__init__(env_id, limits, setpriv, on_removed)
        self._dirs = dirs
        self._member_paths = member_paths
        self._kill_timeout_s = kill_timeout_s

    @property
    def directories(self) -> list[Path]:
        """This environment's cgroup directories, one per hierarchy."""
        return sorted(set(self._dirs.values()))

    def _procs_files(self) -> list[Path]:
        return [directory / "cgroup.procs" for directory in self.directories]

    @abc.abstractmethod
    def configure(self) -> None:
        """Blocking: write the limits into the newly created directories."""

    def _reset_counters(self) -> None:
        """Blocking: forget the memory high-water mark and failure counts so far, if the
        kernel lets us (a spare cgroup's idle time is not the environment's)."""
        return None

    def _reassign(self, is_cpu_boosted: bool) -> None:
        self._rename_directories(self.env_id)
        self._reconfigure(is_cpu_boosted)

    def _reconfigure(self, is_cpu_boosted: bool) -> None:
        """Blocking: write the limits of a cgroup in use."""
        self.configure()
        self._reset_counters()
        if is_cpu_boosted:
            self._write_cpu_quota(True)

    def _rename_directories(self, name: str) -> None:
        """Blocking: rename every directory to ``name`` (same parent), or none of them."""
        renamed: dict[Path, Path] = {}
        try:
            for directory in self.directories:
                if directory.name != name:
                    target = directory.with_name(name)
                    directory.rename(target)
                    renamed[directory] = target
        except OSError:  # cgroup2 renames nothing: keep the old names everywhere
            for old, new in renamed.items():
                new.rename(old)
            return
        self._dirs = {c: renamed.get(d, d) for c, d in self._dirs.items()}
        self._member_paths = {
            c: posixpath.join(posixpath.dirname(path), name)
            for c, path in self._member_paths.items()
        }

    async def attach(self, pid: int, *, is_inside: bool = False) -> None:
        """Wait until the wrapped process ``pid`` has entered this cgroup (or has exited).

        The wrapper moves itself a moment after spawning; until it has, ``kill_all`` would
        find the cgroup empty. After this returns, everything the process starts is inside.

        Raises:
            PlatformError: the process is still outside after the kill timeout.
        """
        if is_inside:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._kill_timeout_s
        pause_s = _ENTER_POLL_S
        while not await asyncio.to_thread(self._has_entered, pid):
            if loop.time() > deadline:
                raise PlatformError(f"process {pid} did not enter the cgroup of {self.env_id}")
            await asyncio.sleep(pause_s)
            # Entering can wait for the kernel (an RCU grace period, longer while many
            # environments start): each look costs a thread hop and the cgroup lock.
            pause_s = min(2 * pause_s, _ENTER_POLL_MAX_S)

    async def adopt(self, pid: int) -> None:
        def move() -> None:
            for procs in self._procs_files():
                cgroupfs.write_text(procs, str(pid))

        try:
            await asyncio.to_thread(move)
        except OSError as exc:
            raise PlatformError(f"cannot move pid {pid} into {self.env_id}: {exc}") from exc

    def _has_entered(self, pid: int) -> bool:
        """Blocking: True if ``pid`` is in every directory of this cgroup, or is gone."""
        for controller, expected in self._member_paths.items():
            if cgroupfs.cgroup_path_of(pid, controller or None) != expected:
                return not cgroupfs.is_running(pid)
        return True

    def _kill_round(self) -> int:
        """Blocking: SIGKILL every member once; how many processes were still listed."""
        listed = 0
        seen: set[Path] = set()
        for controller, directory in self._dirs.items():
            if directory in seen:
                continue  # two controllers mounted together share one directory
            seen.add(directory)
            pids = cgroupfs.read_pids([directory / "cgroup.procs"])
            listed += len(pids)
            cgroupfs.kill_members(pids, controller or None, self._member_paths[controller])
        return listed

    async def _before_kill(self) -> None:
        """A backend's fast path for killing everything at once (v2 ``cgroup.kill``)."""

    async def kill_all(self) -> None:
        """Kill members until the cgroup is empty; new forks are caught by the next round."""
        await self._before_kill()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._kill_timeout_s
        while await asyncio.to_thread(self._kill_round):
            if loop.time() > deadline:
                raise PlatformError(
                    f"processes of environment {self.env_id} survived SIGKILL for "
                    f"{self._kill_timeout_s:g} s"
                )
            await asyncio.sleep(_POLL_S)

    async def _remove(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._kill_timeout_s
        remaining = self.directories
        while remaining:
            remaining = [
                d for d in remaining if not await asyncio.to_thread(cgroupfs.remove_dir, d)
            ]
            if not remaining:
                break
            if loop.time() > deadline:
                raise PlatformError(f"cannot remove cgroup {remaining[0]}: still busy")
            # Busy: a process was still exiting, or one slipped in; kill again and retry.
            await asyncio.sleep(_POLL_S)
            await asyncio.to_thread(self._kill_round)


class WatchdogCgroup(EnvironmentCgroup):
    """No kernel enforcement: a psutil watchdog kills the tree over the memory limit."""

    __slots__ = ("_interval_s", "_watchdog")

    def __init__(
        self,
        env_id: str,
        limits: EnvironmentLimits,
        setpriv: str | None,
        on_removed: Callable[[str], None],
        *,
        interval_s: float,
    ) -> None:
        super().__init__(env_id, limits, setpriv, on_removed)
        self._interval_s = interval_s
        self._watchdog: MemoryWatchdog | None = None

    @property
    def kind(self) -> CgroupKind:
        return CgroupKind.NONE

    async def attach(self, pid: int, *, is_inside: bool = False) -> None:
        """Start watching the tree rooted at ``pid``."""
        if self._watchdog is not None:
            raise RuntimeError(f"environment {self.env_id} is already attached")
        self._watchdog = MemoryWatchdog(pid, self.limits.memory_bytes, interval_s=self._interval_s)
        await self._watchdog.start()

    async def adopt(self, pid: int) -> None:
        """Nothing to move: ``attach`` starts watching the process wherever it came from."""

    async def _read_peak_memory_bytes(self) -> int:
        return self._watchdog.peak_bytes if self._watchdog is not None else 0

    async def _read_was_oom_killed(self) -> bool:
        return self._watchdog is not None and self._watchdog.was_tripped

    async def kill_all(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.kill()

    async def _remove(self) -> None:
        if self._watchdog is not None:
            await self._watchdog.stop()
            await self._watchdog.kill()


def member_path(mount_root: str, *parts: str) -> str:
    """The path ``/proc/<pid>/cgroup`` shows for a cgroup ``parts`` below a mount's root."""
    return posixpath.join(mount_root, *parts)
