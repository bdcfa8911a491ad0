"""Spare environments: cgroups with a zygote child parked inside, handed out by the Launcher."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sandbox_support import MakeManager, cgroup_of, is_gone, require_kernel_cgroups, wait_until
from zygote_support import FrameClient, write_code

from faas.models import FunctionConfig
from faas.sandbox import cgroupfs
from faas.sandbox.cgroups import CgroupKind, CgroupManager
from faas.sandbox.environment_cgroup import KernelCgroup
from faas.sandbox.forked_process import ForkedProcess
from faas.sandbox.launcher import Launcher
from faas.sandbox.namespaces import Isolation

pytestmark = pytest.mark.timeout(60)

MIB = 1024 * 1024
HANDLER = "import os\ndef handler(event, context):\n    return {'pid': os.getpid()}\n"
CONFIG = FunctionConfig(
    name="spare", runtime="python3.12", role="r", handler="app.handler",
    code_sha256_hex="00", code_size=1, revision_id="r", last_modified="",
)  # fmt: skip


@pytest.fixture
async def launcher(make_manager: MakeManager, tmp_path: Path) -> AsyncIterator[Launcher]:
    manager = await make_manager()
    isolation = Isolation(tmp_path / "isolation", "")
    started = Launcher("us-east-1", 6 * MIB, isolation, manager, spare_environments=2)
    await isolation.start(started.paths_needed([str(tmp_path)]))
    await started.start()
    await wait_until(lambda: started.has_spares_ready, 20)
    yield started
    await started.stop()
    await isolation.stop()


def memory_limit(cgroup: KernelCgroup) -> int:
    memory = next(d for d in cgroup.directories if "/memory/" in str(d))
    return cgroupfs.read_int(memory / "memory.limit_in_bytes")


async def test_a_spare_cgroup_takes_any_memory_size(make_manager: MakeManager) -> None:
    manager: CgroupManager = await make_manager()
    require_kernel_cgroups(manager)
    for memory_mb in (3538, 128):  # above and below a spare's own limit
        spare = await manager.create_spare()
        assert spare.env_id.startswith("spare-")
        cgroup = await manager.assign(
            spare, f"env{memory_mb}", manager.limits_for(memory_mb), is_cpu_boosted=True
        )
        assert cgroup is spare and cgroup.env_id == f"env{memory_mb}"
        assert isinstance(cgroup, KernelCgroup)
        assert memory_limit(cgroup) == memory_mb * MIB
        if manager.kind is CgroupKind.V1:  # v1 renames a cgroup in use; v2 keeps its name
            assert {d.name for d in cgroup.directories} == {f"env{memory_mb}"}
        assert [c.env_id for c in manager.environments].count(f"env{memory_mb}") == 1
        await cgroup.set_init_boost(False)
        await cgroup.remove()
    with pytest.raises(ValueError, match="not a live cgroup"):
        await manager.assign(spare, "again", manager.limits_for(128))


async def test_a_python_environment_gets_a_spare_and_its_parked_child(
    launcher: Launcher, tmp_path: Path
) -> None:
    spares = dict(launcher.spare_environments)
    cgroup = await launcher.create_cgroup(CONFIG, "env0")
    assert cgroup.env_id == "env0"
    code_dir = write_code(tmp_path / "code", {"app.py": HANDLER})
    launched = await launcher.launch(CONFIG, code_dir, "env0", cgroup)
    assert isinstance(launched.process, ForkedProcess)
    assert launched.process.pid in spares
    if launcher.cgroups.kind is CgroupKind.V1:
        assert isinstance(cgroup, KernelCgroup)
        memory = next(d for d in cgroup.directories if "/memory/" in str(d))
        assert memory.name == "env0"
        assert cgroup_of(launched.process.pid, "memory").endswith("/env0")
    assert launched.control is not None
    client = FrameClient(launched.control)
    await client.receive_until("ready")
    assert (await client.invoke())["pid"] == launched.process.pid
    client.close()
    await asyncio.wait_for(launched.process.wait(), 10)
    await cgroup.remove()
    # The pool is topped up again, with other children.
    await wait_until(lambda: launcher.has_spares_ready, 20)
    assert launched.process.pid not in dict(launcher.spare_environments)


async def test_a_spare_whose_child_died_is_not_handed_out(launcher: Launcher) -> None:
    for pid, _ in launcher.spare_environments:
        os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: all(is_gone(pid) for pid, _ in launcher.spare_environments))
    cgroup = await launcher.create_cgroup(CONFIG, "env1")
    assert not cgroup.env_id.startswith("spare-") and cgroup.env_id == "env1"
    await cgroup.remove()
    await wait_until(lambda: launcher.has_spares_ready, 20)


async def test_an_environment_that_must_be_execd_discards_its_parked_child(
    launcher: Launcher, tmp_path: Path
) -> None:
    config = dataclasses.replace(CONFIG, environment={"PYTHONWARNINGS": "ignore"})
    spares = dict(launcher.spare_environments)
    cgroup = await launcher.create_cgroup(config, "env2")
    code_dir = write_code(tmp_path / "code", {"app.py": HANDLER})
    launched = await launcher.launch(config, code_dir, "env2", cgroup)
    assert not isinstance(launched.process, ForkedProcess)
    parked = next(pid for pid in spares if pid not in dict(launcher.spare_environments))
    await wait_until(lambda: is_gone(parked))
    assert launched.control is not None
    client = FrameClient(launched.control)
    await client.receive_until("ready")
    assert (await client.invoke())["pid"] == launched.process.pid
    client.close()
    await asyncio.wait_for(launched.process.wait(), 10)
    await cgroup.remove()


async def test_stop_removes_every_spare(launcher: Launcher) -> None:
    spares = launcher.spare_environments
    assert len(spares) == 2
    await launcher.stop()
    assert all(is_gone(pid) for pid, _ in spares)
    assert not any(c.env_id.startswith("spare-") for c in launcher.cgroups.environments)
