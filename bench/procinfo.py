"""Read what processes cost: CPU seconds of a process tree, RSS/PSS/USS from smaps_rollup.

All functions here read /proc synchronously; callers on the event loop run them in
``asyncio.to_thread`` when they touch more than a handful of processes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from dataclasses import asdict, dataclass

import psutil

RUNTIME_MODULE = "faas_python_runtime"


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid``, its reaped children and its live descendants."""
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child_times = child.cpu_times()
                total += child_times.user + child_times.system
    except psutil.NoSuchProcess:
        return 0.0
    return float(total)


def own_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` itself, without any child."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return float(times.user + times.system)


@dataclass(frozen=True, slots=True)
class MemoryReading:
    """One process's memory, in KiB: resident, proportional (shared pages split), private."""

    pid: int
    rss_kb: int
    pss_kb: int
    uss_kb: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def read_memory(pid: int) -> MemoryReading | None:
    """RSS, PSS and USS (private clean + dirty) of ``pid`` from /proc/<pid>/smaps_rollup."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    fields[name] = int(parts[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return MemoryReading(pid, fields.get("Rss", 0), fields.get("Pss", 0), private)


def is_runtime(cmdline: list[str]) -> bool:
    """``python ... -m faas_python_runtime``, not a wrapper that will exec it later."""
    if not cmdline or not os.path.basename(cmdline[0]).startswith("python"):
        return False
    return any(
        arg == "-m" and following == RUNTIME_MODULE
        for arg, following in itertools.pairwise(cmdline)
    )


def environment_pids(node_pid: int, function_name: str | None = None) -> list[int]:
    """Pids of the node's execution environments (``python -S -m faas_python_runtime``).

    Args:
        function_name: only the environments of this function (from their environment).
    """
    pids: list[int] = []
    try:
        # Recursive: an isolation wrapper that forks would put the runtime one level down.
        children = psutil.Process(node_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return pids
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            if not is_runtime(child.cmdline()):
                continue
            if function_name is not None:
                if child.environ().get("AWS_LAMBDA_FUNCTION_NAME") != function_name:
                    continue
            pids.append(child.pid)
    return pids


def child_pids(pid: int) -> list[int]:
    """Pids of the direct children of ``pid`` (empty if it is gone)."""
    try:
        return [child.pid for child in psutil.Process(pid).children(recursive=False)]
    except psutil.NoSuchProcess:
        return []


def busy_s() -> dict[str, float]:
    """Busy CPU seconds since boot per line of /proc/stat: ``"cpu"`` (all cores), ``"cpu0"``, ...

    Busy is everything but idle and iowait, whoever spent it.
    """
    busy: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            for line in stat:
                if not line.startswith("cpu"):
                    break
                name, *values = line.split()
                # user nice system idle iowait irq softirq steal
                ticks = [int(value) for value in values[:8]]
                busy[name] = (sum(ticks) - ticks[3] - ticks[4]) / tick
    except OSError:
        pass
    return busy


def cores_busy_s(sample: dict[str, float], cores: tuple[int, ...]) -> float:
    """The busy seconds of ``cores`` in a ``busy_s`` sample."""
    return sum(sample.get(f"cpu{core}", 0.0) for core in cores)
