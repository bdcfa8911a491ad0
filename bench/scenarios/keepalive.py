"""``keepalive``: a trace replayed against the fixed and the adaptive keep-alive.

The trace is synthetic and seeded, in the shape "Serverless in the Wild" (ATC '20)
found in Azure Functions: timer-like functions firing every few minutes with a
little jitter, rare ones, and ones with random (Poisson) arrivals. Time is scaled:
one trace minute lasts ``--trace-minute-s`` seconds (the adaptive policy's histogram
bin), so two hours of trace replay in half a minute per node.

The same trace runs against two faas nodes, one after the other: a fixed keep-alive
of 10 trace minutes (Lambda-like keep-warm) and the adaptive hybrid histogram policy.
For each it reports the share of invocations that were cold (their ``X-Faas-Timings``
include a ``spawn``) and the idle memory-time (MemorySize of every idle environment,
integrated over the run from ``/faas/v1/pool``), in MB-minutes of trace time: what
keeping environments warm costs. The fixed policy is the baseline of the ratios.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

from bench.context import RunContext
from bench.handlers import HELLO
from bench.loadgen import RequestSpec, send_once
from bench.report import Table
from bench.services import FaasNode, create_function
from bench.tables import fmt_ratio

_MEMORY_MB = 128
_FIXED_KEEP_ALIVE_MIN = 10.0
_HISTOGRAM_BINS = 240  # four hours of trace minutes, as in the paper
_SAMPLE_PER_MINUTE = 5  # pool samples per trace minute


@dataclass(frozen=True, slots=True)
class TracedFunction:
    """One function of the trace and how its invocations arrive (in trace minutes)."""

    name: str
    pattern: str  # "every N", "poisson", shown in the table
    arrivals: tuple[float, ...]


def synthetic_trace(minutes: float, seed: int) -> list[TracedFunction]:
    """Timer-like, rare and random functions over ``minutes`` trace minutes."""
    rng = random.Random(seed)

    def periodic(period: float, jitter: float) -> tuple[float, ...]:
        start = rng.uniform(0, period)
        count = int((minutes - start) // period) + 1
        times = (start + i * period + rng.uniform(-jitter, jitter) for i in range(count))
        return tuple(sorted(t for t in times if 0 <= t < minutes))

    def poisson(mean_gap: float) -> tuple[float, ...]:
        times, now = [], rng.expovariate(1 / mean_gap)
        while now < minutes:
            times.append(now)
            now += rng.expovariate(1 / mean_gap)
        return tuple(times)

    return [
        TracedFunction("timer-5min", "every 5 min", periodic(5.0, 0.2)),
        TracedFunction("timer-15min", "every 15 min", periodic(15.0, 0.3)),
        TracedFunction("timer-30min", "every 30 min", periodic(30.0, 0.5)),
        TracedFunction("random-4min", "Poisson, mean 4 min", poisson(4.0)),
        TracedFunction("random-20min", "Poisson, mean 20 min", poisson(20.0)),
    ]


@dataclass(slots=True)
class _Replay:
    cold: dict[str, int]
    invokes: dict[str, int]
    cold_at: dict[str, list[int]]
    failures: list[str]
    idle_mb_s: dict[str, float]


async def _sample_idle(node: FaasNode, ctx: RunContext, replay: _Replay, stop: asyncio.Event,
                       period_s: float) -> None:  # fmt: skip
    last = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(period_s)
        now = time.monotonic()
        async with ctx.session.get(node.url + "/faas/v1/pool") as response:
            books = json.loads(await response.read())
        for env in books["environments"]:
            if env["place"] in ("idle", "provisioning"):
                name = str(env["function"])
                replay.idle_mb_s[name] = replay.idle_mb_s.get(name, 0.0) + (
                    float(env["memory_mb"]) * (now - last)
                )
        last = now


async def _replay(ctx: RunContext, node: FaasNode, trace: list[TracedFunction],
                  minute_s: float, label: str) -> _Replay:  # fmt: skip
    replay = _Replay({}, {}, {}, [], {})
    for function in trace:
        await create_function(ctx.session, node, function.name, HELLO, memory_mb=_MEMORY_MB)
    start = time.monotonic() + 0.5
    stop = asyncio.Event()
    sampler = asyncio.create_task(
        _sample_idle(node, ctx, replay, stop, minute_s / _SAMPLE_PER_MINUTE)
    )

    async def play(function: TracedFunction) -> None:
        spec = RequestSpec(node.invoke_url(function.name))
        for arrival in function.arrivals:
            await asyncio.sleep(max(0.0, start + arrival * minute_s - time.monotonic()))
            response = await send_once(ctx.client, spec)
            replay.invokes[function.name] = replay.invokes.get(function.name, 0) + 1
            if response.status != 200:
                replay.failures.append(f"{function.name}: HTTP {response.status}")
                continue
            if "spawn=" in response.headers.get("x-faas-timings", ""):
                replay.cold[function.name] = replay.cold.get(function.name, 0) + 1
                replay.cold_at.setdefault(function.name, []).append(
                    replay.invokes[function.name] - 1
                )

    total = max(max(f.arrivals, default=0.0) for f in trace)
    with ctx.display.phase(f"replay ({label})", total * minute_s + 0.5):
        await asyncio.gather(*(play(function) for function in trace))
    stop.set()
    await sampler
    return replay


async def run(ctx: RunContext) -> None:
    options = ctx.options
    minute_s = options.trace_minute_s
    trace = synthetic_trace(options.trace_minutes, seed=20)
    common = {"memory-budget-mb": "8192", "account-concurrency": "1000"}
    fixed_node = await ctx.services.node(
        {**common, "idle-timeout-s": f"{_FIXED_KEEP_ALIVE_MIN * minute_s:g}"}
    )
    fixed = await _replay(ctx, fixed_node, trace, minute_s, "fixed keep-alive")
    adaptive_node = await ctx.services.node(
        {**common, "idle-timeout-s": f"{_FIXED_KEEP_ALIVE_MIN * minute_s:g}",
         "keep-alive-policy": "adaptive", "keep-alive-bin-s": f"{minute_s:g}",
         "keep-alive-bins": str(_HISTOGRAM_BINS)}
    )  # fmt: skip
    adaptive = await _replay(ctx, adaptive_node, trace, minute_s, "adaptive keep-alive")
    for replay, label in ((fixed, "fixed"), (adaptive, "adaptive")):
        if replay.failures:
            ctx.result.problems.append(f"{label}: {len(replay.failures)} failed, e.g. "
                                       f"{replay.failures[:3]}")  # fmt: skip
    _report(ctx, trace, fixed, adaptive, minute_s)


def _mb_min(mb_s: float, minute_s: float) -> float:
    return mb_s / minute_s


def _report(ctx: RunContext, trace: list[TracedFunction], fixed: _Replay, adaptive: _Replay,
            minute_s: float) -> None:  # fmt: skip
    rows = []
    record: dict[str, Any] = {"trace_minute_s": minute_s, "functions": []}
    for function in trace:
        name = function.name
        invokes = len(function.arrivals)
        cold_fixed, cold_adaptive = fixed.cold.get(name, 0), adaptive.cold.get(name, 0)
        idle_fixed = _mb_min(fixed.idle_mb_s.get(name, 0.0), minute_s)
        idle_adaptive = _mb_min(adaptive.idle_mb_s.get(name, 0.0), minute_s)
        rows.append((
            name, function.pattern, str(invokes),
            f"{cold_fixed / invokes:.0%}", f"{cold_adaptive / invokes:.0%}",
            f"{idle_fixed:,.0f}", f"{idle_adaptive:,.0f}", fmt_ratio(idle_adaptive, idle_fixed),
        ))  # fmt: skip
        record["functions"].append({
            "name": name, "invokes": invokes, "cold_fixed": cold_fixed,
            "cold_adaptive": cold_adaptive, "cold_invokes_fixed": fixed.cold_at.get(name, []),
            "cold_invokes_adaptive": adaptive.cold_at.get(name, []),
            "arrivals": list(function.arrivals), "idle_mb_min_fixed": idle_fixed,
            "idle_mb_min_adaptive": idle_adaptive,
        })  # fmt: skip
    invokes = sum(len(f.arrivals) for f in trace)
    cold_fixed, cold_adaptive = sum(fixed.cold.values()), sum(adaptive.cold.values())
    idle_fixed = _mb_min(sum(fixed.idle_mb_s.values()), minute_s)
    idle_adaptive = _mb_min(sum(adaptive.idle_mb_s.values()), minute_s)
    rows.append((
        "all", "", str(invokes), f"{cold_fixed / invokes:.1%}", f"{cold_adaptive / invokes:.1%}",
        f"{idle_fixed:,.0f}", f"{idle_adaptive:,.0f}", fmt_ratio(idle_adaptive, idle_fixed),
    ))  # fmt: skip
    ctx.result.tables.append(Table(
        "trace replay: fixed 10-minute keep-alive vs adaptive (hybrid histogram)",
        ("function", "arrivals", "invokes", "cold (fixed)", "cold (adaptive)",
         "idle MB-min (fixed)", "idle MB-min (adaptive)", "idle adaptive/fixed"),
        tuple(rows),
        f"One trace minute = {minute_s:g} s of wall time; idle memory-time in MB x trace "
        "minutes, from /faas/v1/pool samples (idle and pre-warming environments).",
    ))  # fmt: skip
    ctx.result.runs.append(record)
    ctx.result.headline["cold_share"] = {
        "fixed": round(cold_fixed / invokes, 3), "adaptive": round(cold_adaptive / invokes, 3),
    }  # fmt: skip
    ctx.result.headline["idle_mb_min"] = {
        "fixed": round(idle_fixed), "adaptive": round(idle_adaptive),
        "adaptive_over_fixed": round(idle_adaptive / idle_fixed, 3) if idle_fixed else None,
    }  # fmt: skip
