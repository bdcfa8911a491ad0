"""Tables of measurements and of faas/baseline ratios, formatted the same way in every scenario.

How to read a ratio: ``faas/in-process`` throughput is the share of a bare Python
HTTP server's throughput faas keeps (1.0 = no cost); ``faas - in-process`` p50 is
the latency faas adds to every request; ``faas/warm-IPC`` compares with the floor
of any design that runs handlers in a separate process; ``faas/spawn`` with
starting an interpreter per request (above 1.0 means faas does better).
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.measure import Measurement
from bench.report import Table
from bench.services import FAAS, Baseline

DASH = "—"


def fmt_ms(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def fmt_ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator > 0 else DASH


def fmt_delta_ms(value: float, baseline: float) -> str:
    return f"{value - baseline:+.2f}"


def fmt_percent(value: float) -> str:
    return f"{value * 100:.0f}%"


LOAD_COLUMNS = (
    "load", "target", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "failed",
    "SUT CPU ms/inv", "node CPU ms/inv", "SUT CPU", "gen CPU", "other CPU", "bound",
)  # fmt: skip


def _load_row(m: Measurement) -> tuple[str, ...]:
    p = m.load.histogram.summary()
    node_ms = m.node_cpu_ms_per_invoke
    return (
        m.case, m.target, fmt_rate(m.load.rps), fmt_ms(p.p50_ms), fmt_ms(p.p90_ms),
        fmt_ms(p.p99_ms), fmt_ms(p.p999_ms), fmt_ms(p.max_ms),
        str(m.load.error_count + m.load.unfinished), f"{m.cpu_ms_per_invoke:.2f}",
        DASH if node_ms is None else f"{node_ms:.2f}", fmt_percent(m.sut_cpu_fraction),
        fmt_percent(m.load.generator_cpu_fraction), f"{m.other_cpu_cores:.2f}", m.bound,
    )  # fmt: skip


def load_table(title: str, measurements: Iterable[Measurement], note: str = "") -> Table:
    """Every run in full: throughput, latency percentiles, CPU, and who was the bottleneck.

    "other CPU" is the cores kept busy by processes outside the benchmark (noise).
    """
    return Table(title, LOAD_COLUMNS, tuple(_load_row(m) for m in measurements), note)


def by_case(measurements: Iterable[Measurement]) -> dict[str, dict[str, Measurement]]:
    """Measurements grouped by case, then by target label, in the order they were taken."""
    grouped: dict[str, dict[str, Measurement]] = {}
    for m in measurements:
        grouped.setdefault(m.case, {})[m.target] = m
    return grouped


def ratio_table(title: str, measurements: Iterable[Measurement], note: str = "") -> Table:
    """faas beside each baseline, per case: throughput ratios and p50 differences."""
    columns = (
        "load",
        "faas req/s",
        "in-process req/s",
        "faas/in-process",
        "faas/warm-IPC",
        "faas/spawn",
        "faas p50 ms",
        "p50 - in-process ms",
        "p50 - warm-IPC ms",
        "p99 faas/in-process",
    )
    rows = []
    for case, targets in by_case(measurements).items():
        faas = targets.get(FAAS)
        if faas is None:
            continue
        fp = faas.load.histogram.summary()
        cells = [case, fmt_rate(faas.load.rps)]
        inproc = targets.get(Baseline.IN_PROCESS.value)
        ipc = targets.get(Baseline.WARM_IPC.value)
        spawn = targets.get(Baseline.SPAWN.value)
        cells.append(fmt_rate(inproc.load.rps) if inproc else DASH)
        for base in (inproc, ipc, spawn):
            cells.append(fmt_ratio(faas.load.rps, base.load.rps) if base else DASH)
        cells.append(fmt_ms(fp.p50_ms))
        for base in (inproc, ipc):
            base_p50 = base.load.histogram.summary().p50_ms if base else 0.0
            cells.append(fmt_delta_ms(fp.p50_ms, base_p50) if base else DASH)
        if inproc:
            cells.append(fmt_ratio(fp.p99_ms, inproc.load.histogram.summary().p99_ms))
        else:
            cells.append(DASH)
        rows.append(tuple(cells))
    return Table(title, columns, tuple(rows), note)
