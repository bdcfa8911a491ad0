"""The knobs of a benchmark run, with two profiles: ``full`` (the documented runs) and ``tiny``.

``tiny`` is what ``smoke`` uses for every scenario: enough to exercise each code
path once (every target, every mode) in well under a minute, and never a figure
to quote. Command-line flags override either profile field by field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Options:
    """Sizes and durations of every scenario; see ``bench/README.md`` for what each means."""

    duration_s: float = 5.0  # each measured load run
    # MemorySize of the functions of warm, payload, cold and async: 1769 MB is one full
    # core under faas's memory-proportional CPU limit, so those scenarios measure the
    # platform, not a small function's CPU share (burst and memory use 128 MB).
    memory_mb: int = 1769
    warmup_s: float = 1.0  # unmeasured load before each run (faas: until no more cold starts)
    concurrency: tuple[int, ...] = (1, 8, 64)  # warm: closed-loop client counts
    rate: float = 200.0  # warm: open-loop arrivals per second
    payload_sizes: tuple[int, ...] = (1024, 64 * 1024, 1024 * 1024, 6 * 1024 * 1024)
    payload_concurrency: tuple[int, ...] = (1,)
    cold_starts: int = 200  # cold: first invokes of new functions on an idle node
    cold_busy_starts: int = 100  # cold: new environments while the function's others are busy
    burst_n: int = 50  # burst: concurrent clients, hence environments to reach
    burst_sleep_ms: int = 100  # burst: handler time, so that every client holds an environment
    burst_limit: int | None = None  # burst: the node's --account-concurrency, if set
    env_counts: tuple[int, ...] = (1, 10, 50)  # memory: idle environments to measure
    async_concurrency: int = 16  # async: clients sending Event invokes
    async_warm_envs: int = 32  # async: environments started first (faas's dispatch concurrency)
    cpu_memory_mb: tuple[int, ...] = (885, 1769, 3538)  # cpu-share: MemorySize values
    cpu_seconds: float = 1.0  # cpu-share: wall time of each CPU-bound invoke
    cpu_repeats: int = 3  # cpu-share: measured invokes per MemorySize
    startup_runs: int = 10  # startup: fresh nodes started
    provisioned_versions: int = 20  # provisioned: versions provisioned, each first-invoked once
    provisioned_warm: int = 20  # provisioned: warm invokes after each first one
    trace_minutes: float = 360.0  # keepalive: trace length, in trace minutes
    trace_minute_s: float = 0.15  # keepalive: wall seconds per trace minute (histogram bin)
    client: str = "raw"  # the load client: "raw" (bench/rawhttp.py) or "aiohttp"
    with_baselines: bool = True
    pin: bool = True
    charts: bool = True
    strict: bool = False  # exit 1 when any request failed (smoke)
    out: Path = RESULTS_DIR

    def with_overrides(self, overrides: dict[str, Any]) -> Options:
        """A copy with every non-None override applied (Any: values of several field types)."""
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return {
            field.name: _jsonable(getattr(self, field.name)) for field in dataclasses.fields(self)
        }


def _jsonable(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


FULL = Options()

TINY = Options(
    duration_s=0.4,
    warmup_s=0.2,
    concurrency=(2,),
    rate=20.0,
    payload_sizes=(64 * 1024,),
    payload_concurrency=(1,),
    cold_starts=4,
    cold_busy_starts=2,
    burst_n=4,
    burst_sleep_ms=50,
    env_counts=(1, 3),
    async_concurrency=2,
    async_warm_envs=2,
    cpu_memory_mb=(885, 1769, 3538),
    cpu_seconds=0.2,
    cpu_repeats=1,
    startup_runs=1,
    provisioned_versions=2,
    provisioned_warm=3,
    trace_minutes=30.0,
    trace_minute_s=0.1,
    strict=True,
)
