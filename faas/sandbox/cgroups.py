"""Choose cgroup v2, cgroup v1 or the watchdog fallback at start-up, and own the node's cgroups.

Design notes: everything this node creates lives in ``<hierarchy>/faas/<node-id>/<env-id>``
(one such path per v1 controller hierarchy, one in v2), and nothing outside ``faas/`` is
ever written. ``start`` picks the first usable backend (v2 with memory and cpu already
enabled at the top, then v1 with memory and cpu mounted writable, then ``none``), creates
``faas/<node-id>`` and logs the choice; ``stop`` kills whatever is still inside, removes
every environment's directory, then the node's, leaf first. ``faas/`` itself is shared by
every node on the host: it is created if missing and removed when it is empty.

Typical use::

    manager = CgroupManager(node_id=f"{os.getpid()}")
    await manager.start()
    cgroup = await manager.create(env_id, manager.limits_for(config.memory_mb))
    process = await asyncio.create_subprocess_exec(*cgroup.wrap(argv), ...)
    await cgroup.attach(process.pid)
    ...
    await cgroup.remove()
    await manager.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from faas.errors import PlatformError
from faas.sandbox import cgroupfs
from faas.sandbox.cgroup_v1 import V1Cgroup
from faas.sandbox.cgroup_v2 import V2Cgroup
from faas.sandbox.environment_cgroup import (
    WRAP_FAILED_EXIT,
    CgroupKind,
    CgroupState,
    EnvironmentCgroup,
    KernelCgroup,
    RunAs,
    WatchdogCgroup,
    member_path,
)
from faas.sandbox.limits import (
    DEFAULT_PIDS_MAX,
    MEMORY_MB_PER_CORE,
    EnvironmentLimits,
    limits_for,
)
from faas.sandbox.watchdog import DEFAULT_INTERVAL_S

__all__ = [
    "WRAP_FAILED_EXIT",
    "CgroupKind",
    "CgroupManager",
    "CgroupState",
    "EnvironmentCgroup",
    "ManagerState",
    "RunAs",
    "host_cpu_count",
]

log = logging.getLogger(__name__)

# A node or environment id becomes a directory name: keep it to one safe path component.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SUBTREE_ATTEMPTS = 5
_DEFAULT_KILL_TIMEOUT_S = 5.0


class ManagerState(enum.Enum):
    NEW = "new"  # constructed; no backend chosen, nothing created
    STARTED = "started"  # backend chosen, faas/<node-id> created
    STOPPED = "stopped"  # everything created has been removed; final


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where the chosen backend keeps this node's cgroups.

    Attributes:
        kind: the backend.
        node_dirs: controller -> ``<mount>/faas/<node-id>`` (``""`` is the v2 hierarchy).
        member_roots: controller -> that directory as ``/proc/<pid>/cgroup`` names it.
    """

    kind: CgroupKind
    node_dirs: dict[str, Path]
    member_roots: dict[str, str]


def host_cpu_count() -> int:
    """The CPUs this process may run on (its affinity mask, not every CPU of the machine)."""
    return len(os.sched_getaffinity(0))


def _check_name(what: str, value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} must match {_NAME.pattern}")
    return value


class CgroupManager:
    """Owns this node's cgroup subtree and creates one cgroup per execution environment.

    Args:
        node_id: names this node's subtree (``faas/<node_id>``); unique among live nodes
            on the host, e.g. the server's pid plus a random suffix.
        kind: force a backend instead of detecting one; starting fails if it is unusable.
        subtree: the top directory shared by all faas nodes in each hierarchy.
        kill_timeout_s: how long killing and removing an environment may take.
        watchdog_interval_s: the RSS poll interval of the ``none`` backend.
    """

    __slots__ = (
        "_envs",
        "_host_cores",
        "_kill_timeout_s",
        "_layout",
        "_node_id",
        "_requested",
        "_setpriv",
        "_state",
        "_subtree",
        "_watchdog_interval_s",
    )

    def __init__(
        self,
        node_id: str,
        *,
        kind: CgroupKind | None = None,
        subtree: str = "faas",
        kill_timeout_s: float = _DEFAULT_KILL_TIMEOUT_S,
        watchdog_interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self._node_id = _check_name("node id", node_id)
        self._subtree = _check_name("subtree", subtree)
        self._requested = kind
        self._kill_timeout_s = kill_timeout_s
        self._watchdog_interval_s = watchdog_interval_s
        self._state = ManagerState.NEW
        self._layout: _Layout | None = None
        self._setpriv: str | None = None
        self._host_cores = 1
        self._envs: dict[str, EnvironmentCgroup] = {}

    @property
    def state(self) -> ManagerState:
        return self._state

    @property
    def kind(self) -> CgroupKind:
        """The backend chosen at start-up.

        Raises:
            RuntimeError: the manager has not been started.
        """
        return self._started_layout().kind

    @property
    def node_directories(self) -> list[Path]:
        """This node's ``faas/<node-id>`` directories (none for the ``none`` backend)."""
        return sorted(set(self._started_layout().node_dirs.values()))

    @property
    def environments(self) -> list[EnvironmentCgroup]:
        """The environments' cgroups that exist now."""
        return list(self._envs.values())

    def limits_for(self, memory_mb: int, *, pids_max: int = DEFAULT_PIDS_MAX) -> EnvironmentLimits:
        """The limits of an environment with ``memory_mb``, CPU capped at this host's cores."""
        self._started_layout()
        return limits_for(memory_mb, self._host_cores, pids_max=pids_max)

    async def start(self) -> None:
        """Choose the backend, create ``faas/<node-id>`` and log the choice.

        Raises:
            PlatformError: the requested backend is unusable, or ``faas/<node-id>`` already
                exists (another live node uses this id, or a crashed one left it behind).
        """
        if self._state is not ManagerState.NEW:
            raise RuntimeError(f"cgroup manager cannot start from {self._state.value}")
        self._host_cores = host_cpu_count()
        self._setpriv = await asyncio.to_thread(shutil.which, "setpriv")
        layout, reasons = await self._choose_backend()
        self._layout = layout
        self._state = ManagerState.STARTED
        swept = await asyncio.to_thread(_sweep_stale_nodes, layout.node_dirs.values())
        if swept:
            log.info("cgroups: removed %d empty cgroups left by nodes that are gone", swept)
        if layout.kind is CgroupKind.NONE:
            log.warning(
                "cgroups: none (%s); memory is enforced by an RSS watchdog, CPU and pids are not",
                "; ".join(reasons) or "requested",
            )
        else:
            where = ", ".join(sorted(str(path) for path in set(layout.node_dirs.values())))
            log.info("cgroups: %s, environments under %s", layout.kind.value, where)

    async def create(self, env_id: str, limits: EnvironmentLimits) -> EnvironmentCgroup:
        """Create the cgroup of one environment and write its limits.

        Raises:
            ValueError: ``env_id`` is not a plain name, or is in use on this node.
            PlatformError: the kernel refused to create or configure the cgroup.
        """
        layout = self._started_layout()
        _check_name("environment id", env_id)
        if env_id in self._envs:
            raise ValueError(f"environment id {env_id!r} already has a cgroup")
        cgroup: EnvironmentCgroup
        if layout.kind is CgroupKind.NONE:
            cgroup = WatchdogCgroup(
                env_id, limits, self._setpriv, self._forget, interval_s=self._watchdog_interval_s
            )
        else:
            cls = V2Cgroup if layout.kind is CgroupKind.V2 else V1Cgroup
            cgroup = cls(
                env_id,
                limits,
                self._setpriv,
                self._forget,
                dirs={c: d / env_id for c, d in layout.node_dirs.items()},
                member_paths={c: member_path(r, env_id) for c, r in layout.member_roots.items()},
                kill_timeout_s=self._kill_timeout_s,
            )
            # Known before its directories exist: if this task is cancelled while a worker
            # thread still makes them, ``stop`` removes them all the same.
            self._envs[env_id] = cgroup
            try:
                await self._make_environment_dirs(cgroup)
            except PlatformError:
                del self._envs[env_id]
                raise
        self._envs[env_id] = cgroup
        return cgroup

    async def create_spare(self) -> EnvironmentCgroup:
        """A cgroup for a process started before its environment exists (a zygote's parked
        child), named ``spare-<hex>``, with one core's limits; ``assign`` hands it over.

        Raises:
            PlatformError: the kernel refused to create or configure the cgroup.
        """
        limits = self.limits_for(MEMORY_MB_PER_CORE)
        return await self.create(f"spare-{secrets.token_hex(8)}", limits)

    async def assign(
        self,
        spare: EnvironmentCgroup,
        env_id: str,
        limits: EnvironmentLimits,
        *,
        is_cpu_boosted: bool = False,
    ) -> EnvironmentCgroup:
        """Give a spare cgroup, and whatever already runs in it, to environment ``env_id``.

        Its directories keep their names; its limits become ``limits`` (the CPU quota lifted
        if ``is_cpu_boosted``, as ``set_init_boost(True)`` would) and its counters restart.

        Raises:
            ValueError: ``env_id`` is not a plain name or is in use, or ``spare`` is not one of
                this node's live cgroups.
            PlatformError: the kernel refused the new limits.
        """
        _check_name("environment id", env_id)
        if env_id in self._envs:
            raise ValueError(f"environment id {env_id!r} already has a cgroup")
        if self._envs.get(spare.env_id) is not spare or spare.state is not CgroupState.ACTIVE:
            raise ValueError(f"{spare.env_id} is not a live cgroup of this node")
        del self._envs[spare.env_id]
        spare.env_id = env_id
        spare.limits = limits
        self._envs[env_id] = spare
        try:
            await spare.reconfigure(is_cpu_boosted=is_cpu_boosted)
        except OSError as exc:
            raise PlatformError(f"cannot set the limits of {env_id}: {exc}") from exc
        return spare

    async def stop(self) -> None:
        """Kill everything left inside, remove every cgroup this node created, leaf first.

        Raises:
            ExceptionGroup: some cgroups could not be removed (the rest were).
        """
        if self._state is not ManagerState.STARTED:
            self._state = ManagerState.STOPPED
            return
        errors: list[Exception] = []
        for cgroup in list(self._envs.values()):
            try:
                await cgroup.remove()
            except (OSError, PlatformError) as exc:
                log.error("cannot remove the cgroup of environment %s: %s", cgroup.env_id, exc)
                errors.append(exc)
        layout = self._started_layout()
        for directory in sorted(set(layout.node_dirs.values())):
            try:
                await self._remove_node_dir(directory)
            except (OSError, PlatformError) as exc:
                log.error("cannot remove cgroup %s: %s", directory, exc)
                errors.append(exc)
        self._state = ManagerState.STOPPED
        if errors:
            raise ExceptionGroup("cgroups left behind", errors)

    def _started_layout(self) -> _Layout:
        if self._state is not ManagerState.STARTED or self._layout is None:
            raise RuntimeError(f"cgroup manager is {self._state.value}, not started")
        return self._layout

    def _forget(self, env_id: str) -> None:
        self._envs.pop(env_id, None)

    async def _choose_backend(self) -> tuple[_Layout, list[str]]:
        """The first usable backend (or the requested one), and why the ones before failed."""
        mounts = await asyncio.to_thread(cgroupfs.read_mounts)
        candidates = [self._requested] if self._requested else list(CgroupKind)
        reasons: list[str] = []
        for kind in candidates:
            layout, reason = await asyncio.to_thread(self._try_backend, kind, mounts)
            if layout is not None:
                return layout, reasons
            if self._requested is not None:
                raise PlatformError(f"cgroup backend {kind.value} is not usable: {reason}")
            reasons.append(f"{kind.value}: {reason}")
        raise PlatformError("no cgroup backend is usable")  # unreachable: none always is

    def _try_backend(
        self, kind: CgroupKind, mounts: list[cgroupfs.Mount]
    ) -> tuple[_Layout | None, str]:
        """Blocking: the layout of ``kind`` with ``faas/<node-id>`` created, or why not."""
        if kind is CgroupKind.NONE:
            return _Layout(CgroupKind.NONE, {}, {}), ""
        by_controller: dict[str, cgroupfs.Mount]
        if kind is CgroupKind.V2:
            v2, reason = cgroupfs.find_v2(mounts)
            if v2 is None:
                return None, reason
            by_controller = {"": v2}
        else:
            v1, reason = cgroupfs.find_v1(mounts)
            if v1 is None:
                return None, reason
            by_controller = v1
        layout = _Layout(
            kind,
            {
                c: Path(m.mount_point, self._subtree, self._node_id)
                for c, m in by_controller.items()
            },
            {
                c: member_path(m.root, self._subtree, self._node_id)
                for c, m in by_controller.items()
            },
        )
        created: list[Path] = []
        try:
            for directory in sorted(set(layout.node_dirs.values())):
                self._make_node_dir(directory, kind)
                created.append(directory)
        except FileExistsError as exc:
            self._undo(created)
            raise PlatformError(
                f"cgroup {exc.filename} exists: node id {self._node_id!r} is in use "
                "(or a crashed node left it; remove it once its processes are gone)"
            ) from exc
        except OSError as exc:
            self._undo(created)
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                return None, f"cannot create {exc.filename}: {exc.strerror}"
            raise PlatformError(f"cannot create cgroup {exc.filename}: {exc}") from exc
        return layout, ""

    def _make_node_dir(self, node_dir: Path, kind: CgroupKind) -> None:
        """Blocking: create ``faas/`` if missing, then ``faas/<node-id>`` (which must not exist)."""
        subtree = node_dir.parent
        for attempt in range(_SUBTREE_ATTEMPTS):
            cgroupfs.make_dir(subtree)
            if kind is CgroupKind.V2:
                _enable_controllers(subtree)
            try:
                node_dir.mkdir()
            except FileNotFoundError:
                # Another node removed the empty faas/ between our two mkdirs: again.
                if attempt == _SUBTREE_ATTEMPTS - 1:
                    raise
                continue
            break
        if kind is CgroupKind.V2:
            _enable_controllers(node_dir)

    def _undo(self, node_dirs: list[Path]) -> None:
        for directory in reversed(node_dirs):
            cgroupfs.remove_dir(directory)
            cgroupfs.remove_dir(directory.parent)

    async def _make_environment_dirs(self, cgroup: KernelCgroup) -> None:
        def make() -> None:
            created: list[Path] = []
            try:
                for directory in cgroup.directories:
                    directory.mkdir()
                    created.append(directory)
                cgroup.configure()
            except BaseException:
                for directory in reversed(created):
                    cgroupfs.remove_dir(directory)
                raise

        try:
            await asyncio.to_thread(make)
        except OSError as exc:
            raise PlatformError(f"cannot set up the cgroup of {cgroup.env_id}: {exc}") from exc

    async def _remove_node_dir(self, directory: Path) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._kill_timeout_s
        while not await asyncio.to_thread(cgroupfs.remove_dir, directory):
            if loop.time() > deadline:
                raise PlatformError(f"cannot remove cgroup {directory}: still busy")
            await asyncio.sleep(0.01)
        # faas/ is shared with other nodes: remove it only if it is now empty.
        await asyncio.to_thread(cgroupfs.remove_dir, directory.parent)


def _enable_controllers(directory: Path) -> None:
    """Blocking: let the children of a v2 cgroup use memory, cpu and (if available) pids."""
    available = set(cgroupfs.read_text(directory / "cgroup.controllers").split())
    for controller in ("memory", "cpu", "pids"):
        if controller in available:
            cgroupfs.write_text(directory / "cgroup.subtree_control", f"+{controller}")


_NODE_ID = re.compile(r"(\d+)-[0-9a-f]+")


def _sweep_stale_nodes(node_dirs: Iterable[Path]) -> int:
    """Remove the empty cgroups of other nodes under ``faas/`` whose process is gone.

    A node killed with SIGKILL cannot remove its own ``faas/<pid>-<suffix>`` directories;
    the next node does, as long as no process is left in them. Returns how many it removed.
    """
    removed = 0
    for parent in {directory.parent for directory in node_dirs}:
        for stale in parent.iterdir() if parent.is_dir() else ():
            match = _NODE_ID.fullmatch(stale.name)
            if not match or not stale.is_dir() or _is_alive(int(match.group(1))):
                continue
            for directory in [*sorted(stale.rglob("*"), reverse=True), stale]:
                if directory.is_dir() and _is_empty_cgroup(directory):
                    with contextlib.suppress(OSError):
                        directory.rmdir()
                        removed += 1
    return removed


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_empty_cgroup(directory: Path) -> bool:
    try:
        return not (directory / "cgroup.procs").read_text().strip()
    except OSError:
        return False
