"""One measured load run against one target: warm up, sample CPU, drive load, sample again.

Design notes: a faas node warms up until a warm-up round adds no cold start (at
concurrency 64 the first round spawns 64 environments, which is the cold scenario's
business, not the warm one's). CPU is sampled from /proc before and after the run:
the SUT's whole process tree (node plus environments, or server plus worker and
spawned children) and, for faas, the node process alone. ``bound`` says who ran
out of CPU first, so that a saturated generator is never read as a slow server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from bench.context import RunContext
from bench.loadgen import LiveStats, LoadResult, RequestSpec, run_closed, run_open
from bench.procinfo import busy_s, cores_busy_s
from bench.services import FaasNode, Target, metric_sum

_SATURATED = 0.9  # share of the available cores above which a side counts as saturated
_MOSTLY = 0.7  # share of a saturated core that the SUT itself must use to be the bottleneck
_MAX_WARMUP_ROUNDS = 6


@dataclass(frozen=True, slots=True)
class Measurement:
    """A load result with the CPU the system under test spent on it."""

    target: str
    case: str
    load: LoadResult
    sut_cpu_s: float
    node_cpu_s: float | None  # faas only: the node process without its environments
    sut_cores: int
    machine_busy_s: float  # every core's busy time during the run, whoever used it
    sut_core_busy_fraction: float  # how busy the SUT's cores were, whoever used them
    generator_core_busy_fraction: float  # how busy the generator's cores were

    @property
    def sut_cpu_fraction(self) -> float:
        """Share of the SUT's cores used (1.0 = all of them busy)."""
        elapsed = self.load.elapsed_s * max(1, self.sut_cores)
        return self.sut_cpu_s / elapsed if elapsed > 0 else 0.0

    @property
    def other_cpu_cores(self) -> float:
        """Cores kept busy by processes that are neither the generator nor the SUT (noise)."""
        other = self.machine_busy_s - self.sut_cpu_s - self.load.generator_cpu_s
        return max(0.0, other / self.load.elapsed_s) if self.load.elapsed_s > 0 else 0.0

    @property
    def cpu_ms_per_invoke(self) -> float:
        return self.sut_cpu_s * 1000 / self.load.completed if self.load.completed else 0.0

    @property
    def node_cpu_ms_per_invoke(self) -> float | None:
        if self.node_cpu_s is None or not self.load.completed:
            return None
        return self.node_cpu_s * 1000 / self.load.completed

    @property
    def bound(self) -> str:
        """What ran out first: ``server``, ``GENERATOR`` (the figure is suspect), ``contended``.

        ``server``: the SUT's cores were saturated, mostly by the SUT. ``GENERATOR``: the
        generator used its whole core. ``contended``: a core was saturated mostly by other
        processes on the machine (a noisy run). ``-``: nothing was saturated.
        """
        if self.load.generator_cpu_fraction >= _SATURATED:
            return "GENERATOR"
        if self.sut_core_busy_fraction >= _SATURATED and self.sut_cpu_fraction >= _MOSTLY:
            return "server"
        if max(self.sut_core_busy_fraction, self.generator_core_busy_fraction) >= _SATURATED:
            return "contended"
        return "-"

    def record(self) -> dict[str, Any]:
        """The run as a JSON value (Any: JSON values), with its encoded HDR histogram."""
        load = self.load
        record: dict[str, Any] = {
            "target": self.target,
            "case": self.case,
            "mode": load.mode,
            "concurrency": load.concurrency,
            "offered_rate": load.offered_rate,
            "completed": load.completed,
            "errors": load.errors,
            "error_samples": load.error_samples,
            "unfinished": load.unfinished,
            "elapsed_s": round(load.elapsed_s, 4),
            "rps": round(load.rps, 2),
            "latency_ms": load.histogram.summary().as_dict(),
            "generator_cpu_fraction": round(load.generator_cpu_fraction, 3),
            "sut_cpu_fraction": round(self.sut_cpu_fraction, 3),
            "sut_cpu_ms_per_invoke": round(self.cpu_ms_per_invoke, 4),
            "node_cpu_ms_per_invoke": _rounded(self.node_cpu_ms_per_invoke),
            "bound": self.bound,
            "other_cpu_cores": round(self.other_cpu_cores, 3),
            "sut_core_busy_fraction": round(self.sut_core_busy_fraction, 3),
            "generator_core_busy_fraction": round(self.generator_core_busy_fraction, 3),
            "hdr_latency_us": load.histogram.encode(),
        }
        if load.mode == "open":
            record["service_time_ms"] = load.service_histogram.summary().as_dict()
        return record

    def summary_line(self) -> str:
        p = self.load.histogram.summary()
        return (
            f"{self.target:>10} {self.case:<14} {self.load.rps:9,.0f} req/s  p50 {p.p50_ms:8.2f} ms"
            f"  p99 {p.p99_ms:8.2f} ms  errors {self.load.error_count}  bound {self.bound}"
        )


def _core_fraction(
    before: dict[str, float], after: dict[str, float], cores: tuple[int, ...], elapsed_s: float
) -> float:
    busy = cores_busy_s(after, cores) - cores_busy_s(before, cores)
    return busy / (elapsed_s * len(cores)) if elapsed_s > 0 and cores else 0.0


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


async def _cold_starts(ctx: RunContext, target: Target) -> float:
    if not isinstance(target, FaasNode):
        return 0.0
    return metric_sum(await target.metrics(ctx.session), "faas_cold_starts_total")


async def warm_up(ctx: RunContext, target: Target, spec: RequestSpec, concurrency: int) -> None:
    """Unmeasured load; on faas, repeated until a round starts no new environment."""
    for _ in range(_MAX_WARMUP_ROUNDS):
        before = await _cold_starts(ctx, target)
        with ctx.display.phase(f"warm-up {target.label} c{concurrency}", ctx.options.warmup_s):
            await run_closed(ctx.client, spec, concurrency, ctx.options.warmup_s)
        if await _cold_starts(ctx, target) == before:
            return


async def measure(
    ctx: RunContext,
    target: Target,
    spec: RequestSpec,
    case: str,
    *,
    concurrency: int = 1,
    rate: float | None = None,
) -> Measurement:
    """Warm up, then drive ``spec`` closed-loop at ``concurrency`` (or open-loop at ``rate``).

    The warm-up is always closed-loop at ``concurrency``.

    Failed requests are recorded in the result and in ``ctx`` problems, never raised.
    """
    duration_s = ctx.options.duration_s
    sut, gen = ctx.pinning.sut_cores, ctx.pinning.generator_cores
    await warm_up(ctx, target, spec, concurrency)
    stats = LiveStats()
    is_faas = isinstance(target, FaasNode)
    cpu_before = await asyncio.to_thread(target.cpu_s)
    busy_before = busy_s()
    node_before = target.node_cpu_s() if isinstance(target, FaasNode) else 0.0
    with ctx.display.phase(f"{target.label} {case}", duration_s, stats=stats):
        if rate is None:
            load = await run_closed(ctx.client, spec, concurrency, duration_s, stats=stats)
        else:
            load = await run_open(
                ctx.client, spec, rate, duration_s, drain_s=max(2.0, duration_s), stats=stats
            )
    busy_after = busy_s()
    cpu_after = await asyncio.to_thread(target.cpu_s)
    node_after = target.node_cpu_s() if isinstance(target, FaasNode) else 0.0
    measurement = Measurement(
        target=target.label,
        case=case,
        load=load,
        sut_cpu_s=cpu_after - cpu_before,
        node_cpu_s=node_after - node_before if is_faas else None,
        sut_cores=len(ctx.pinning.sut_cores),
        machine_busy_s=busy_after.get("cpu", 0.0) - busy_before.get("cpu", 0.0),
        sut_core_busy_fraction=_core_fraction(busy_before, busy_after, sut, load.elapsed_s),
        generator_core_busy_fraction=_core_fraction(busy_before, busy_after, gen, load.elapsed_s),
    )
    ctx.display.note(measurement.summary_line())
    if load.error_count:
        ctx.result.problems.append(
            f"{target.label} {case}: failed requests {load.errors}, e.g. {load.error_samples}"
        )
    return measurement
