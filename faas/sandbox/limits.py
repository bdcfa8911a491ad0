"""Turn a function's MemorySize into the kernel limits of its execution environment.

Design notes: Lambda gives a function one vCPU per 1,769 MB of memory, so CPU is a
fraction of a core derived from MemorySize, capped at what the host has and floored so a
tiny function can still make progress. Everything here is pure arithmetic: the host's
core count comes in as an argument, and the cgroup backends turn the values into files.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
# Lambda's ratio: a function with 1,769 MB has the equivalent of one full vCPU.
MEMORY_MB_PER_CORE = 1769
# Below this a CFS quota starves the runtime itself (and the kernel's minimum quota is 1 ms).
MIN_CPU_CORES = 0.05
# The CFS period we use; quota is a fraction (or multiple) of it.
CPU_PERIOD_US = 100_000
# Lambda's limit on processes and threads in one execution environment.
DEFAULT_PIDS_MAX = 1024


@dataclass(frozen=True, slots=True)
class EnvironmentLimits:
    """The kernel-enforced limits of one execution environment.

    Attributes:
        memory_mb: the function's MemorySize, in MB as Lambda counts them (MiB).
        memory_bytes: the hard memory limit of the whole process tree.
        cpu_cores: the CPU share in cores (0.5 = half of one core).
        cpu_period_us: the CFS period, in microseconds.
        cpu_quota_us: CPU time the tree may use per period, in microseconds.
        pids_max: the most processes and threads the tree may hold at once.
    """

    memory_mb: int
    memory_bytes: int
    cpu_cores: float
    cpu_period_us: int
    cpu_quota_us: int
    pids_max: int

    @property
    def cpu_max(self) -> str:
        """The cgroup v2 ``cpu.max`` line: ``"<quota> <period>"``."""
        return f"{self.cpu_quota_us} {self.cpu_period_us}"


def cpu_cores_for(memory_mb: int, host_cores: int) -> float:
    """The CPU share, in cores, that Lambda gives ``memory_mb``, capped at ``host_cores``."""
    return max(MIN_CPU_CORES, min(float(host_cores), memory_mb / MEMORY_MB_PER_CORE))


def limits_for(
    memory_mb: int, host_cores: int, *, pids_max: int = DEFAULT_PIDS_MAX
) -> EnvironmentLimits:
    """Derive the limits of an environment from its function's MemorySize.

    Args:
        memory_mb: MemorySize (128-10,240 on Lambda; any positive value is accepted).
        host_cores: CPUs this node may use (e.g. ``len(os.sched_getaffinity(0))``).
        pids_max: the process/thread limit; Lambda's 1,024 unless a test wants fewer.

    Raises:
        ValueError: a non-positive memory size, core count or pids limit.
    """
    if memory_mb <= 0:
        raise ValueError(f"memory_mb must be positive, not {memory_mb}")
    if host_cores <= 0:
        raise ValueError(f"host_cores must be positive, not {host_cores}")
    if pids_max <= 0:
        raise ValueError(f"pids_max must be positive, not {pids_max}")
    cores = cpu_cores_for(memory_mb, host_cores)
    return EnvironmentLimits(
        memory_mb=memory_mb,
        memory_bytes=memory_mb * MIB,
        cpu_cores=cores,
        cpu_period_us=CPU_PERIOD_US,
        # The kernel refuses a quota under 1 ms; the floor keeps us well above it anyway.
        cpu_quota_us=max(1000, round(cores * CPU_PERIOD_US)),
        pids_max=pids_max,
    )
