"""``payload``: an echo handler at several request and response body sizes (1 KB .. 6 MB).

Each size is sent (and echoed back) closed-loop by faas and every baseline; the
table adds the payload throughput in MB/s (request plus response bytes).
"""

from __future__ import annotations

from bench.charts import Chart
from bench.context import RunContext
from bench.handlers import ECHO, format_size, sized_payload
from bench.loadgen import RequestSpec
from bench.measure import Measurement, measure
from bench.report import Table
from bench.scenarios.common import create_everywhere, start_targets
from bench.services import FAAS, Baseline, Target
from bench.tables import DASH, by_case, fmt_ms, fmt_ratio, load_table, ratio_table

FUNCTION = "payload-echo"


async def run(ctx: RunContext) -> None:
    options = ctx.options
    node, baselines = await start_targets(ctx)
    targets: list[Target] = [node, *baselines]
    await create_everywhere(ctx, targets, FUNCTION, ECHO, options.memory_mb)
    measurements: list[Measurement] = []
    sizes: dict[str, int] = {}
    for size in options.payload_sizes:
        body = sized_payload(size)
        for concurrency in options.payload_concurrency:
            case = f"{format_size(size)} c{concurrency}"
            sizes[case] = len(body)
            for target in targets:
                spec = RequestSpec(target.invoke_url(FUNCTION), body=body)
                measurements.append(await measure(ctx, target, spec, case, concurrency=concurrency))
    result = ctx.result
    result.runs += [{**m.record(), "payload_bytes": sizes[m.case]} for m in measurements]
    result.tables.append(_bandwidth_table(measurements, sizes))
    result.tables.append(ratio_table("faas beside the baselines", measurements))
    result.tables.append(load_table("every run", measurements))
    for case, by_target in by_case(measurements).items():
        if FAAS in by_target:
            p = by_target[FAAS].load.histogram.summary()
            result.headline[case] = {
                "faas_p50_ms": round(p.p50_ms, 3),
                "faas_p99_ms": round(p.p99_ms, 3),
            }
            inproc = by_target.get(Baseline.IN_PROCESS.value)
            if inproc is not None:
                base = inproc.load.histogram.summary().p50_ms
                result.headline[case]["p50_overhead_ms"] = round(p.p50_ms - base, 3)
    _chart(ctx, measurements)


def _bandwidth_table(measurements: list[Measurement], sizes: dict[str, int]) -> Table:
    labels = list(dict.fromkeys(m.target for m in measurements))
    columns = (
        "load",
        *(f"{label} MB/s" for label in labels),
        *(f"faas/{label}" for label in labels if label != FAAS),
        "faas p50 ms",
    )
    rows = []
    for case, by_target in by_case(measurements).items():
        moved = {label: m.load.rps * sizes[case] * 2 / 1e6 for label, m in by_target.items()}
        faas_mbs = moved.get(FAAS, 0.0)
        cells = [case, *(f"{moved[label]:.1f}" if label in moved else DASH for label in labels)]
        cells += [
            fmt_ratio(faas_mbs, moved[label]) if label in moved else DASH
            for label in labels
            if label != FAAS
        ]
        faas = by_target.get(FAAS)
        cells.append(fmt_ms(faas.load.histogram.summary().p50_ms) if faas else DASH)
        rows.append(tuple(cells))
    return Table("payload bandwidth (request + response bytes per second)", columns, tuple(rows))


def _chart(ctx: RunContext, measurements: list[Measurement]) -> None:
    cases = by_case(measurements)
    names = tuple(cases)
    labels = list(dict.fromkeys(m.target for m in measurements))
    p50 = {
        label: tuple(
            cases[case][label].load.histogram.summary().p50_ms if label in cases[case] else 0.0
            for case in names
        )
        for label in labels
    }
    ctx.result.charts.append(
        Chart(
            "p50",
            "p50 latency by payload size",
            "bar",
            "payload",
            "ms (log)",
            names,
            p50,
            log_y=True,
        )
    )
