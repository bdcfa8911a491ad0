"""``startup``: from ``faas serve`` being executed to its first answered request.

Each run starts a fresh node (new data directory, so the store is created and migrated
too), waits for its ready line and times the first ``GET /healthz`` answer. The bare
aiohttp + uvloop baseline server is started the same way (its first answered request
is a ``CreateFunction``) as the floor for any Python front door on aiohttp. Where the
time goes: importing faas's modules (with aiohttp), importing aiohttp alone, and the
rest (the interpreter itself, building and starting the node's components).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.context import RunContext
from bench.procs import ManagedProcess
from bench.report import Table
from bench.tables import fmt_ratio

_FAAS_READY = re.compile(r"faas listening on (http://\S+)")
_BASELINE_READY = re.compile(r"baseline listening on (http://\S+)")
_TIMEOUT_S = 60.0


async def _first_answer(ctx: RunContext, argv: list[str], ready: re.Pattern[str],
                        method: str, path: str, body: bytes) -> float:  # fmt: skip
    """Seconds from starting ``argv`` to the first answered request."""
    process = ManagedProcess("startup probe", argv, None)
    started = time.perf_counter()
    match = await process.start(ready, _TIMEOUT_S)
    try:
        async with ctx.session.request(method, match.group(1) + path, data=body) as response:
            await response.read()
        return time.perf_counter() - started
    finally:
        await process.stop()


async def _import_s(ctx: RunContext, module: str) -> float:
    """Seconds a fresh interpreter (on the server's cores) spends importing ``module``,
    the least of five tries."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = []
    for _ in range(5):
        process = await asyncio.create_subprocess_exec(
            *ctx.pinning.sut_prefix(None), sys.executable, "-c", code,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await process.communicate()
        samples.append(float(out))
    return min(samples)


async def run(ctx: RunContext) -> None:
    runs = ctx.options.startup_runs
    faas_s: list[float] = []
    baseline_s: list[float] = []
    code_dir = Path(tempfile.mkdtemp(prefix="startup-code-", dir=ctx.workdir))
    (code_dir / "app.py").write_text("def hello(event, context):\n    return 'hello'\n")
    with ctx.display.phase("start-up", float(runs), is_timed=False):
        for index in range(runs):
            data_dir = ctx.workdir / f"startup-{index}"
            faas_s.append(await _first_answer(ctx, [
                *ctx.pinning.sut_prefix(None), sys.executable, "-m", "faas", "serve",
                "--port", "0", "--data-dir", str(data_dir), "--log-level", "WARNING",
            ], _FAAS_READY, "GET", "/healthz", b""))  # fmt: skip
            if ctx.options.with_baselines:
                baseline_s.append(await _first_answer(ctx, [
                    *ctx.pinning.sut_prefix(None), sys.executable, "-m",
                    "bench.baselines.server", "--mode", "inprocess", "--code-dir", str(code_dir),
                ], _BASELINE_READY, "POST", "/2015-03-31/functions",
                    b'{"FunctionName": "hello", "Handler": "app.hello"}'))  # fmt: skip
            ctx.display.advance(1)
    imports_faas = await _import_s(ctx, "faas.cli")
    imports_aiohttp = await _import_s(ctx, "aiohttp.web")
    faas_p50 = statistics.median(faas_s)
    rows = [(
        "faas serve", f"{faas_p50 * 1000:.0f}", f"{max(faas_s) * 1000:.0f}",
        f"{imports_faas * 1000:.0f}", f"{max(0.0, faas_p50 - imports_faas) * 1000:.0f}",
        fmt_ratio(faas_p50, statistics.median(baseline_s)) if baseline_s else "-",
    )]  # fmt: skip
    if baseline_s:
        base_p50 = statistics.median(baseline_s)
        rows.append(("bare aiohttp server (baseline)", f"{base_p50 * 1000:.0f}",
                     f"{max(baseline_s) * 1000:.0f}", "-", "-", "1.00"))  # fmt: skip
    ctx.result.tables.append(Table(
        f"start-up to the first answered request ({runs} runs)",
        ("server", "p50 ms", "max ms", "imports ms", "rest ms", "p50 / baseline"),
        tuple(rows),
        f"Importing aiohttp.web alone takes {imports_aiohttp * 1000:.0f} ms here; "
        "'imports' is a fresh interpreter importing faas.cli (aiohttp included), "
        "'rest' the interpreter, the node's components and the first request.",
    ))  # fmt: skip
    ctx.result.runs.append(
        {
            "faas_s": faas_s,
            "baseline_s": baseline_s,
            "imports_faas_s": imports_faas,
            "imports_aiohttp_s": imports_aiohttp,
        }
    )
    ctx.result.headline["faas_p50_ms"] = round(faas_p50 * 1000, 1)
    ctx.result.headline["imports_ms"] = round(imports_faas * 1000, 1)
    if baseline_s:
        ctx.result.headline["baseline_p50_ms"] = round(statistics.median(baseline_s) * 1000, 1)
