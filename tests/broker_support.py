"""Brokers for tests: the machine's real services, and a moto SQS server per test module.

Design notes: a test that needs a broker calls ``require_service``. Outside CI a
missing service skips the test with the reason; in CI (``CI=true``) it fails,
because a green run must mean the broker paths ran. The moto server is a real
HTTP server in a child process on an ephemeral port, started and stopped by the
fixture, so SQS traffic crosses a socket exactly as it would to any endpoint.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import boto3
import pytest
from botocore.config import Config

REDIS_URL = os.environ.get("FAAS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AMQP_URL = os.environ.get("FAAS_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
NATS_URL = os.environ.get("FAAS_TEST_NATS_URL", "nats://127.0.0.1:4222")
POSTGRES_URL = os.environ.get("FAAS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SQS_REGION = "us-east-1"
_MOTO_START_TIMEOUT_S = 30.0
_MOTO_LISTENING = re.compile(r"Running on http://127\.0\.0\.1:(\d+)")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_service(name: str, host: str, port: int, timeout_s: float = 2.0) -> None:
    """Skip (or in CI fail) the calling test unless ``host:port`` accepts a connection."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        reason = f"{name} is not reachable at {host}:{port}: {exc}"
    if in_ci():
        pytest.fail(f"{reason} (CI must run every broker test)")
    pytest.skip(reason)


def require_redis() -> None:
    require_service("Redis", "127.0.0.1", 6379)


def require_rabbitmq() -> None:
    require_service("RabbitMQ", "127.0.0.1", 5672)


def require_nats() -> None:
    require_service("NATS", "127.0.0.1", 4222)


def require_postgres() -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)


@dataclass(frozen=True, slots=True)
class MotoServer:
    """A running moto server: its endpoint and a way to make SQS clients for it."""

    url: str

    def sqs(self) -> Any:
        return boto3.session.Session().client(
            "sqs",
            endpoint_url=self.url,
            region_name=SQS_REGION,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            config=Config(retries={"total_max_attempts": 1, "mode": "standard"}),
        )


def _drain(stream: IO[str]) -> None:
    """Read ``stream`` to its end (the process exited), then close it."""
    with stream:
        stream.read()


def start_moto() -> tuple[subprocess.Popen[str], MotoServer]:
    """Start ``moto_server`` on an ephemeral port; return the process and its endpoint."""
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + _MOTO_START_TIMEOUT_S
    assert process.stdout is not None
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        match = _MOTO_LISTENING.search(line)
        if match:
            # Keep draining its output so the server never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process.stdout,), daemon=True).start()
            return process, MotoServer(f"http://127.0.0.1:{match.group(1)}")
    process.kill()
    process.wait(10)
    raise RuntimeError("moto server did not start:\n" + "".join(seen[-20:]))


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    process, server = start_moto()
    try:
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
