"""``faas bench SCENARIO [options]``: parse flags, run one scenario (or all, tiny), write results.

The only place that pins this process, configures logging and starts the event loop.
Exit status: 0 on success, 1 if the scenario failed (or, with ``--strict``, if any
request failed), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from rich.console import Console

from bench.clients import CLIENT_KINDS, AiohttpClient, LoadClient, RawClient, new_session
from bench.context import RunContext
from bench.handlers import parse_size, write_code_directory
from bench.machine import Pinning, machine_facts, pin_generator, plan_pinning
from bench.options import FULL, TINY, Options
from bench.progress import ProgressDisplay
from bench.report import RunInfo, ScenarioResult, write_report
from bench.scenarios.registry import SCENARIOS
from bench.services import Services

log = logging.getLogger(__name__)

SMOKE = "smoke"


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(parse_size(part) for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="faas bench",
        description="Run a load benchmark scenario against a faas node it starts itself, "
        "beside the in-process, warm-IPC and spawn-per-request baselines (bench/README.md).",
    )
    parser.add_argument("scenario", choices=[*SCENARIOS, SMOKE])
    parser.add_argument(
        "--profile",
        choices=("full", "tiny"),
        default=None,
        help="sizes to start from (default full; smoke always uses tiny)",
    )
    add = parser.add_argument
    add("--duration-s", type=float, help="each measured load run (default 5)")
    add("--memory-mb", type=int, help="MemorySize of warm/payload/cold/async functions (1769)")
    add("--warmup-s", type=float, help="unmeasured load before each run (default 1)")
    add("--concurrency", type=_ints, help="warm: closed-loop client counts (default 1,8,64)")
    add("--rate", type=float, help="warm: open-loop requests per second (default 200)")
    add("--payload-sizes", type=_sizes, help="payload: sizes (default 1KB,64KB,1MB,6MB)")
    add("--payload-concurrency", type=_ints, help="payload: client counts (default 1)")
    add("--cold-starts", type=int, help="cold: first invokes of new functions (default 200)")
    add("--cold-busy-starts", type=int, help="cold: new environments while busy (default 100)")
    add("--burst-n", type=int, help="burst: environments to reach (default 50)")
    add("--burst-sleep-ms", type=int, help="burst: handler duration (default 100)")
    add("--burst-limit", type=int, help="burst: the node's --account-concurrency")
    add("--env-counts", type=_ints, help="memory: idle environments (default 1,10,50)")
    add("--async-concurrency", type=int, help="async: Event-invoke clients (default 16)")
    add("--async-warm-envs", type=int, help="async: environments to start first (default 32)")
    add("--cpu-memory-mb", type=_ints, help="cpu-share: MemorySize values (default 885,1769,3538)")
    add("--cpu-seconds", type=float, help="cpu-share: wall time per CPU-bound invoke (default 1)")
    add("--cpu-repeats", type=int, help="cpu-share: invokes per MemorySize (default 3)")
    add("--provisioned-versions", type=int, help="provisioned: versions to provision (default 20)")
    add("--provisioned-warm", type=int, help="provisioned: warm invokes per version (default 20)")
    add("--startup-runs", type=int, help="startup: fresh nodes to start (default 10)")
    add("--trace-minutes", type=float, help="keepalive: trace length in minutes (default 360)")
    add("--trace-minute-s", type=float, help="keepalive: seconds per trace minute (default 0.15)")
    add("--client", choices=CLIENT_KINDS, help="load client: raw (default) or aiohttp")
    add("--out", type=Path, help="directory for the result files (default bench/results)")
    add(
        "--no-baselines",
        dest="with_baselines",
        action="store_const",
        const=False,
        help="measure faas alone",
    )
    add("--no-pin", dest="pin", action="store_const", const=False, help="do not pin to cores")
    add("--no-charts", dest="charts", action="store_const", const=False, help="skip PNG charts")
    add("--strict", action="store_const", const=True, help="exit 1 if any request failed")
    return parser


def build_options(args: argparse.Namespace) -> Options:
    base = TINY if args.scenario == SMOKE or args.profile == "tiny" else FULL
    overrides: dict[str, Any] = {  # Any: values of the several Options field types
        name: value
        for name, value in vars(args).items()
        if name not in ("scenario", "profile") and value is not None
    }
    return base.with_overrides(overrides)


async def run_scenario(ctx: RunContext, scenario: str) -> ScenarioResult:
    """Run ``scenario`` (``smoke``: every scenario in turn) and return what it found.

    A scenario that raises is recorded as a problem; under ``smoke`` the next one still runs.
    """
    names = list(SCENARIOS) if scenario == SMOKE else [scenario]
    combined = ScenarioResult(scenario)
    for name in names:
        sub = ctx.for_scenario(name)
        started = time.perf_counter()
        try:
            await SCENARIOS[name](sub)
        except Exception as exc:  # a scenario boundary: record, log, go on with the next
            log.error("scenario %s failed:\n%s", name, traceback.format_exc())
            sub.result.problems.append(f"scenario failed: {type(exc).__name__}: {exc}")
        sub.result.notes.append(f"{name} took {time.perf_counter() - started:.1f} s")
        if scenario != SMOKE:
            return sub.result
        combined.absorb(sub.result)
    return combined


def _generator_description(options: Options, pinning: Pinning) -> dict[str, Any]:
    facts = machine_facts()["packages"]
    client = (
        "raw HTTP/1.1 keep-alive client (bench/rawhttp.py)"
        if options.client == "raw"
        else f"aiohttp {facts['aiohttp']} client"
    )
    return {
        "kind": "own asyncio generator (bench/loadgen.py); wrk is not used",
        "client": options.client,
        "cores": list(pinning.generator_cores),
        "description": (
            f"bench/loadgen.py, {client} on uvloop {facts['uvloop']}, one process on core(s) "
            f"{list(pinning.generator_cores)}; closed loop = N clients back to back; open loop "
            "= fixed arrival rate, latency from the intended send time."
        ),
    }


def _load_client(kind: str, session: aiohttp.ClientSession) -> LoadClient:
    return RawClient() if kind == "raw" else AiohttpClient(session)


async def _run(
    scenario: str, options: Options, pinning: Pinning, console: Console
) -> tuple[ScenarioResult, datetime]:
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="faas-bench-") as scratch:
        workdir = Path(scratch)
        services = Services(pinning, workdir, write_code_directory(workdir / "code"))
        display = ProgressDisplay(console)
        await display.start()
        try:
            async with new_session() as session:
                client = _load_client(options.client, session)
                try:
                    ctx = RunContext(
                        options=options,
                        services=services,
                        session=session,
                        client=client,
                        display=display,
                        pinning=pinning,
                        workdir=workdir,
                        result=ScenarioResult(scenario),
                    )
                    result = await run_scenario(ctx, scenario)
                    if result.problems:
                        result.server_logs.update(services.log_tails())
                finally:
                    await client.close()
        finally:
            try:
                await services.stop()
            finally:
                await display.stop()
    return result, started_at


def _print_summary(console: Console, result: ScenarioResult, paths: list[Path]) -> None:
    for table in result.tables[:1] if result.scenario != SMOKE else []:
        console.print(table.markdown(), highlight=False, soft_wrap=True)
    for problem in result.problems:
        console.print(f"[red]problem:[/red] {problem}", highlight=False)
    for path in paths:
        console.print(f"wrote {path}", highlight=False)


def main(argv: list[str]) -> int:
    """Run ``faas bench`` with ``argv`` (without the program name); returns the exit status."""
    args = build_parser().parse_args(argv)
    options = build_options(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    pinning = plan_pinning(options.pin)
    pin_generator(pinning)  # before the loop and any thread exist, so all inherit it
    console = Console(stderr=True)
    machine = machine_facts()  # before the run, so its load average shows what else ran
    result, started_at = uvloop.run(_run(args.scenario, options, pinning, console))
    machine["load_average_after"] = list(os.getloadavg())
    info = RunInfo(
        command="faas bench " + shlex.join(argv),
        started_at=started_at,
        finished_at=datetime.now(UTC),
        options=options.as_dict(),
        machine=machine,
        pinning=pinning.as_dict(),
        generator=_generator_description(options, pinning),
    )
    paths = write_report(options.out, result, info, options.charts)
    _print_summary(Console(), result, paths)
    failed = any(
        problem.startswith("scenario failed") or ": scenario failed" in problem
        for problem in result.problems
    )
    if failed or (options.strict and result.problems):
        return 1
    return 0
