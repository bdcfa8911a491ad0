"""``memory``: resident and proportional set size of idle warm environments, for 1, 10, 50 of them.

For each count K, K clients drive a fresh function (``app.sleep``) until it has K
environments, stop, let them idle, and read every environment's RSS, PSS and USS
from /proc/<pid>/smaps_rollup. PSS splits shared pages (the interpreter binary,
shared libraries) among the processes mapping them, so PSS times K is what K
environments really cost; the node's own RSS growth per environment is shown too.
The warm-IPC baseline's worker (a bare interpreter that imported the same handler
and served the same invokes) is the floor for one isolated process.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from typing import Any

from bench.charts import Chart
from bench.clients import Response
from bench.context import RunContext
from bench.handlers import HELLO, SLEEP
from bench.loadgen import LiveStats, RequestSpec, run_closed
from bench.procinfo import MemoryReading, child_pids, environment_pids, read_memory
from bench.report import Table
from bench.scenarios.common import start_targets
from bench.services import Baseline, FaasNode, Server, create_function
from bench.tables import DASH, fmt_ratio

_FILL_TIMEOUT_S = 120.0
_SETTLE_S = 1.0
_STEP = 4  # new environments per step
_HOLD_MS = 1000  # handler time while filling


def _mb(kb: float) -> str:
    return f"{kb / 1024:.1f}"


async def _fill(ctx: RunContext, node: FaasNode, name: str, count: int) -> list[int]:
    """Give ``name`` ``count`` environments, ``_STEP`` new ones at a time; return their pids.

    Each step runs one more batch of clients than the last (every client holds an
    environment, as the handler sleeps) until their answers show that many distinct
    environments. Stepping keeps concurrent cold starts few, and the long handler
    keeps the warm environments' traffic light: on one core, 50 clients of a short
    handler keep the node so busy that new environments' inits starve into the
    init timeout.
    """
    spec = RequestSpec(node.invoke_url(name), json.dumps({"sleep_ms": _HOLD_MS}).encode())
    seen: set[int] = set()
    stats = LiveStats()
    with ctx.display.phase(f"start {count} environments", float(count), is_timed=False):
        shown = 0
        for clients in sorted({min(step, count) for step in range(_STEP, count + _STEP, _STEP)}):
            stop = asyncio.Event()

            def hook(response: Response, target: int = clients, done: asyncio.Event = stop) -> None:
                seen.add(int(json.loads(response.body)["pid"]))
                if len(seen) >= target:
                    done.set()

            load = await run_closed(
                ctx.client, spec, clients, _FILL_TIMEOUT_S, stop=stop, stats=stats, hook=hook
            )
            ctx.display.advance(min(len(seen), count) - shown)
            shown = min(len(seen), count)
            if load.error_count:
                ctx.result.problems.append(
                    f"{count} environments: failed {load.errors}, e.g. {load.error_samples}"
                )
                break
    await asyncio.sleep(_SETTLE_S)
    return await asyncio.to_thread(environment_pids, node.pid, name)


def _readings(pids: list[int]) -> list[MemoryReading]:
    return [reading for pid in pids if (reading := read_memory(pid)) is not None]


async def _baseline_worker(ctx: RunContext, server: Server) -> MemoryReading | None:
    """The warm-IPC worker's memory after it served the same handler."""
    await create_function(ctx.session, server, "memory-hello", HELLO)
    await run_closed(ctx.client, RequestSpec(server.invoke_url("memory-hello")), 1, 0.3)
    children = await asyncio.to_thread(child_pids, server.pid)
    readings = await asyncio.to_thread(_readings, children)
    return readings[0] if readings else None


async def run(ctx: RunContext) -> None:
    node, baselines = await start_targets(ctx, [Baseline.WARM_IPC])
    worker = await _baseline_worker(ctx, baselines[0]) if baselines else None
    rows = []
    for count in ctx.options.env_counts:
        name = f"memory-{count}"
        await create_function(ctx.session, node, name, SLEEP, memory_mb=128)
        node_before = await asyncio.to_thread(read_memory, node.pid)
        pids = await _fill(ctx, node, name, count)
        readings = await asyncio.to_thread(_readings, pids)
        node_after = await asyncio.to_thread(read_memory, node.pid)
        if len(readings) != count:
            ctx.result.problems.append(f"asked for {count} environments, found {len(readings)}")
        if not readings:
            continue
        node_delta = (node_after.rss_kb - node_before.rss_kb) if node_after and node_before else 0
        record = _record(count, readings, node_delta, worker)
        ctx.result.runs.append(record)
        rows.append(record)
    _report(ctx, rows, worker)


def _record(
    count: int, readings: list[MemoryReading], node_delta_kb: int, worker: MemoryReading | None
) -> dict[str, Any]:  # Any: JSON values
    return {
        "environments": count,
        "found": len(readings),
        "rss_kb_mean": statistics.fmean(r.rss_kb for r in readings),
        "pss_kb_mean": statistics.fmean(r.pss_kb for r in readings),
        "uss_kb_mean": statistics.fmean(r.uss_kb for r in readings),
        "pss_kb_total": sum(r.pss_kb for r in readings),
        "node_rss_growth_kb_per_env": node_delta_kb / max(1, len(readings)),
        "per_process": [r.as_dict() for r in readings],
        "baseline_worker": worker.as_dict() if worker else None,
    }


def _report(ctx: RunContext, rows: list[dict[str, Any]], worker: MemoryReading | None) -> None:
    table_rows = []
    for row in rows:
        table_rows.append(
            (
                str(row["environments"]),
                str(row["found"]),
                _mb(row["rss_kb_mean"]),
                _mb(row["pss_kb_mean"]),
                _mb(row["uss_kb_mean"]),
                _mb(row["pss_kb_total"]),
                _mb(row["node_rss_growth_kb_per_env"]),
                fmt_ratio(row["pss_kb_mean"], worker.pss_kb) if worker else DASH,
                fmt_ratio(row["rss_kb_mean"], worker.rss_kb) if worker else DASH,
            )
        )
    if worker is not None:
        table_rows.append(
            (
                "warm-IPC worker (baseline)",
                "1",
                _mb(worker.rss_kb),
                _mb(worker.pss_kb),
                _mb(worker.uss_kb),
                _mb(worker.pss_kb),
                DASH,
                "1.00",
                "1.00",
            )
        )
    ctx.result.tables.append(
        Table(
            "idle warm environments (MB per environment unless noted)",
            (
                "environments",
                "found",
                "RSS",
                "PSS",
                "USS",
                "PSS total",
                "node RSS growth/env",
                "PSS faas/worker",
                "RSS faas/worker",
            ),
            tuple(table_rows),
            "USS = private pages only; PSS total = what all of them cost together.",
        )
    )
    for row in rows:
        ctx.result.headline[f"envs_{row['environments']}"] = {
            "rss_mb": round(row["rss_kb_mean"] / 1024, 2),
            "pss_mb": round(row["pss_kb_mean"] / 1024, 2),
            "uss_mb": round(row["uss_kb_mean"] / 1024, 2),
        }
    if worker is not None:
        ctx.result.headline["baseline_worker"] = {
            "rss_mb": round(worker.rss_kb / 1024, 2),
            "pss_mb": round(worker.pss_kb / 1024, 2),
        }
    counts = tuple(str(row["environments"]) for row in rows)
    series = {
        "RSS": tuple(row["rss_kb_mean"] / 1024 for row in rows),
        "PSS": tuple(row["pss_kb_mean"] / 1024 for row in rows),
        "USS": tuple(row["uss_kb_mean"] / 1024 for row in rows),
    }
    ctx.result.charts.append(
        Chart("per-env", "memory per idle environment", "bar", "environments", "MB", counts, series)
    )
