"""``provisioned``: the first invoke on a provisioned environment against warm invokes.

For each of ``--provisioned-versions`` published versions of a hello function, the
scenario puts a provisioned concurrency of 1, waits until the configuration is
``READY``, times the very first invoke of that version (served by the environment
initialized ahead), then ``--provisioned-warm`` more invokes on the same, now warm,
environment, then one more after a pause as long as the READY poll's interval. The warm
invokes are the baseline: a provisioned environment's first invoke should cost what any
warm one does, since its Init already ran. The first invoke comes after the environment
sat idle (from READY until the poll saw it), and on this machine any invoke after a pause
is slower than back-to-back ones (caches gone cold, idle cores woken); the warm invoke
after the same pause tells that part apart from anything provisioned-specific.

Each version differs from the last in an environment variable: publishing a version
whose code and configuration did not change returns the previous version instead.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.context import RunContext
from bench.handlers import HELLO
from bench.loadgen import RequestSpec, send_once
from bench.report import Table
from bench.scenarios.common import start_targets
from bench.services import FUNCTIONS_PATH, FaasNode, create_function
from bench.tables import fmt_ratio

_FUNCTION = "provisioned-hello"
_READY_TIMEOUT_S = 60.0
_READY_POLL_S = 0.05


async def _call(ctx: RunContext, method: str, url: str, body: object = None) -> dict[str, object]:
    async with ctx.session.request(method, url, json=body) as response:
        answer: dict[str, object] = await response.json(content_type=None) or {}
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {answer}")
        return answer


async def _publish(ctx: RunContext, node: FaasNode, index: int) -> str:
    base = f"{node.url}{FUNCTIONS_PATH}/{_FUNCTION}"
    await _call(ctx, "PUT", f"{base}/configuration",
                {"Environment": {"Variables": {"BENCH_VERSION": str(index)}}})  # fmt: skip
    published = await _call(ctx, "POST", f"{base}/versions", {})
    return str(published["Version"])


async def _provision(ctx: RunContext, node: FaasNode, version: str) -> None:
    url = f"{node.url}/2019-09-30/functions/{_FUNCTION}/provisioned-concurrency?Qualifier={version}"
    await _call(ctx, "PUT", url, {"ProvisionedConcurrentExecutions": 1})
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while (await _call(ctx, "GET", url))["Status"] != "READY":
        if time.monotonic() > deadline:
            raise RuntimeError(f"version {version} was not READY within {_READY_TIMEOUT_S} s")
        await asyncio.sleep(_READY_POLL_S)


async def _unprovision(ctx: RunContext, node: FaasNode, version: str) -> None:
    url = f"{node.url}/2019-09-30/functions/{_FUNCTION}/provisioned-concurrency?Qualifier={version}"
    async with ctx.session.request("DELETE", url) as response:
        if response.status != 204:
            raise RuntimeError(f"DELETE {url}: {response.status} {await response.text()}")


async def run(ctx: RunContext) -> None:
    node, _ = await start_targets(ctx, ())
    await create_function(ctx.session, node, _FUNCTION, HELLO, memory_mb=ctx.options.memory_mb)
    first_ms: list[float] = []
    warm_ms: list[float] = []
    paused_ms: list[float] = []
    seen_versions: set[str] = set()
    versions = ctx.options.provisioned_versions
    with ctx.display.phase("provisioned versions", float(versions), is_timed=False):
        for index in range(versions):
            version = await _publish(ctx, node, index)
            if version in seen_versions:
                raise RuntimeError(f"publishing gave version {version} again")
            seen_versions.add(version)
            await _provision(ctx, node, version)
            spec = RequestSpec(f"{node.invoke_url(_FUNCTION)}?Qualifier={version}")
            first = await send_once(ctx.client, spec)
            if first.status != 200 or "spawn=" in first.headers.get("x-faas-timings", ""):
                ctx.result.problems.append(f"version {version}: first invoke {first.status}, "
                                           f"{first.headers.get('x-faas-timings')}")  # fmt: skip
            first_ms.append(first.latency_ms)
            for _ in range(ctx.options.provisioned_warm):
                warm = await send_once(ctx.client, spec)
                warm_ms.append(warm.latency_ms)
            await asyncio.sleep(_READY_POLL_S)
            paused_ms.append((await send_once(ctx.client, spec)).latency_ms)
            await _unprovision(ctx, node, version)  # room for the next one in the budget
            ctx.display.advance(1)
    first_p50, warm_p50 = statistics.median(first_ms), statistics.median(warm_ms)
    paused_p50 = statistics.median(paused_ms)
    ctx.result.tables.append(Table(
        "first invoke on a provisioned environment vs warm invokes (ms, client side)",
        ("invokes", "count", "p50", "max", "p50 / warm p50", "p50 / paused warm p50"),
        (
            ("first on a provisioned environment", str(len(first_ms)), f"{first_p50:.2f}",
             f"{max(first_ms):.2f}", fmt_ratio(first_p50, warm_p50),
             fmt_ratio(first_p50, paused_p50)),
            ("warm, back to back (baseline)", str(len(warm_ms)), f"{warm_p50:.2f}",
             f"{max(warm_ms):.2f}", "1.00", fmt_ratio(warm_p50, paused_p50)),
            (f"warm, after a {_READY_POLL_S * 1000:.0f} ms pause", str(len(paused_ms)),
             f"{paused_p50:.2f}", f"{max(paused_ms):.2f}", fmt_ratio(paused_p50, warm_p50),
             "1.00"),
        ),
        f"MemorySize {ctx.options.memory_mb} MB; each version provisioned with 1 environment.",
    ))  # fmt: skip
    ctx.result.runs.append({"first_ms": first_ms, "warm_ms": warm_ms, "paused_ms": paused_ms})
    ctx.result.headline["first_p50_ms"] = round(first_p50, 3)
    ctx.result.headline["warm_p50_ms"] = round(warm_p50, 3)
    ctx.result.headline["paused_warm_p50_ms"] = round(paused_p50, 3)
    ctx.result.headline["first_over_warm"] = round(first_p50 / warm_p50, 3)
    ctx.result.headline["first_over_paused_warm"] = round(first_p50 / paused_p50, 3)
