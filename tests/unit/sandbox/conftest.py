"""Fixtures for the sandbox tests: cgroup managers on unique node ids, and wrapped children.

Design notes: these tests use the host's real cgroups. Each manager gets its own node id
(pid plus random suffix), so parallel runs never share a directory, and every manager and
child process a test makes is stopped or killed (by pid) at teardown even if the test
failed. Where the machine gives no cgroup rights the kernel tests skip, except under
``CI=true``: the CI machine has them, so there a missing backend is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest
from sandbox_support import MakeManager, Spawn, require_kernel_cgroups, unique_node_id

from faas.sandbox.cgroups import CgroupManager, EnvironmentCgroup, RunAs


@pytest.fixture
async def make_manager(spawn: Spawn) -> AsyncIterator[MakeManager]:
    """Factory: a started CgroupManager on a fresh node id; all are stopped at teardown.

    It depends on ``spawn`` so that it is torn down first: stopping kills every process
    in the cgroups (grandchildren too, which may hold a child's stdout open), and only
    then does ``spawn`` wait for its children.
    """
    managers: list[CgroupManager] = []

    async def make(**kwargs: object) -> CgroupManager:
        manager = CgroupManager(unique_node_id(), **kwargs)  # type: ignore[arg-type]
        await manager.start()
        managers.append(manager)
        return manager

    yield make
    for manager in reversed(managers):
        await manager.stop()


@pytest.fixture
async def kernel_manager(make_manager: MakeManager) -> CgroupManager:
    """A manager on the detected backend, which must be v1 or v2."""
    manager = await make_manager()
    require_kernel_cgroups(manager)
    return manager


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Factory: start ``argv`` wrapped into a cgroup, as the launcher will; killed at teardown."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(
        cgroup: EnvironmentCgroup, argv: Sequence[str], run_as: RunAs | None = None
    ) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *cgroup.wrap(argv, run_as=run_as),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        processes.append(process)
        await cgroup.attach(process.pid)
        return process

    yield start
    for process in processes:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
