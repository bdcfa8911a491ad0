"""``cpu-share``: how many cores a CPU-bound handler actually gets at each MemorySize.

Lambda gives CPU in proportion to memory (1769 MB = one vCPU). The handler
(``app.burn``) hashes in as many threads as the machine has cores (sha256 releases
the GIL) for ``cpu_seconds`` and reports its own CPU time over wall time: the
cores it obtained. Here the node and the baseline are NOT pinned to one core, or
no handler could ever get more than one. The note under the table says whether
the sizes got different shares (a CPU limit is enforced) or all about the same.
"""

from __future__ import annotations

import json
import os

from bench.charts import Chart
from bench.context import RunContext
from bench.handlers import BURN
from bench.loadgen import RequestSpec, send_once
from bench.report import Table
from bench.scenarios.common import median, start_targets
from bench.services import Baseline, Target, create_function
from bench.tables import DASH

LAMBDA_MB_PER_VCPU = 1769


async def _cores(ctx: RunContext, target: Target, name: str, threads: int) -> list[float]:
    """Cores obtained by each measured invoke (after one warm-up invoke)."""
    options = ctx.options
    url = target.invoke_url(name)
    warm = json.dumps({"seconds": 0.05, "threads": threads}).encode()
    await send_once(ctx.client, RequestSpec(url, warm))
    body = json.dumps({"seconds": options.cpu_seconds, "threads": threads}).encode()
    cores: list[float] = []
    for _ in range(options.cpu_repeats):
        response = await send_once(ctx.client, RequestSpec(url, body))
        if response.status != 200:
            ctx.result.problems.append(f"{target.label} {name}: HTTP {response.status}")
            continue
        answer = json.loads(response.body)
        cores.append(float(answer["cpu_s"]) / max(1e-9, float(answer["wall_s"])))
        ctx.display.advance()
    return cores


async def run(ctx: RunContext) -> None:
    options = ctx.options
    all_cores = tuple(sorted({*ctx.pinning.generator_cores, *ctx.pinning.sut_cores}))
    threads = len(all_cores) or (os.cpu_count() or 1)
    node, baselines = await start_targets(ctx, [Baseline.WARM_IPC], cores=all_cores)
    total = len(options.cpu_memory_mb) * options.cpu_repeats + options.cpu_repeats * len(baselines)
    faas_cores: dict[int, list[float]] = {}
    base_cores: list[float] = []
    with ctx.display.phase("CPU-bound invokes", float(total), is_timed=False):
        for memory_mb in options.cpu_memory_mb:
            name = f"cpu-{memory_mb}"
            await create_function(ctx.session, node, name, BURN, memory_mb=memory_mb)
            faas_cores[memory_mb] = await _cores(ctx, node, name, threads)
        for server in baselines:
            await create_function(ctx.session, server, "cpu-burn", BURN)
            base_cores = await _cores(ctx, server, "cpu-burn", threads)
    _report(ctx, threads, faas_cores, base_cores)


def _verdict(faas_cores: dict[int, list[float]], base: float) -> str:
    """Whether the sizes got different shares: a CPU limit in force, or none yet."""
    medians = [median(samples) for samples in faas_cores.values()]
    if len(medians) < 2 or not base:
        return "Too few sizes to tell whether a CPU limit is enforced."
    if min(medians) < 0.75 * max(medians):
        return "The sizes got different shares: faas limits CPU in proportion to MemorySize."
    return (
        "All sizes got about the same: faas enforces no CPU limit here "
        "(each gets what the machine has)."
    )


def _report(
    ctx: RunContext, threads: int, faas_cores: dict[int, list[float]], base_cores: list[float]
) -> None:
    base = median(base_cores)
    rows = []
    for memory_mb, samples in faas_cores.items():
        expected = min(float(threads), memory_mb / LAMBDA_MB_PER_VCPU)
        got = median(samples)
        rows.append(
            (
                str(memory_mb),
                f"{expected:.2f}",
                f"{got:.2f}",
                f"{base:.2f}" if base_cores else DASH,
                f"{got / base:.2f}" if base else DASH,
                f"{got / expected:.2f}",
            )
        )
        ctx.result.runs.append(
            {
                "memory_mb": memory_mb,
                "threads": threads,
                "cores": samples,
                "expected_cores": expected,
            }
        )
        ctx.result.headline[f"cores_{memory_mb}mb"] = round(got, 2)
    if base_cores:
        ctx.result.runs.append({"target": Baseline.WARM_IPC.value, "cores": base_cores})
        ctx.result.headline["baseline_cores"] = round(base, 2)
    ctx.result.tables.append(
        Table(
            f"cores obtained by a {threads}-thread CPU-bound handler",
            (
                "MemorySize MB",
                "Lambda share (cores)",
                "faas cores",
                "unlimited process cores",
                "faas/unlimited",
                "faas/Lambda share",
            ),
            tuple(rows),
            _verdict(faas_cores, base),
        )
    )
    ctx.result.notes.append(
        "cpu-share runs the node and the baseline on all cores of the machine. "
        + _verdict(faas_cores, base)
    )
    sizes = tuple(str(mb) for mb in faas_cores)
    series = {
        "Lambda share": tuple(min(float(threads), mb / LAMBDA_MB_PER_VCPU) for mb in faas_cores),
        "faas": tuple(median(v) for v in faas_cores.values()),
    }
    ctx.result.charts.append(
        Chart(
            "cores",
            "cores obtained by MemorySize",
            "bar",
            "MemorySize (MB)",
            "cores",
            sizes,
            series,
        )
    )
