"""An execution environment's cgroup in the unified (v2) hierarchy."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from faas.sandbox import cgroupfs
from faas.sandbox.environment_cgroup import CgroupKind, KernelCgroup
from faas.sandbox.limits import EnvironmentLimits

log = logging.getLogger(__name__)

_HIGH_WATER_INTERVAL_S = 0.05


class V2Cgroup(KernelCgroup):
    """An environment in the unified (v2) hierarchy."""

    __slots__ = ("_high_water", "_tracker")

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
        super().__init__(
            env_id,
            limits,
            setpriv,
            on_removed,
            dirs=dirs,
            member_paths=member_paths,
            kill_timeout_s=kill_timeout_s,
        )
        self._high_water = 0
        self._tracker: asyncio.Task[None] | None = None

    @property
    def kind(self) -> CgroupKind:
        return CgroupKind.V2

    @property
    def _dir(self) -> Path:
        return self._dirs[""]

    def configure(self) -> None:
        """Blocking: write the limits into the new directory."""
        cgroupfs.write_text(self._dir / "memory.max", str(self.limits.memory_bytes))
        cgroupfs.write_if_present(self._dir / "memory.swap.max", "0")
        # On OOM, kill the whole environment, as Lambda does, not just the largest process.
        cgroupfs.write_if_present(self._dir / "memory.oom.group", "1")
        cgroupfs.write_text(self._dir / "cpu.max", self.limits.cpu_max)
        if (self._dir / "pids.max").exists():
            cgroupfs.write_text(self._dir / "pids.max", str(self.limits.pids_max))

    @property
    def peak_memory_file(self) -> str | None:
        peak = self._dir / "memory.peak"
        return str(peak) if peak.exists() else None

    def _write_cpu_quota(self, is_unlimited: bool) -> None:
        line = f"max {self.limits.cpu_period_us}" if is_unlimited else self.limits.cpu_max
        cgroupfs.write_text(self._dir / "cpu.max", line)

    async def attach(self, pid: int, *, is_inside: bool = False) -> None:
        await super().attach(pid, is_inside=is_inside)
        # Kernels before 5.19 have no memory.peak: sample memory.current instead.
        has_peak = await asyncio.to_thread((self._dir / "memory.peak").exists)
        if not has_peak and self._tracker is None:
            self._tracker = asyncio.create_task(self._track_high_water())

    async def _track_high_water(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        try:
            while True:
                current = await asyncio.to_thread(cgroupfs.read_int, self._dir / "memory.current")
                self._high_water = max(self._high_water, current)
                next_tick = max(next_tick + _HIGH_WATER_INTERVAL_S, loop.time())
                await asyncio.sleep(next_tick - loop.time())
        except FileNotFoundError:
            return  # removed underneath us
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("memory tracking of environment %s failed", self.env_id)

    async def _read_peak_memory_bytes(self) -> int:
        try:
            return await asyncio.to_thread(cgroupfs.read_int, self._dir / "memory.peak")
        except FileNotFoundError:
            current = await asyncio.to_thread(cgroupfs.read_int, self._dir / "memory.current")
            self._high_water = max(self._high_water, current)
            return self._high_water

    async def _read_was_oom_killed(self) -> bool:
        events = await asyncio.to_thread(cgroupfs.read_keyed, self._dir / "memory.events")
        return events.get("oom_kill", 0) > 0

    async def _before_kill(self) -> None:
        # cgroup.kill (5.14+) kills every member atomically, fork bombs included.
        await asyncio.to_thread(cgroupfs.write_if_present, self._dir / "cgroup.kill", "1")

    async def _remove(self) -> None:
        if self._tracker is not None:
            self._tracker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tracker
            self._tracker = None
        await super()._remove()
