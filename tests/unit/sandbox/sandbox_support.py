"""Helpers shared by the sandbox tests: unique node ids, child argv, /proc readers."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import pytest

from faas.sandbox.cgroups import CgroupKind, CgroupManager

MakeManager = Callable[..., Awaitable[CgroupManager]]
Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


def is_ci() -> bool:
    """True on the CI machine, where cgroups must work."""
    return os.environ.get("CI") == "true"


def require_kernel_cgroups(manager: CgroupManager) -> None:
    """Skip (locally) or fail (in CI) unless the manager enforces limits in the kernel."""
    if manager.kind is CgroupKind.NONE:
        message = "no cgroup v1/v2 rights on this machine (detection fell back to none)"
        if is_ci():
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)


def unique_node_id() -> str:
    return f"t{os.getpid()}-{secrets.token_hex(4)}"


def python(code: str) -> list[str]:
    """The argv of a Python child running ``code`` (no site: starts faster)."""
    return [sys.executable, "-S", "-c", code]


async def read_line(process: asyncio.subprocess.Process, timeout_s: float = 10.0) -> str:
    """The next line the child prints."""
    assert process.stdout is not None
    async with asyncio.timeout(timeout_s):
        return (await process.stdout.readline()).decode().strip()


async def wait_until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until it holds; fail after ``timeout_s``."""
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still false after {timeout_s} s: {predicate}")


def is_gone(pid: int) -> bool:
    """True if ``pid`` has exited (a zombie not yet reaped counts as gone)."""
    try:
        return bool(psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def cgroup_of(pid: int, controller: str) -> str:
    """The v1 cgroup of ``pid`` for ``controller`` ('' for v2), as /proc/<pid>/cgroup says."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if (controller in controllers.split(",")) or (not controller and not controllers):
            return path
    raise AssertionError(f"pid {pid} has no {controller or 'v2'} cgroup")
