"""The servers a scenario measures: a faas node and the three baselines, started and stopped here.

Design notes: every server is a child process on an ephemeral port of 127.0.0.1,
started through the pinning prefix so that it (and every process it forks) runs on
the system-under-test cores. ``Services`` owns them all: a scenario asks for a node
or a baseline with given settings, gets the running one if it already exists (so
``smoke`` starts each only once), and ``stop`` tears everything down in reverse.
"""

from __future__ import annotations

import enum
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

import aiohttp

from bench.handlers import code_zip_base64
from bench.machine import Pinning
from bench.procinfo import own_cpu_s, tree_cpu_s
from bench.procs import ManagedProcess

log = logging.getLogger(__name__)

ROLE = "arn:aws:iam::000000000000:role/bench"
FUNCTIONS_PATH = "/2015-03-31/functions"
_FAAS_READY = re.compile(r"faas listening on (http://\S+)")
_BASELINE_READY = re.compile(r"baseline listening on (http://\S+)")
_START_TIMEOUT_S = 60.0


class Baseline(enum.StrEnum):
    IN_PROCESS = "in-process"  # aiohttp + uvloop calling the handler in-process
    WARM_IPC = "warm-IPC"  # the same server, one pre-started worker over a Unix socket
    SPAWN = "spawn"  # the same server, a fresh interpreter per invoke


_BASELINE_MODES = {
    Baseline.IN_PROCESS: "inprocess",
    Baseline.WARM_IPC: "ipc",
    Baseline.SPAWN: "spawn",
}
FAAS = "faas"


class Target(Protocol):
    """Something that creates functions and answers invokes on faas's URL shape."""

    @property
    def label(self) -> str: ...

    @property
    def url(self) -> str: ...

    @property
    def pid(self) -> int: ...

    def invoke_url(self, function_name: str) -> str: ...

    def cpu_s(self) -> float: ...


async def create_function(
    session: aiohttp.ClientSession,
    target: Target,
    name: str,
    handler: str,
    *,
    memory_mb: int = 128,
    timeout_s: int = 30,
) -> None:
    """Create ``name`` running ``handler`` from the bench's ``app.py``, as CreateFunction does.

    Raises:
        RuntimeError: the target refused it.
    """
    body = {
        "FunctionName": name,
        "Runtime": "python3.12",
        "Role": ROLE,
        "Handler": handler,
        "Code": {"ZipFile": code_zip_base64()},
        "MemorySize": memory_mb,
        "Timeout": timeout_s,
    }
    async with session.post(target.url + FUNCTIONS_PATH, json=body) as response:
        if response.status != 201:
            raise RuntimeError(
                f"{target.label}: creating {name}: {response.status} "
                f"{(await response.text())[:300]}"
            )


class Server:
    """A started server process and the URL it reported."""

    __slots__ = ("_process", "_url", "label")

    def __init__(self, label: str, process: ManagedProcess) -> None:
        self.label = label
        self._process = process
        self._url = ""

    @property
    def url(self) -> str:
        if not self._url:
            raise RuntimeError(f"{self.label} is not started")
        return self._url

    @property
    def pid(self) -> int:
        return self._process.pid

    def invoke_url(self, function_name: str) -> str:
        return f"{self.url}{FUNCTIONS_PATH}/{function_name}/invocations"

    def cpu_s(self) -> float:
        """CPU seconds of the server and everything it runs (environments, workers, spawns)."""
        return tree_cpu_s(self.pid)

    @property
    def tail(self) -> str:
        return self._process.tail

    async def start(self, ready: re.Pattern[str]) -> None:
        match = await self._process.start(ready, _START_TIMEOUT_S)
        self._url = match.group(1)

    async def stop(self) -> None:
        status = await self._process.stop()
        if status not in (0, None):
            log.warning("%s exited with status %s:\n%s", self.label, status, self._process.tail)


class FaasNode(Server):
    """One ``faas serve`` on an ephemeral port with its own data directory."""

    __slots__ = ()

    def node_cpu_s(self) -> float:
        """CPU seconds of the node process alone (not its environments)."""
        return own_cpu_s(self.pid)

    async def metrics(self, session: aiohttp.ClientSession) -> str:
        async with session.get(self.url + "/metrics") as response:
            return await response.text()


def metric_sum(text: str, metric: str, function: str | None = None) -> float:
    """Sum a Prometheus metric's samples, optionally only those labelled ``function``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric):
            continue
        name, _, rest = line.partition("{")
        if name != metric:
            continue
        labels, _, value = rest.rpartition("}")
        if function is not None and f'function="{function}"' not in labels:
            continue
        total += float(value.strip())
    return total


class Services:
    """Owns every server of a run: starts on demand, reuses by settings, stops in reverse."""

    __slots__ = ("_code_dir", "_pinning", "_started", "_workdir")

    def __init__(self, pinning: Pinning, workdir: Path, code_dir: Path) -> None:
        self._pinning = pinning
        self._workdir = workdir
        self._code_dir = code_dir
        self._started: dict[str, Server] = {}

    async def node(
        self, settings: Mapping[str, str] | None = None, cores: tuple[int, ...] | None = None
    ) -> FaasNode:
        """A faas node started with ``settings`` (flag name -> value) on ``cores``."""
        flags = [f"--{name}={value}" for name, value in sorted((settings or {}).items())]
        key = f"faas {cores} {flags}"
        existing = self._started.get(key)
        if isinstance(existing, FaasNode):
            return existing
        data_dir = self._workdir / f"node-{len(self._started)}"
        argv = [
            *self._pinning.sut_prefix(cores),
            sys.executable,
            "-m",
            "faas",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--log-level",
            "WARNING",
            *flags,
        ]
        node = FaasNode(FAAS, ManagedProcess("faas node", argv, None))
        self._started[key] = node
        await node.start(_FAAS_READY)
        return node

    async def baseline(self, kind: Baseline, cores: tuple[int, ...] | None = None) -> Server:
        """The baseline server ``kind`` on ``cores``."""
        key = f"{kind.value} {cores}"
        existing = self._started.get(key)
        if existing is not None:
            return existing
        argv = [
            *self._pinning.sut_prefix(cores),
            sys.executable,
            "-m",
            "bench.baselines.server",
            "--mode",
            _BASELINE_MODES[kind],
            "--code-dir",
            str(self._code_dir),
        ]
        server = Server(kind.value, ManagedProcess(f"{kind.value} baseline", argv, None))
        self._started[key] = server
        await server.start(_BASELINE_READY)
        return server

    def log_tails(self) -> dict[str, str]:
        """The last lines each server printed, by label (for diagnosing problems)."""
        return {server.label: server.tail for server in self._started.values()}

    async def stop(self) -> None:
        """Stop every server, newest first; one failing does not keep the others running."""
        failures: list[Exception] = []
        for server in reversed(list(self._started.values())):
            try:
                await server.stop()
            except Exception as exc:  # keep stopping the rest; reported together below
                log.error("stopping %s failed: %s", server.label, exc)
                failures.append(exc)
        self._started.clear()
        if failures:
            raise ExceptionGroup("stopping the benchmark's servers", failures)
