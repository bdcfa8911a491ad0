"""``warm``: sync invokes of a hello handler, closed loop at each concurrency and open loop.

Measures req/s, latency percentiles and SUT CPU per invoke of faas and of every
baseline, interleaved case by case so that ratios compare runs taken minutes apart
at most. The in-process run at the highest concurrency also measures the load
generator's own ceiling: its requests per second divided by the share of its core
it used is what it could send with the core to itself.
"""

from __future__ import annotations

from bench.charts import Chart
from bench.context import RunContext
from bench.handlers import HELLO
from bench.loadgen import RequestSpec
from bench.measure import Measurement, measure
from bench.scenarios.common import create_everywhere, start_targets
from bench.services import FAAS, Baseline, Target
from bench.tables import by_case, load_table, ratio_table

FUNCTION = "warm-hello"


async def run(ctx: RunContext) -> None:
    options = ctx.options
    node, baselines = await start_targets(ctx)
    targets: list[Target] = [node, *baselines]
    await create_everywhere(ctx, targets, FUNCTION, HELLO, options.memory_mb)
    measurements: list[Measurement] = []
    for concurrency in options.concurrency:
        for target in targets:
            spec = RequestSpec(target.invoke_url(FUNCTION))
            measurements.append(
                await measure(ctx, target, spec, f"c{concurrency}", concurrency=concurrency)
            )
    open_case = f"open {options.rate:g}/s"
    warm_up_clients = min(8, max(options.concurrency))
    for target in targets:
        spec = RequestSpec(target.invoke_url(FUNCTION))
        measurements.append(
            await measure(
                ctx, target, spec, open_case, concurrency=warm_up_clients, rate=options.rate
            )
        )
    _report(ctx, measurements, open_case)


def generator_ceiling(measurements: list[Measurement]) -> dict[str, float] | None:
    """The generator's ceiling from its busiest run against the in-process baseline."""
    runs = [
        m for m in measurements if m.target == Baseline.IN_PROCESS.value and m.load.mode == "closed"
    ]
    if not runs:
        return None
    busiest = max(runs, key=lambda m: m.load.rps)
    share = busiest.load.generator_cpu_fraction
    return {
        "against_in_process_rps": round(busiest.load.rps, 1),
        "concurrency": busiest.load.concurrency,
        "generator_cpu_fraction": round(share, 3),
        "ceiling_rps": round(busiest.load.rps / share, 1) if share > 0 else 0.0,
        "in_process_cpu_fraction": round(busiest.sut_cpu_fraction, 3),
    }


def _report(ctx: RunContext, measurements: list[Measurement], open_case: str) -> None:
    result = ctx.result
    result.runs += [m.record() for m in measurements]
    result.tables.append(ratio_table("faas beside the baselines", measurements))
    result.tables.append(load_table("every run", measurements))
    ceiling = generator_ceiling(measurements)
    if ceiling is not None:
        result.headline["generator"] = ceiling
        result.notes.append(
            f"load generator ceiling ≈ {ceiling['ceiling_rps']:,.0f} req/s: it sent "
            f"{ceiling['against_in_process_rps']:,.0f} req/s to the in-process baseline at "
            f"c{ceiling['concurrency']} using {ceiling['generator_cpu_fraction']:.0%} of its core "
            f"(the in-process server used {ceiling['in_process_cpu_fraction']:.0%} of its own)"
        )
    cases = by_case(measurements)
    levels = [case for case in cases if case != open_case]
    if levels:
        first, last = cases[levels[0]], cases[levels[-1]]
        inproc = Baseline.IN_PROCESS.value
        headline = result.headline
        if FAAS in first and inproc in first:
            faas_p50 = first[FAAS].load.histogram.summary().p50_ms
            base_p50 = first[inproc].load.histogram.summary().p50_ms
            headline[f"p50_overhead_ms_{levels[0]}"] = round(faas_p50 - base_p50, 3)
            headline[f"faas_p50_ms_{levels[0]}"] = round(faas_p50, 3)
            headline[f"in_process_p50_ms_{levels[0]}"] = round(base_p50, 3)
        if FAAS in last and inproc in last:
            faas_rps, base_rps = last[FAAS].load.rps, last[inproc].load.rps
            headline[f"throughput_ratio_{levels[-1]}"] = round(faas_rps / base_rps, 3)
            headline[f"faas_rps_{levels[-1]}"] = round(faas_rps, 1)
            headline[f"in_process_rps_{levels[-1]}"] = round(base_rps, 1)
        if FAAS in first and first[FAAS].node_cpu_ms_per_invoke is not None:
            headline["faas_node_cpu_ms_per_invoke"] = round(
                first[FAAS].node_cpu_ms_per_invoke or 0.0, 3
            )
    _charts(ctx, measurements)


def _charts(ctx: RunContext, measurements: list[Measurement]) -> None:
    cases = by_case(measurements)
    labels = list(dict.fromkeys(m.target for m in measurements))
    names = tuple(cases)
    rps = {
        label: tuple(cases[case][label].load.rps if label in cases[case] else 0.0 for case in names)
        for label in labels
    }
    p50 = {
        label: tuple(
            cases[case][label].load.histogram.summary().p50_ms if label in cases[case] else 0.0
            for case in names
        )
        for label in labels
    }
    ctx.result.charts.append(Chart("rps", "warm throughput", "bar", "load", "req/s", names, rps))
    ctx.result.charts.append(
        Chart("p50", "warm p50 latency", "bar", "load", "ms (log)", names, p50, log_y=True)
    )
