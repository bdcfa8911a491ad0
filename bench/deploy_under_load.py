"""A linear alias deployment under continuous load: every invoke must succeed, and the
share of invocations executing the target version must follow the deployment's steps.

Starts its own ``faas serve`` on an ephemeral port, publishes two versions behind an
alias, drives closed-loop load at the alias from asyncio clients while
``/faas/v1/deployments`` shifts it (``Linear:20:3`` by default), then writes
``bench/results/deploy-<timestamp>.json`` and ``.md`` and stops what it started.

    python -m bench.deploy_under_load --clients 8 --preference Linear:20:3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import signal
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

ROLE = "arn:aws:iam::000000000000:role/bench"


def _zip(source: str) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", source)
    return base64.b64encode(buffer.getvalue()).decode()


async def _start_node(data_dir: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "faas", "serve", "--port", "0", "--data-dir", data_dir,
        "--log-level", "WARNING", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    line = (await process.stdout.readline()).decode()
    if not line.startswith("faas listening on "):
        raise RuntimeError(f"faas serve did not start: {line!r}")
    return process, line.removeprefix("faas listening on ").strip()


async def _call(session: aiohttp.ClientSession, method: str, url: str, body: Any) -> Any:
    async with session.request(method, url, data=json.dumps(body).encode()) as response:
        payload = await response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {payload[:300]!r}")
        return json.loads(payload) if payload else None


async def _prepare(session: aiohttp.ClientSession, url: str) -> None:
    functions = f"{url}/2015-03-31/functions"
    await _call(session, "POST", functions, {
        "FunctionName": "shifted", "Runtime": "python3.12", "Role": ROLE,
        "Handler": "app.handler", "MemorySize": 1769, "Publish": True,
        "Code": {"ZipFile": _zip("def handler(e, c):\n    return 'one'\n")},
    })  # fmt: skip
    await _call(session, "PUT", f"{functions}/shifted/code", {
        "ZipFile": _zip("def handler(e, c):\n    return 'two'\n"), "Publish": True,
    })  # fmt: skip
    await _call(session, "POST", f"{functions}/shifted/aliases",
                {"Name": "live", "FunctionVersion": "1"})  # fmt: skip


async def _load(session: aiohttp.ClientSession, url: str, stop: asyncio.Event,
                samples: list[tuple[float, str, bool]]) -> None:  # fmt: skip
    invoke = f"{url}/2015-03-31/functions/shifted/invocations?Qualifier=live"
    while not stop.is_set():
        async with session.post(invoke, data=b"{}") as response:
            await response.read()
            ok = response.status == 200 and "X-Amz-Function-Error" not in response.headers
            samples.append((time.time(), response.headers.get("X-Amz-Executed-Version", "?"), ok))


async def _follow(session: aiohttp.ClientSession, url: str, deployment_id: str,
                  steps: list[tuple[float, float]]) -> dict[str, Any]:  # fmt: skip
    while True:
        body = await _call(session, "GET", f"{url}/faas/v1/deployments/{deployment_id}", None)
        if not steps or steps[-1][1] != body["TargetWeight"]:
            steps.append((time.time(), float(body["TargetWeight"])))
        if body["State"] != "InProgress":
            return dict(body)
        await asyncio.sleep(0.05)


def _report(result: dict[str, Any], samples: list[tuple[float, str, bool]],
            steps: list[tuple[float, float]]) -> tuple[str, dict[str, Any]]:  # fmt: skip
    rows = []
    for index, (started, weight) in enumerate(steps):
        ended = steps[index + 1][0] if index + 1 < len(steps) else float("inf")
        window = [s for s in samples if started <= s[0] < ended]
        versions = Counter(version for _, version, _ in window)
        share = versions["2"] / len(window) if window else 0.0
        rows.append({"target_weight": weight, "invokes": len(window),
                     "target_share": round(share, 3),
                     "failed": sum(1 for s in window if not s[2])})  # fmt: skip
    failed = sum(1 for s in samples if not s[2])
    lines = [
        "# faas bench: a linear deployment under load", "",
        f"State: {result['State']} ({result['Reason']}); {len(samples)} invokes, {failed} failed.",
        "", "| target weight | invokes | share executing the target | failed |",
        "|---|---|---|---|",
        *(f"| {r['target_weight']:.2f} | {r['invokes']} | {r['target_share']:.3f} | "
          f"{r['failed']} |" for r in rows),
    ]  # fmt: skip
    return "\n".join(lines) + "\n", {"deployment": result, "steps": rows, "invokes": len(samples),
                                     "failed": failed}  # fmt: skip


def _write(out: Path, markdown: str, record: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    (out / f"deploy-{stamp}.md").write_text(markdown)
    (out / f"deploy-{stamp}.json").write_text(json.dumps(record, indent=2))


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="faas-deploy-bench-") as data_dir:
        process, url = await _start_node(data_dir)
        try:
            async with aiohttp.ClientSession() as session:
                await _prepare(session, url)
                stop = asyncio.Event()
                samples: list[tuple[float, str, bool]] = []
                steps: list[tuple[float, float]] = []
                clients = [asyncio.create_task(_load(session, url, stop, samples))
                           for _ in range(args.clients)]  # fmt: skip
                await asyncio.sleep(1.0)
                steps.append((time.time(), 0.0))
                created = await _call(session, "POST", f"{url}/faas/v1/deployments", {
                    "FunctionName": "shifted", "Alias": "live", "TargetVersion": "2",
                    "Preference": args.preference,
                })  # fmt: skip
                result = await asyncio.wait_for(
                    _follow(session, url, created["DeploymentId"], steps), args.timeout_s
                )
                await asyncio.sleep(1.0)
                stop.set()
                await asyncio.gather(*clients)
        finally:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
    markdown, record = _report(result, samples, steps)
    await asyncio.to_thread(_write, Path(args.out), markdown, record)
    print(markdown)
    return 0 if result["State"] == "Succeeded" and record["failed"] == 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--preference", default="Linear:20:3")
    parser.add_argument("--timeout-s", type=float, default=120)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    sys.exit(uvloop.run(main(parser.parse_args())))
