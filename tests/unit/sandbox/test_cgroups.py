"""Real cgroups: detection, entering before exec, OOM kills, CPU quota, pids, kill and cleanup."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import psutil
import pytest
from sandbox_support import (
    MakeManager,
    Spawn,
    cgroup_of,
    is_gone,
    python,
    read_line,
    require_kernel_cgroups,
    unique_node_id,
    wait_until,
)

from faas.errors import PlatformError
from faas.sandbox import cgroupfs
from faas.sandbox.cgroups import (
    WRAP_FAILED_EXIT,
    CgroupKind,
    CgroupManager,
    CgroupState,
    ManagerState,
    RunAs,
)

pytestmark = pytest.mark.timeout(30)

SLEEPER = ["sleep", "30"]

# Forks a child that prints its pid; both then sleep.
FORKS_A_CHILD = """
import subprocess, time
child = subprocess.Popen(["sleep", "30"], stdout=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(30)
"""

# Touches 10 MB at a time up to 300 MB, so RSS really grows.
HOG_300MB = """
import time
chunks = []
for _ in range(30):
    chunks.append(b"x" * (10 << 20))
print("survived", flush=True)
time.sleep(30)
"""

# A child forks a grandchild and exits; the grandchild calls setsid() and is orphaned.
DETACHES_A_GRANDCHILD = """
import os, time
r, w = os.pipe()
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        os.write(w, b"%d\\n" % os.getpid())
        time.sleep(30)
        os._exit(0)
    os._exit(0)
os.wait()
print(os.read(r, 32).decode().strip(), flush=True)
time.sleep(30)
"""

# Forks until the kernel refuses (bounded at 200), then reports how many it got.
FORK_BOMB = """
import os, time
started = 0
refused = False
for _ in range(200):
    try:
        pid = os.fork()
    except OSError:
        refused = True
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    started += 1
print(started, refused, flush=True)
time.sleep(30)
"""


def expected_kind() -> CgroupKind:
    """What the host offers, read independently of the manager: v2 if its unified
    hierarchy has memory and cpu, else v1 (this CI machine: v2 there holds only hugetlb)."""
    for mount in cgroupfs.read_mounts():
        if mount.fstype == "cgroup2":
            controllers = (Path(mount.mount_point) / "cgroup.controllers").read_text().split()
            if {"memory", "cpu"} <= set(controllers):
                return CgroupKind.V2
    return CgroupKind.V1


async def test_detection_picks_the_kernel_backend_and_logs_it(
    make_manager: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="faas.sandbox.cgroups"):
        manager = await make_manager()
    require_kernel_cgroups(manager)
    assert manager.kind is expected_kind()
    assert f"cgroups: {manager.kind.value}" in caplog.text
    for directory in manager.node_directories:
        assert directory.is_dir()
        assert directory.parent.name == "faas"


async def test_wrapped_process_and_its_child_are_born_inside(
    kernel_manager: CgroupManager, spawn: Spawn
) -> None:
    cgroup = await kernel_manager.create("env-a", kernel_manager.limits_for(256))
    process = await spawn(cgroup, python(FORKS_A_CHILD))
    child_pid = int(await read_line(process))
    controllers = ["memory", "cpu", "pids"] if kernel_manager.kind is CgroupKind.V1 else [""]
    for controller in controllers:
        for pid in (process.pid, child_pid):
            assert cgroup_of(pid, controller).endswith(f"/faas/{_node(kernel_manager)}/env-a")
    # The launcher's process is the program itself (the wrapper exec'd it, same pid).
    assert psutil.Process(process.pid).cmdline()[:2] == python("")[:2]


async def test_adopt_moves_a_process_started_elsewhere(kernel_manager: CgroupManager) -> None:
    cgroup = await kernel_manager.create("adopted", kernel_manager.limits_for(128))
    process = await asyncio.create_subprocess_exec(*SLEEPER, start_new_session=True)
    try:
        assert not cgroup_of(process.pid, _controller(cgroup.kind)).endswith("/adopted")
        await cgroup.adopt(process.pid)
        await cgroup.attach(process.pid)
        assert cgroup_of(process.pid, _controller(cgroup.kind)).endswith("/adopted")
        await cgroup.kill_all()
        assert await process.wait() == -9
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_memory_hog_is_killed_by_the_kernel(
    kernel_manager: CgroupManager, spawn: Spawn
) -> None:
    limits = kernel_manager.limits_for(128)
    cgroup = await kernel_manager.create("hog", limits)
    process = await spawn(cgroup, python(HOG_300MB))
    async with asyncio.timeout(15):
        assert await process.wait() == -9
    assert await cgroup.was_oom_killed()
    peak = await cgroup.peak_memory_bytes()
    assert 0.9 * limits.memory_bytes <= peak <= limits.memory_bytes
    # The figures survive removal, for a REPORT line written after the environment is gone.
    await cgroup.remove()
    assert await cgroup.was_oom_killed()
    assert await cgroup.peak_memory_bytes() == peak


async def test_a_quiet_process_is_not_oom_killed(
    kernel_manager: CgroupManager, spawn: Spawn
) -> None:
    cgroup = await kernel_manager.create("quiet", kernel_manager.limits_for(128))
    process = await spawn(cgroup, python("x = b'x' * (20 << 20)"))
    assert await process.wait() == 0
    assert not await cgroup.was_oom_killed()
    assert 20 << 20 <= await cgroup.peak_memory_bytes() < 128 << 20


async def test_cpu_bound_child_at_885_mb_gets_half_a_core(
    kernel_manager: CgroupManager, spawn: Spawn
) -> None:
    cgroup = await kernel_manager.create("spin", kernel_manager.limits_for(885))
    process = await spawn(cgroup, python("print('go', flush=True)\nwhile True: pass"))
    assert await read_line(process) == "go"
    loop = asyncio.get_running_loop()
    spinner = psutil.Process(process.pid)
    cpu_before, wall_before = sum(spinner.cpu_times()[:2]), loop.time()
    await asyncio.sleep(1.5)
    cpu_after, wall_after = sum(spinner.cpu_times()[:2]), loop.time()
    cores = (cpu_after - cpu_before) / (wall_after - wall_before)
    assert 0.35 <= cores <= 0.65, f"got {cores:.2f} cores"


async def test_pids_limit_stops_a_fork_bomb(kernel_manager: CgroupManager, spawn: Spawn) -> None:
    cgroup = await kernel_manager.create("bomb", kernel_manager.limits_for(256, pids_max=20))
    process = await spawn(cgroup, python(FORK_BOMB))
    started, refused = (await read_line(process)).split()
    assert refused == "True"
    assert int(started) < 20  # the bomb itself is one of the 20
    await cgroup.kill_all()
    assert await process.wait() == -9


async def test_kill_all_reaches_a_grandchild_that_left_the_session(
    kernel_manager: CgroupManager, spawn: Spawn
) -> None:
    cgroup = await kernel_manager.create("tree", kernel_manager.limits_for(256))
    process = await spawn(cgroup, python(DETACHES_A_GRANDCHILD))
    grandchild = int(await read_line(process))
    assert os.getsid(grandchild) == grandchild != os.getsid(process.pid)
    await cgroup.kill_all()
    assert await process.wait() == -9
    assert is_gone(grandchild)


async def test_stop_kills_what_is_left_and_removes_every_directory(
    make_manager: MakeManager, spawn: Spawn
) -> None:
    manager = await make_manager()
    require_kernel_cgroups(manager)
    busy = await manager.create("busy", manager.limits_for(128))
    idle = await manager.create("idle", manager.limits_for(128))
    process = await spawn(busy, python(DETACHES_A_GRANDCHILD))
    grandchild = int(await read_line(process))
    created = [*manager.node_directories, *busy.directories, *idle.directories]  # type: ignore[attr-defined]
    assert all(path.is_dir() for path in created)
    await manager.stop()
    assert manager.state is ManagerState.STOPPED
    assert busy.state is idle.state is CgroupState.REMOVED
    assert await process.wait() == -9
    assert is_gone(grandchild)
    assert not any(path.exists() for path in created)
    await manager.stop()  # idempotent


async def test_remove_is_idempotent_and_frees_the_id(
    kernel_manager: CgroupManager, spawn: Spawn
) -> None:
    cgroup = await kernel_manager.create("again", kernel_manager.limits_for(128))
    process = await spawn(cgroup, SLEEPER)
    await cgroup.remove()
    await cgroup.remove()
    assert await process.wait() == -9
    assert not any(path.exists() for path in cgroup.directories)  # type: ignore[attr-defined]
    assert kernel_manager.environments == []
    with pytest.raises(RuntimeError):
        cgroup.wrap(SLEEPER)
    again = await kernel_manager.create("again", kernel_manager.limits_for(128))
    assert again.state is CgroupState.ACTIVE


async def test_program_never_runs_unconfined_if_entering_fails(
    kernel_manager: CgroupManager,
) -> None:
    cgroup = await kernel_manager.create("gone", kernel_manager.limits_for(128))
    argv = cgroup.wrap(python("print('ran', flush=True)"))
    await cgroup.remove()
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    stdout, _ = await process.communicate()
    assert process.returncode == WRAP_FAILED_EXIT
    assert stdout == b""


async def test_run_as_drops_privileges_after_entering(
    kernel_manager: CgroupManager, spawn: Spawn
) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can switch users")
    cgroup = await kernel_manager.create("nobody", kernel_manager.limits_for(128))
    process = await spawn(cgroup, SLEEPER, run_as=RunAs(uid=65534, gid=65534))
    sleeper = psutil.Process(process.pid)
    await wait_until(lambda: sleeper.name() == "sleep", 10)  # setpriv has exec'd sleep
    assert sleeper.uids().effective == sleeper.uids().real == 65534
    assert sleeper.gids().effective == 65534
    assert sleeper.name() == "sleep"
    assert cgroup_of(process.pid, _controller(cgroup.kind)).endswith("/nobody")


async def test_a_node_id_in_use_is_refused(kernel_manager: CgroupManager) -> None:
    twin = CgroupManager(_node(kernel_manager))
    with pytest.raises(PlatformError, match="in use"):
        await twin.start()
    # The refused twin removed nothing of the running node's.
    assert all(path.is_dir() for path in kernel_manager.node_directories)


async def test_ids_and_states_are_checked(kernel_manager: CgroupManager) -> None:
    with pytest.raises(ValueError):
        await kernel_manager.create("../escape", kernel_manager.limits_for(128))
    await kernel_manager.create("dup", kernel_manager.limits_for(128))
    with pytest.raises(ValueError):
        await kernel_manager.create("dup", kernel_manager.limits_for(128))
    fresh = CgroupManager(unique_node_id())
    with pytest.raises(RuntimeError):
        await fresh.create("x", kernel_manager.limits_for(128))
    with pytest.raises(RuntimeError):
        _ = fresh.kind


async def test_an_unusable_forced_backend_fails_to_start() -> None:
    if expected_kind() is CgroupKind.V2:
        pytest.skip("this host has a usable cgroup v2")
    manager = CgroupManager(unique_node_id(), kind=CgroupKind.V2)
    with pytest.raises(PlatformError, match="v2"):
        await manager.start()
    assert manager.state is ManagerState.NEW


def _controller(kind: CgroupKind) -> str:
    return "memory" if kind is CgroupKind.V1 else ""


def _node(manager: CgroupManager) -> str:
    return manager.node_directories[0].name


async def test_without_rights_kernel_tests_skip_locally_and_fail_in_ci(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    fallback = await make_manager(kind=CgroupKind.NONE)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        require_kernel_cgroups(fallback)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        require_kernel_cgroups(fallback)
