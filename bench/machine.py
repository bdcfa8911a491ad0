"""Machine facts and CPU pinning: which core runs the load generator, which the system under test.

Design notes: on a 2-core machine the generator and the server fight for the same
cores unless they are kept apart, and the result then measures the scheduler. The
generator pins its own process (before any thread exists, so every thread inherits
it); each process under test is started through ``taskset`` so that it and every
child it forks later (faas's environments) stay on the other core.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

_PACKAGES = ("faas", "aiohttp", "uvloop", "msgpack", "hdrhistogram", "rich", "psutil")


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which cores the generator and the processes under test may run on."""

    generator_cores: tuple[int, ...]
    sut_cores: tuple[int, ...]
    method: str  # "taskset", "sched_setaffinity" or "none"
    note: str

    @property
    def is_pinned(self) -> bool:
        return self.method != "none"

    def sut_prefix(self, cores: tuple[int, ...] | None = None) -> list[str]:
        """The argv prefix that starts a process (and its future children) on the SUT cores.

        Args:
            cores: other cores than the default SUT cores (e.g. all of them for cpu-share).
        """
        chosen = self.sut_cores if cores is None else cores
        if self.method != "taskset" or not chosen:
            return []
        return ["taskset", "-c", ",".join(str(core) for core in chosen)]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_pinning(is_enabled: bool) -> Pinning:
    """Split the cores this process may use: the first for the generator, the rest for the SUT."""
    available = tuple(sorted(os.sched_getaffinity(0)))
    if not is_enabled:
        return Pinning(available, available, "none", "pinning disabled (--no-pin)")
    if len(available) < 2:
        return Pinning(available, available, "none", "one core only: generator and SUT share it")
    method = "taskset" if shutil.which("taskset") else "none"
    note = f"generator on core {available[0]}, system under test on {list(available[1:])}"
    if method == "none":
        note = "taskset not found: only the generator is pinned"
        method = "sched_setaffinity"
    return Pinning(available[:1], available[1:], method, note)


def pin_generator(pinning: Pinning) -> None:
    """Pin this process to the generator cores; call before any thread is started."""
    if pinning.is_pinned:
        os.sched_setaffinity(0, set(pinning.generator_cores))


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total_mb() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    """CPU model, core count, memory, kernel, Python and the versions of the libraries in play."""
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count() or 0,
        "memory_mb": _memory_total_mb(),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": {package: _version(package) for package in _PACKAGES},
        "matplotlib": _version("matplotlib"),
        "load_average": list(os.getloadavg()),
    }
