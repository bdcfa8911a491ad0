"""Quick latency check through boto3: warm p50/p99 and cold first-invoke latency.

Starts its own ``faas serve`` on an ephemeral port with a temporary data directory,
creates hello functions, measures, and stops everything it started.

    python -m bench.quick_latency --warm 1000 --cold 20
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile

import boto3
from botocore.config import Config

HELLO = "def handler(event, context):\n    return {'message': 'hello'}\n"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", HELLO)
    return buffer.getvalue()


def _start_server(data_dir: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "faas", "serve", "--port", "0", "--data-dir", data_dir,
         "--log-level", "WARNING"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("faas listening on "):
            return process, line.removeprefix("faas listening on ").strip()
    raise RuntimeError("faas serve exited before listening")


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warm", type=int, default=1000, help="warm invokes to time")
    parser.add_argument("--cold", type=int, default=20, help="cold first invokes to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        process, url = _start_server(data_dir)
        try:
            client = boto3.client(
                "lambda", endpoint_url=url, region_name="us-east-1",
                aws_access_key_id="bench", aws_secret_access_key="bench",
                config=Config(retries={"max_attempts": 1}),
            )  # fmt: skip
            code = _zip()
            role = "arn:aws:iam::000000000000:role/bench"
            cold: list[float] = []
            for i in range(args.cold + 1):
                name = f"cold{i}"
                client.create_function(FunctionName=name, Runtime="python3.12", Role=role,
                                       Handler="app.handler", Code={"ZipFile": code})  # fmt: skip
                started = time.perf_counter()
                client.invoke(FunctionName=name, Payload=b"{}")["Payload"].read()
                if i:  # the first also warms boto3's own connection
                    cold.append((time.perf_counter() - started) * 1000)
            for _ in range(20):
                client.invoke(FunctionName="cold0", Payload=b"{}")["Payload"].read()
            warm: list[float] = []
            for _ in range(args.warm):
                started = time.perf_counter()
                client.invoke(FunctionName="cold0", Payload=b"{}")["Payload"].read()
                warm.append((time.perf_counter() - started) * 1000)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    print(f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}")
    print(
        f"warm sync invoke via boto3 (n={len(warm)}): p50 {statistics.median(warm):.2f} ms, "
        f"p90 {_percentile(warm, 0.9):.2f} ms, p99 {_percentile(warm, 0.99):.2f} ms"
    )
    print(
        f"cold first invoke via boto3 (n={len(cold)}): p50 {statistics.median(cold):.1f} ms, "
        f"p90 {_percentile(cold, 0.9):.1f} ms, max {max(cold):.1f} ms"
    )


if __name__ == "__main__":
    main()
