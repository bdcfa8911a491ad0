"""An execution environment's cgroup in the v1 hierarchies: memory, cpu and (if mounted) pids."""

from __future__ import annotations

import asyncio

from faas.sandbox import cgroupfs
from faas.sandbox.environment_cgroup import CgroupKind, KernelCgroup


class V1Cgroup(KernelCgroup):
    """An environment in the cgroup v1 hierarchies (memory, cpu and, if mounted, pids)."""

    __slots__ = ()

    @property
    def kind(self) -> CgroupKind:
        return CgroupKind.V1

    def configure(self) -> None:
        """Blocking: write the limits into the new directories."""
        memory = self._dirs["memory"]
        limit = str(self.limits.memory_bytes)
        cgroupfs.write_text(memory / "memory.limit_in_bytes", limit)
        # memsw is memory+swap; equal to the memory limit, swapping cannot hide usage.
        if (memory / "memory.memsw.limit_in_bytes").exists():
            cgroupfs.write_text(memory / "memory.memsw.limit_in_bytes", limit)
        cgroupfs.write_if_present(memory / "memory.swappiness", "0")
        cpu = self._dirs["cpu"]
        cgroupfs.write_text(cpu / "cpu.cfs_period_us", str(self.limits.cpu_period_us))
        cgroupfs.write_text(cpu / "cpu.cfs_quota_us", str(self.limits.cpu_quota_us))
        if "pids" in self._dirs:
            cgroupfs.write_text(self._dirs["pids"] / "pids.max", str(self.limits.pids_max))

    def _reconfigure(self, is_cpu_boosted: bool) -> None:
        """Blocking: the new limits of a cgroup in use (written just before an environment
        starts, so only what can differ: the memory limit, pids, the CPU quota). memsw
        (memory+swap) may never be below the memory limit: it goes up first, down last."""
        memory = self._dirs["memory"]
        limit = str(self.limits.memory_bytes)
        limits = [memory / "memory.limit_in_bytes"]
        memsw = memory / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            current = cgroupfs.read_int(memory / "memory.limit_in_bytes")
            limits = [memsw, *limits] if self.limits.memory_bytes > current else [*limits, memsw]
        for path in limits:
            cgroupfs.write_text(path, limit)
        if "pids" in self._dirs:
            cgroupfs.write_text(self._dirs["pids"] / "pids.max", str(self.limits.pids_max))
        self._write_cpu_quota(is_cpu_boosted)
        self._reset_counters()

    def _reset_counters(self) -> None:
        # Writing 0 sets the high-water mark to the current usage.
        cgroupfs.write_if_present(self._dirs["memory"] / "memory.max_usage_in_bytes", "0")

    @property
    def peak_memory_file(self) -> str | None:
        return str(self._dirs["memory"] / "memory.max_usage_in_bytes")

    def _write_cpu_quota(self, is_unlimited: bool) -> None:
        quota = "-1" if is_unlimited else str(self.limits.cpu_quota_us)
        cgroupfs.write_text(self._dirs["cpu"] / "cpu.cfs_quota_us", quota)

    async def _read_peak_memory_bytes(self) -> int:
        path = self._dirs["memory"] / "memory.max_usage_in_bytes"
        return await asyncio.to_thread(cgroupfs.read_int, path)

    async def _read_was_oom_killed(self) -> bool:
        memory = self._dirs["memory"]
        events = await asyncio.to_thread(cgroupfs.read_keyed, memory / "memory.oom_control")
        if "oom_kill" in events:
            return events["oom_kill"] > 0
        # Kernels before 4.13 have no oom_kill counter: hitting the limit is the best sign.
        return await asyncio.to_thread(cgroupfs.read_int, memory / "memory.failcnt") > 0
