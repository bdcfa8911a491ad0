"""Limits derived from MemorySize: memory bytes, CPU share and its CFS/cpu.max form, pids."""

from __future__ import annotations

import pytest

from faas.sandbox.limits import (
    CPU_PERIOD_US,
    DEFAULT_PIDS_MAX,
    MIB,
    MIN_CPU_CORES,
    cpu_cores_for,
    limits_for,
)


def test_memory_limit_is_memory_size_in_mib() -> None:
    assert limits_for(128, host_cores=4).memory_bytes == 128 * 1024 * 1024
    assert limits_for(10240, host_cores=4).memory_bytes == 10240 * MIB


@pytest.mark.parametrize(
    ("memory_mb", "host_cores", "cores"),
    [
        (885, 4, 885 / 1769),  # about half a core
        (1769, 4, 1.0),  # one vCPU, as Lambda
        (3538, 4, 2.0),
        (3538, 2, 2.0),  # exactly the host
        (3538, 1, 1.0),  # capped at the host's cores
        (10240, 2, 2.0),
        (32, 4, MIN_CPU_CORES),  # floored: 32/1769 would starve the runtime
    ],
)
def test_cpu_share_is_proportional_to_memory(memory_mb: int, host_cores: int, cores: float) -> None:
    assert cpu_cores_for(memory_mb, host_cores) == pytest.approx(cores)
    limits = limits_for(memory_mb, host_cores)
    assert limits.cpu_cores == pytest.approx(cores)
    assert limits.cpu_period_us == CPU_PERIOD_US == 100_000
    assert limits.cpu_quota_us == round(cores * 100_000)


def test_half_a_core_in_v1_and_v2_forms() -> None:
    limits = limits_for(885, host_cores=8)
    assert limits.cpu_cores == pytest.approx(0.5, abs=0.001)
    assert limits.cpu_quota_us == 50_028
    assert limits.cpu_max == "50028 100000"


def test_pids_limit_defaults_to_lambdas() -> None:
    assert limits_for(128, 2).pids_max == DEFAULT_PIDS_MAX == 1024
    assert limits_for(128, 2, pids_max=20).pids_max == 20


@pytest.mark.parametrize(
    ("memory_mb", "host_cores", "pids_max"), [(0, 2, 1024), (128, 0, 1024), (128, 2, 0)]
)
def test_nonsense_is_refused(memory_mb: int, host_cores: int, pids_max: int) -> None:
    with pytest.raises(ValueError):
        limits_for(memory_mb, host_cores, pids_max=pids_max)


def test_limits_are_frozen() -> None:
    limits = limits_for(128, 2)
    with pytest.raises(AttributeError):
        limits.memory_bytes = 1  # type: ignore[misc]
