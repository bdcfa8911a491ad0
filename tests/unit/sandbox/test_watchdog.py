"""The no-privilege fallback: an RSS watchdog over the process tree instead of a cgroup."""

from __future__ import annotations

import asyncio
import os

import psutil
import pytest
from sandbox_support import MakeManager, Spawn, is_gone, python, read_line, wait_until

from faas.sandbox.cgroups import CgroupKind, CgroupManager
from faas.sandbox.watchdog import MemoryWatchdog, WatchdogState

pytestmark = pytest.mark.timeout(30)

# Grows 10 MB at a time (touching the pages) with small pauses, up to 400 MB.
SLOW_HOG = """
import time
chunks = []
for _ in range(40):
    chunks.append(b"x" * (10 << 20))
    time.sleep(0.01)
print("survived", flush=True)
time.sleep(30)
"""

# A child forks a grandchild and exits after `linger` seconds; the grandchild stays.
ORPHANS_A_GRANDCHILD = """
import os, sys, time
linger, setsid = float(sys.argv[1]), sys.argv[2] == "setsid"
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        if setsid:
            os.setsid()
        os.write(w, b"%d\\n" % os.getpid())
        time.sleep(30)
        os._exit(0)
    time.sleep(linger)
    os._exit(0)
print(os.read(r, 32).decode().strip(), flush=True)
os.wait()
print("orphaned", flush=True)
time.sleep(30)
"""


@pytest.fixture
async def fallback(make_manager: MakeManager) -> CgroupManager:
    manager = await make_manager(kind=CgroupKind.NONE)
    assert manager.kind is CgroupKind.NONE
    assert manager.node_directories == []
    return manager


async def test_wrap_leaves_argv_alone(fallback: CgroupManager) -> None:
    cgroup = await fallback.create("plain", fallback.limits_for(128))
    assert cgroup.wrap(["sleep", "1"]) == ["sleep", "1"]


async def test_watchdog_kills_a_hog_and_reports_oom(fallback: CgroupManager, spawn: Spawn) -> None:
    limits = fallback.limits_for(100)
    cgroup = await fallback.create("hog", limits)
    process = await spawn(cgroup, python(SLOW_HOG))
    async with asyncio.timeout(15):
        assert await process.wait() == -9
    assert await cgroup.was_oom_killed()
    assert await cgroup.peak_memory_bytes() > limits.memory_bytes


async def test_watchdog_leaves_a_process_under_the_limit_alone(
    fallback: CgroupManager, spawn: Spawn
) -> None:
    cgroup = await fallback.create("quiet", fallback.limits_for(128))
    code = "import time\nx = b'x' * (20 << 20)\ntime.sleep(0.3)"
    process = await spawn(cgroup, python(code))
    assert await process.wait() == 0
    assert not await cgroup.was_oom_killed()
    assert 20 << 20 <= await cgroup.peak_memory_bytes() < 128 << 20


@pytest.mark.parametrize(
    ("linger", "mode"),
    [
        (0.3, "setsid"),  # seen in the tree before it was orphaned: remembered
        (0.0, "same-session"),  # orphaned at once: found through the session
    ],
)
async def test_kill_all_reaches_an_orphaned_grandchild(
    fallback: CgroupManager, spawn: Spawn, linger: float, mode: str
) -> None:
    cgroup = await fallback.create("tree", fallback.limits_for(256))
    process = await spawn(cgroup, [*python(ORPHANS_A_GRANDCHILD), str(linger), mode])
    grandchild = int(await read_line(process))
    assert await read_line(process) == "orphaned"
    assert psutil.Process(grandchild).ppid() != process.pid
    await cgroup.kill_all()
    assert await process.wait() == -9
    await wait_until(lambda: is_gone(grandchild))


async def test_remove_stops_the_watchdog_and_kills_the_tree(
    fallback: CgroupManager, spawn: Spawn
) -> None:
    cgroup = await fallback.create("rm", fallback.limits_for(128))
    process = await spawn(cgroup, ["sleep", "30"])
    await cgroup.remove()
    assert await process.wait() == -9
    assert fallback.environments == []


async def test_watchdog_lifecycle() -> None:
    process = await asyncio.create_subprocess_exec("sleep", "0.2")
    watchdog = MemoryWatchdog(process.pid, 1 << 30, interval_s=0.02)
    try:
        await watchdog.start()
        with pytest.raises(RuntimeError):
            await watchdog.start()
        assert watchdog.state.value == "running"
        await process.wait()
        await wait_until(lambda: watchdog.state is not WatchdogState.RUNNING)
        assert watchdog.state is WatchdogState.FINISHED  # the tree exited by itself
        assert 0 < watchdog.peak_bytes < 1 << 30
        assert not watchdog.was_tripped
    finally:
        await watchdog.stop()
        if process.returncode is None:
            os.kill(process.pid, 9)
            await process.wait()
    assert watchdog.state.value == "stopped"
