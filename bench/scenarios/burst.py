"""``burst``: from zero to N environments at once; how long until all N are serving.

N clients start together, closed loop, on a function with no environment yet whose
handler (``app.sleep``) reports its pid and start time and holds the environment
for ``burst_sleep_ms``, so every client needs an environment of its own. "All
serving" is when the N-th distinct environment first started running the handler;
requests sent before that are the ramp, the rest (for ``duration_s``) are steady
state. The spawn-per-request baseline gets the same load (there every request is
a new process); the in-process and warm-IPC baselines run one handler at a time
by design and cannot hold N concurrent invocations, so they are not in this table.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from bench.charts import Chart
from bench.clients import Response
from bench.context import RunContext
from bench.handlers import SLEEP
from bench.histogram import LatencyHistogram
from bench.loadgen import LiveStats, LoadResult, RequestSpec, run_closed
from bench.report import Table
from bench.scenarios.common import create_everywhere, start_targets
from bench.services import Baseline, FaasNode, Target, metric_sum
from bench.tables import DASH, fmt_ms, fmt_ratio

FUNCTION = "burst-sleep"
_RAMP_TIMEOUT_S = 90.0
BURST_MEMORY_MB = 128  # Lambda's default; what a node memory budget will count


@dataclass(slots=True)
class BurstTrace:
    """What the hook saw: first start of each environment, and each request's send time."""

    started_at: float
    first_start: dict[int, float] = field(default_factory=dict)  # pid -> epoch
    requests: list[tuple[float, float]] = field(default_factory=list)  # (sent epoch, ms)

    def first_serving_s(self) -> float | None:
        """Seconds from the burst until the first environment started its handler."""
        if not self.first_start:
            return None
        return min(self.first_start.values()) - self.started_at

    def all_serving_s(self, n: int) -> float | None:
        """Seconds from the burst until the N-th distinct environment started its handler."""
        if len(self.first_start) < n:
            return None
        return sorted(self.first_start.values())[n - 1] - self.started_at


@dataclass(frozen=True, slots=True)
class BurstOutcome:
    target: str
    load: LoadResult
    trace: BurstTrace
    all_serving_s: float | None
    ramp: LatencyHistogram
    steady: LatencyHistogram
    cold_starts: float | None

    def record(self) -> dict[str, Any]:  # Any: JSON values
        return {
            "target": self.target,
            "clients": self.load.concurrency,
            "time_to_all_serving_s": self.all_serving_s,
            "environments_seen": len(self.trace.first_start),
            "time_to_first_serving_s": self.trace.first_serving_s(),
            "throttles": self.load.errors.get("HTTP 429", 0),
            "errors": self.load.errors,
            "error_samples": self.load.error_samples,
            "completed": self.load.completed,
            "ramp_latency_ms": self.ramp.summary().as_dict(),
            "steady_latency_ms": self.steady.summary().as_dict(),
            "cold_starts": self.cold_starts,
            "serving_timeline_s": sorted(
                t - self.trace.started_at for t in self.trace.first_start.values()
            ),
        }


async def _cold_starts(ctx: RunContext, target: Target) -> float | None:
    if not isinstance(target, FaasNode):
        return None
    return metric_sum(await target.metrics(ctx.session), "faas_cold_starts_total", FUNCTION)


async def burst(ctx: RunContext, target: Target, n: int) -> BurstOutcome:
    """Fire ``n`` clients at once; stop ``duration_s`` after all ``n`` environments serve."""
    options = ctx.options
    body = json.dumps({"sleep_ms": options.burst_sleep_ms}).encode()
    spec = RequestSpec(target.invoke_url(FUNCTION), body)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    timers: list[asyncio.TimerHandle] = []
    trace = BurstTrace(time.time())

    def hook(response: Response) -> None:
        now = time.time()
        trace.requests.append((now - response.latency_ms / 1000, response.latency_ms))
        answer = json.loads(response.body)
        trace.first_start.setdefault(int(answer["pid"]), float(answer["started"]))
        if not timers and len(trace.first_start) >= n:
            timers.append(loop.call_later(options.duration_s, stop.set))

    cold_before = await _cold_starts(ctx, target)
    stats = LiveStats()
    with ctx.display.phase(f"burst {target.label} to {n}", _RAMP_TIMEOUT_S, stats=stats):
        trace.started_at = time.time()
        load = await run_closed(
            ctx.client, spec, n, _RAMP_TIMEOUT_S, stop=stop, hook=hook, stats=stats
        )
    for timer in timers:
        timer.cancel()
    cold_after = await _cold_starts(ctx, target)
    all_serving = trace.all_serving_s(n)
    cutoff = trace.started_at + (all_serving if all_serving is not None else _RAMP_TIMEOUT_S)
    ramp, steady = LatencyHistogram(), LatencyHistogram()
    for sent, latency_ms in trace.requests:
        (ramp if sent < cutoff else steady).record_ms(latency_ms)
    cold = None if cold_before is None or cold_after is None else cold_after - cold_before
    outcome = BurstOutcome(target.label, load, trace, all_serving, ramp, steady, cold)
    ctx.display.note(
        f"{target.label}: {n} serving after "
        f"{'never' if all_serving is None else f'{all_serving:.2f} s'}"
    )
    return outcome


async def run(ctx: RunContext) -> None:
    options = ctx.options
    settings = None
    if options.burst_limit is not None:
        settings = {"account-concurrency": str(options.burst_limit)}
    node, baselines = await start_targets(ctx, [Baseline.SPAWN], node_settings=settings)
    targets: list[Target] = [node, *baselines]
    await create_everywhere(ctx, targets, FUNCTION, SLEEP, BURST_MEMORY_MB)
    outcomes = [await burst(ctx, target, options.burst_n) for target in targets]
    for outcome in outcomes:
        ctx.result.runs.append(outcome.record())
        other = {k: v for k, v in outcome.load.errors.items() if k != "HTTP 429"}
        if other:
            ctx.result.problems.append(
                f"{outcome.target}: failed requests {other}, e.g. {outcome.load.error_samples}"
            )
        if outcome.all_serving_s is None:
            ctx.result.problems.append(f"{outcome.target}: never reached {options.burst_n}")
    _report(ctx, outcomes)


BURST_COLUMNS = (
    "target", "N", "first serving after s", "all serving after s", "faas/target (all)",
    "throttles", "failed", "cold starts", "ramp requests", "ramp p50 ms", "ramp p99 ms",
    "steady p50 ms", "steady p99 ms",
)  # fmt: skip


def _row(outcome: BurstOutcome, faas: BurstOutcome, n: int) -> tuple[str, ...]:
    ramp, steady = outcome.ramp.summary(), outcome.steady.summary()
    serving, first = outcome.all_serving_s, outcome.trace.first_serving_s()
    ratio = DASH
    if outcome is not faas and serving and faas.all_serving_s:
        ratio = fmt_ratio(faas.all_serving_s, serving)
    throttles = outcome.load.errors.get("HTTP 429", 0)
    return (
        outcome.target, str(n), DASH if first is None else f"{first:.2f}",
        DASH if serving is None else f"{serving:.2f}", ratio, str(throttles),
        str(outcome.load.error_count - throttles),
        DASH if outcome.cold_starts is None else f"{outcome.cold_starts:.0f}",
        str(ramp.count), fmt_ms(ramp.p50_ms), fmt_ms(ramp.p99_ms),
        fmt_ms(steady.p50_ms), fmt_ms(steady.p99_ms),
    )  # fmt: skip


def _report(ctx: RunContext, outcomes: list[BurstOutcome]) -> None:
    options = ctx.options
    faas = outcomes[0]
    rows = tuple(_row(outcome, faas, options.burst_n) for outcome in outcomes)
    ctx.result.tables.append(
        Table(
            f"burst to {options.burst_n} environments (handler sleeps {options.burst_sleep_ms} ms)",
            BURST_COLUMNS,
            rows,
            "The node's memory budget does not exist yet, so N is fixed (--burst-n), "
            "not derived from it. failed = answers other than 200 and 429 "
            "(e.g. init timeouts), with a sample in the JSON.",
        )
    )
    ctx.result.headline.update(
        {
            "n": options.burst_n,
            "time_to_all_serving_s": faas.all_serving_s,
            "time_to_first_serving_s": faas.trace.first_serving_s(),
            "throttles": faas.load.errors.get("HTTP 429", 0),
            "ramp_p99_ms": round(faas.ramp.summary().p99_ms, 2),
            "steady_p99_ms": round(faas.steady.summary().p99_ms, 2),
        }
    )
    if len(outcomes) > 1 and outcomes[1].all_serving_s is not None:
        ctx.result.headline["spawn_time_to_n_running_s"] = outcomes[1].all_serving_s
    longest = max(len(o.trace.first_start) for o in outcomes)
    steps = tuple(str(i) for i in range(1, min(longest, options.burst_n) + 1))
    series = {
        o.target: tuple(
            sorted(t - o.trace.started_at for t in o.trace.first_start.values())[: options.burst_n]
        )
        for o in outcomes
    }
    ctx.result.charts.append(
        Chart(
            "ramp",
            "time until the k-th environment serves",
            "line",
            "environments serving",
            "s since burst",
            steps,
            series,
        )
    )
