"""``async``: Event invokes accepted per second, drained per second, and end-to-end latency.

Clients send ``X-Amz-Invocation-Type: Event`` invokes closed-loop for ``duration_s``;
each event carries an id and its send time, and the handler (``app.record``)
reports both with its own start time over UDP (``bench/beacon.py``). Accepted/s is
202 answers per second; the drain is followed on ``/metrics`` until every accepted
event ran; drained/s is distinct events run per second from the first send to the
last start; an event's end-to-end latency is from its send to its handler starting.
The in-process baseline's sync throughput at the same concurrency is the yardstick
for the accept path (answering "202" should cost no more than answering "hello").
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass

from bench.beacon import Beacon, Datagram
from bench.context import RunContext
from bench.handlers import HELLO, RECORD
from bench.histogram import LatencyHistogram
from bench.loadgen import LiveStats, LoadResult, RequestSpec, run_closed, send_once
from bench.measure import measure
from bench.report import Table
from bench.scenarios.common import start_targets
from bench.services import Baseline, FaasNode, create_function, metric_sum
from bench.tables import DASH, fmt_ms, fmt_rate, fmt_ratio

FUNCTION = "async-record"
EVENT_HEADERS = {"X-Amz-Invocation-Type": "Event"}
_DRAIN_TIMEOUT_S = 120.0
_LAST_DATAGRAMS_S = 0.5


@dataclass(frozen=True, slots=True)
class AsyncOutcome:
    load: LoadResult
    accepted: int
    ran: float  # invocations the node counted
    cold_starts: float  # environments the node started while draining
    records: dict[str, tuple[float, float]]  # event id -> (sent, started) epochs


def _records(datagrams: list[Datagram]) -> dict[str, tuple[float, float]]:
    """Event id -> (sent, started) epochs; a re-run (at-least-once) keeps the first."""
    records: dict[str, tuple[float, float]] = {}
    for datagram in datagrams:
        parts = datagram.text.split()
        if len(parts) == 4 and parts[0] == "ran":
            records.setdefault(parts[1], (float(parts[2]), float(parts[3])))
    return records


async def _invocations(ctx: RunContext, node: FaasNode) -> float:
    return metric_sum(await node.metrics(ctx.session), "faas_invocations_total", FUNCTION)


async def _drain(ctx: RunContext, node: FaasNode, accepted: int, before: float) -> float:
    """Wait until the node ran ``accepted`` more invocations than ``before``; return how many."""
    ran = 0.0
    with ctx.display.phase(f"drain {accepted} events", float(accepted), is_timed=False):
        deadline = time.monotonic() + _DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            now_ran = await _invocations(ctx, node) - before
            ctx.display.advance(now_ran - ran)
            ran = now_ran
            if ran >= accepted:
                break
            await asyncio.sleep(0.1)
    return ran


async def _start_environments(ctx: RunContext, url: str) -> None:
    """Sync invokes from ``async_warm_envs`` clients, so the drain finds warm environments."""
    clients = ctx.options.async_warm_envs
    if clients <= 0:
        return
    with ctx.display.phase(f"start {clients} environments", ctx.options.warmup_s):
        await run_closed(ctx.client, RequestSpec(url), clients, ctx.options.warmup_s)


async def _cold_starts(ctx: RunContext, node: FaasNode) -> float:
    return metric_sum(await node.metrics(ctx.session), "faas_cold_starts_total", FUNCTION)


async def _send_events(ctx: RunContext, node: FaasNode, beacon: Beacon) -> AsyncOutcome | None:
    options = ctx.options
    ids = itertools.count()
    address = list(beacon.address)

    def body() -> bytes:
        return json.dumps({"id": f"e{next(ids)}", "sent": time.time(), "beacon": address}).encode()

    url = node.invoke_url(FUNCTION)
    await _start_environments(ctx, url)
    cold_before = await _cold_starts(ctx, node)
    ran_before = await _invocations(ctx, node)
    spec = RequestSpec(url, headers=EVENT_HEADERS, expect_status=202, make_body=body)
    probe = await send_once(ctx.client, spec)
    if probe.status != 202:
        ctx.result.notes.append(
            f"skipped: Event invokes are not available on this node (HTTP {probe.status})"
        )
        return None
    stats = LiveStats()
    clients = options.async_concurrency
    with ctx.display.phase(f"Event invokes c{clients}", options.duration_s, stats=stats):
        load = await run_closed(ctx.client, spec, clients, options.duration_s, stats=stats)
    accepted = load.completed + 1  # and the probe
    ran = await _drain(ctx, node, accepted, ran_before)
    await asyncio.sleep(_LAST_DATAGRAMS_S)
    records = _records(beacon.drain())
    cold_starts = await _cold_starts(ctx, node) - cold_before
    if load.error_count:
        ctx.result.problems.append(f"Event invokes failed: {load.errors}")
    if ran < accepted:
        ctx.result.problems.append(f"only {ran:.0f} of {accepted} accepted events ran")
    elif len(records) < accepted:
        ctx.result.problems.append(
            f"{accepted} events ran but only {len(records)} reported over UDP "
            f"({beacon.dropped} dropped by the listener)"
        )
    return AsyncOutcome(load, accepted, ran, cold_starts, records)


async def run(ctx: RunContext) -> None:
    options = ctx.options
    node, baselines = await start_targets(ctx, [Baseline.IN_PROCESS])
    await create_function(ctx.session, node, FUNCTION, RECORD, memory_mb=options.memory_mb)
    beacon = Beacon()
    await beacon.start()
    try:
        outcome = await _send_events(ctx, node, beacon)
    finally:
        await beacon.stop()
    if outcome is None:
        return
    baseline_rps = 0.0
    for server in baselines:
        await create_function(ctx.session, server, "async-hello", HELLO)
        case = f"sync c{options.async_concurrency}"
        spec = RequestSpec(server.invoke_url("async-hello"))
        sync = await measure(ctx, server, spec, case, concurrency=options.async_concurrency)
        ctx.result.runs.append(sync.record())
        baseline_rps = sync.load.rps
    _report(ctx, outcome, baseline_rps)


def _report(ctx: RunContext, outcome: AsyncOutcome, baseline_rps: float) -> None:
    options = ctx.options
    records = outcome.records
    latency = LatencyHistogram()
    for sent, started in records.values():
        latency.record_ms(max(0.0, (started - sent) * 1000))
    drained_rps = 0.0
    if records:
        first_sent = min(sent for sent, _ in records.values())
        last_started = max(started for _, started in records.values())
        drained_rps = len(records) / max(1e-9, last_started - first_sent)
    accepted_rps = outcome.load.rps
    p = latency.summary()
    ctx.result.runs.append(
        {
            "case": f"Event c{options.async_concurrency}",
            "accepted": outcome.accepted,
            "accepted_per_s": round(accepted_rps, 1),
            "errors": outcome.load.errors,
            "ran": outcome.ran,
            "cold_starts_while_draining": outcome.cold_starts,
            "reported": len(records),
            "drained_per_s": round(drained_rps, 1),
            "accept_latency_ms": outcome.load.histogram.summary().as_dict(),
            "end_to_end_ms": p.as_dict(),
            "hdr_end_to_end_us": latency.encode(),
        }
    )
    row = (
        str(outcome.accepted),
        fmt_rate(accepted_rps),
        fmt_rate(drained_rps),
        f"{outcome.cold_starts:.0f}",
        fmt_ms(outcome.load.histogram.summary().p50_ms),
        fmt_ms(p.p50_ms),
        fmt_ms(p.p90_ms),
        fmt_ms(p.p99_ms),
        fmt_ms(p.max_ms),
        fmt_rate(baseline_rps) if baseline_rps else DASH,
        fmt_ratio(accepted_rps, baseline_rps) if baseline_rps else DASH,
    )
    ctx.result.tables.append(
        Table(
            f"Event invokes, {options.async_concurrency} clients for {options.duration_s:g} s",
            (
                "accepted",
                "accepted/s",
                "drained/s",
                "cold starts",
                "202 p50 ms",
                "e2e p50 ms",
                "e2e p90 ms",
                "e2e p99 ms",
                "e2e max ms",
                "in-process sync req/s",
                "accepted/s ÷ in-process",
            ),
            (row,),
            "e2e = from the client's send to the handler starting (one clock); "
            "202 = the accept round trip; cold starts = new environments during the drain "
            f"(after {options.async_warm_envs} were started by sync invokes).",
        )
    )
    ctx.result.headline.update(
        {
            "accepted_per_s": round(accepted_rps, 1),
            "drained_per_s": round(drained_rps, 1),
            "e2e_p50_ms": round(p.p50_ms, 2),
            "e2e_p99_ms": round(p.p99_ms, 2),
        }
    )
