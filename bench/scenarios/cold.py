"""``cold``: cold-start latency and where it goes, over hundreds of new environments.

Two kinds of cold start are sampled one at a time: the first invoke of a newly
created function on an otherwise idle node, and a new environment for a function
whose only environment is busy (held inside ``app.hold``, which reports over UDP
that it is running and waits for the go until the probe is answered). Each
sample's client-side latency is split with the node's ``X-Faas-Timings`` header
into node-side scheduling, process creation, runtime init, function init and the
first invoke; "outside node" is the rest (HTTP, the
node's request handling, the client). The spawn-per-request baseline, a fresh
interpreter for every request, is the naive runner's "cold start every time".
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.beacon import Beacon, Datagram
from bench.charts import Chart
from bench.clients import Response
from bench.context import RunContext
from bench.handlers import HELLO, HOLD
from bench.histogram import LatencyHistogram
from bench.loadgen import RequestSpec, send_once
from bench.measure import measure
from bench.report import Table
from bench.scenarios.common import start_targets
from bench.services import FUNCTIONS_PATH, Baseline, FaasNode, create_function
from bench.tables import DASH, fmt_ms, fmt_ratio

TIMINGS_HEADER = "x-faas-timings"  # X-Faas-Timings; client headers are lower case
NODE_PARTS = ("schedule", "spawn", "runtime_init", "function_init", "invoke")
OUTSIDE = "outside node"
FIRST = "first invoke, idle node"
BUSY = "new environment, others busy"
_HOLD_MAX_S = 30.0
_SETTLE_TIMEOUT_S = 10.0


def parse_timings(header: str | None) -> dict[str, float]:
    """``"schedule=0.1;spawn=3.2"`` -> ``{"schedule": 0.1, "spawn": 3.2}``."""
    parts: dict[str, float] = {}
    for item in (header or "").split(";"):
        name, _, value = item.partition("=")
        if name and value:
            parts[name.strip()] = float(value)
    return parts


class ColdSamples:
    """Cold-start latencies and their parts, one histogram each, plus the raw samples."""

    __slots__ = ("parts", "raw", "total")

    def __init__(self) -> None:
        self.total = LatencyHistogram()
        self.parts = {name: LatencyHistogram() for name in (*NODE_PARTS, OUTSIDE)}
        self.raw: list[dict[str, float]] = []

    def add(self, latency_ms: float, timings: dict[str, float]) -> None:
        self.total.record_ms(latency_ms)
        for name in NODE_PARTS:
            self.parts[name].record_ms(timings.get(name, 0.0))
        outside = max(0.0, latency_ms - sum(timings.get(name, 0.0) for name in NODE_PARTS))
        self.parts[OUTSIDE].record_ms(outside)
        self.raw.append(
            {"total_ms": round(latency_ms, 3), **{k: round(v, 3) for k, v in timings.items()}}
        )

    def summary(self) -> dict[str, Any]:  # Any: JSON values
        return {
            "latency_ms": self.total.summary().as_dict(),
            "parts_ms": {name: h.summary().as_dict() for name, h in self.parts.items()},
            "samples": self.raw,
        }


def _check_cold(ctx: RunContext, what: str, response: Response) -> dict[str, float] | None:
    timings = parse_timings(response.headers.get(TIMINGS_HEADER))
    if response.status != 200:
        ctx.result.problems.append(f"{what}: HTTP {response.status} {response.body[:200]!r}")
        return None
    if "spawn" not in timings:
        ctx.result.problems.append(f"{what}: expected a cold start, got {timings}")
        return None
    return timings


async def _delete_and_settle(ctx: RunContext, node: FaasNode, name: str) -> None:
    """Delete ``name`` and wait until its environments are gone, so that the node is idle
    (and its memory budget free) for the next cold start."""
    async with ctx.session.delete(f"{node.url}{FUNCTIONS_PATH}/{name}") as response:
        await response.read()
    deadline = time.monotonic() + _SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        async with ctx.session.get(node.url + "/faas/v1/pool") as response:
            books = json.loads(await response.read())
        if not any(env["function"] == name for env in books["environments"]):
            return
        await asyncio.sleep(0.01)
    ctx.result.problems.append(
        f"{name}: environments still live {_SETTLE_TIMEOUT_S} s after delete"
    )


async def _first_invokes(ctx: RunContext, node: FaasNode, samples: ColdSamples) -> None:
    with ctx.display.phase(FIRST, ctx.options.cold_starts, is_timed=False):
        for index in range(ctx.options.cold_starts):
            name = f"cold-{index}"
            await create_function(ctx.session, node, name, HELLO, memory_mb=ctx.options.memory_mb)
            response = await send_once(ctx.client, RequestSpec(node.invoke_url(name)))
            timings = _check_cold(ctx, f"{name} first invoke", response)
            if timings is not None:
                samples.add(response.latency_ms, timings)
            await _delete_and_settle(ctx, node, name)
            ctx.display.advance()


def _hold_body(beacon: Beacon, tag: str, max_s: float) -> bytes:
    return json.dumps({"beacon": list(beacon.address), "tag": tag, "max_s": max_s}).encode()


async def _busy_sample(ctx: RunContext, node: FaasNode, beacon: Beacon, index: int) -> Response:
    """Hold the function's only environment, then time a second invoke (a new environment)."""
    name = f"cold-busy-{index}"
    await create_function(ctx.session, node, name, HOLD, memory_mb=ctx.options.memory_mb)
    url = node.invoke_url(name)
    body = _hold_body(beacon, name, _HOLD_MAX_S)
    holder = asyncio.create_task(send_once(ctx.client, RequestSpec(url, body)))
    held: Datagram | None = None
    try:
        held = await beacon.wait_for(f"held {name}", _HOLD_MAX_S)
        probe = _hold_body(beacon, f"{name}-probe", 0)
        return await send_once(ctx.client, RequestSpec(url, probe))
    finally:
        if held is not None:
            beacon.reply(held.sender, "go")
        await holder


async def _busy_invokes(ctx: RunContext, node: FaasNode, samples: ColdSamples) -> None:
    beacon = Beacon()
    await beacon.start()
    try:
        with ctx.display.phase(BUSY, ctx.options.cold_busy_starts, is_timed=False):
            for index in range(ctx.options.cold_busy_starts):
                response = await _busy_sample(ctx, node, beacon, index)
                timings = _check_cold(ctx, f"cold-busy-{index} second invoke", response)
                if timings is not None:
                    samples.add(response.latency_ms, timings)
                await _delete_and_settle(ctx, node, f"cold-busy-{index}")
                ctx.display.advance()
    finally:
        await beacon.stop()


async def run(ctx: RunContext) -> None:
    node, baselines = await start_targets(ctx, [Baseline.SPAWN])
    await create_function(ctx.session, node, "cold-prime", HELLO, memory_mb=ctx.options.memory_mb)
    started = time.perf_counter()
    prime = await send_once(ctx.client, RequestSpec(node.invoke_url("cold-prime")))
    prime_ms = (time.perf_counter() - started) * 1000
    first, busy = ColdSamples(), ColdSamples()
    await _first_invokes(ctx, node, first)
    await _busy_invokes(ctx, node, busy)
    spawn_p50 = 0.0
    for server in baselines:
        await create_function(ctx.session, server, "cold-hello", HELLO)
        spec = RequestSpec(server.invoke_url("cold-hello"))
        measurement = await measure(ctx, server, spec, "c1", concurrency=1)
        ctx.result.runs.append(measurement.record())
        spawn_p50 = measurement.load.histogram.summary().p50_ms
    prime_timings = parse_timings(prime.headers.get(TIMINGS_HEADER))
    ctx.result.runs.append(
        {
            "case": "first cold start of this node",
            "latency_ms": prime_ms,
            "timings": prime_timings,
        }
    )
    ctx.result.runs.append({"case": FIRST, **first.summary()})
    ctx.result.runs.append({"case": BUSY, **busy.summary()})
    _report(ctx, first, busy, spawn_p50, prime_ms)


def _report(
    ctx: RunContext, first: ColdSamples, busy: ColdSamples, spawn_p50: float, prime_ms: float
) -> None:
    result = ctx.result
    rows = []
    for label, samples in ((FIRST, first), (BUSY, busy)):
        p = samples.total.summary()
        rows.append(
            (
                label,
                str(p.count),
                fmt_ms(p.p50_ms),
                fmt_ms(p.p90_ms),
                fmt_ms(p.p99_ms),
                fmt_ms(p.max_ms),
                fmt_ratio(p.p50_ms, spawn_p50) if spawn_p50 else DASH,
            )
        )
    if spawn_p50:
        rows.append(
            (
                "spawn baseline (fresh interpreter per request)",
                DASH,
                fmt_ms(spawn_p50),
                DASH,
                DASH,
                DASH,
                "1.00",
            )
        )
    rows.append(
        (
            "first cold start of this node (its bytecode cache may be empty)",
            "1",
            fmt_ms(prime_ms),
            DASH,
            DASH,
            DASH,
            DASH,
        )
    )
    result.tables.append(
        Table(
            "cold-start latency, client side (ms)",
            ("cold start", "n", "p50", "p90", "p99", "max", "p50 faas/spawn"),
            tuple(rows),
        )
    )
    split_rows = []
    first_p50 = first.total.summary().p50_ms
    for name in (*NODE_PARTS, OUTSIDE):
        fp, bp = first.parts[name].summary(), busy.parts[name].summary()
        share = f"{fp.p50_ms / first_p50:.0%}" if first_p50 else DASH
        split_rows.append(
            (
                name,
                fmt_ms(fp.p50_ms),
                fmt_ms(fp.p99_ms),
                share,
                fmt_ms(bp.p50_ms),
                fmt_ms(bp.p99_ms),
            )
        )
    result.tables.append(
        Table(
            "where a cold start goes (ms, from X-Faas-Timings)",
            ("part", "first p50", "first p99", "share of first p50", "busy p50", "busy p99"),
            tuple(split_rows),
            "Percentiles of parts do not add up to the percentile of the total.",
        )
    )
    p_first, p_busy = first.total.summary(), busy.total.summary()
    result.headline.update(
        {
            "cold_starts": p_first.count + p_busy.count,
            "first_p50_ms": round(p_first.p50_ms, 2),
            "first_p99_ms": round(p_first.p99_ms, 2),
            "busy_p50_ms": round(p_busy.p50_ms, 2),
            "busy_p99_ms": round(p_busy.p99_ms, 2),
            "split_p50_ms": {n: round(h.summary().p50_ms, 2) for n, h in first.parts.items()},
            "spawn_baseline_p50_ms": round(spawn_p50, 2),
            "fresh_node_first_ms": round(prime_ms, 1),
        }
    )
    names = (*NODE_PARTS, OUTSIDE)
    series = {
        FIRST: tuple(first.parts[n].summary().p50_ms for n in names),
        BUSY: tuple(busy.parts[n].summary().p50_ms for n in names),
    }
    result.charts.append(
        Chart("split", "cold start split (p50)", "bar", "part", "ms", names, series)
    )
