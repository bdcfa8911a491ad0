"""SnapStart templates: Init once, before-snapshot hooks, then restored copies as environments."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import MakeManager, cgroup_of, is_gone, wait_until
from zygote_support import FrameClient, write_code

from faas.errors import InitFailed
from faas.models import FunctionConfig
from faas.sandbox.cgroups import CgroupKind
from faas.sandbox.environment_cgroup import EnvironmentCgroup, KernelCgroup
from faas.sandbox.forked_process import ForkedProcess
from faas.sandbox.launcher import LaunchedRuntime, Launcher, signal_process_group
from faas.sandbox.namespaces import Isolation
from faas.sandbox.template import TemplateState

pytestmark = pytest.mark.timeout(60)

HOOKED = """
import json, os, random, time
from snapshot_restore_py import register_after_restore, register_before_snapshot

INIT_PID = os.getpid()
RECORD = os.path.join(os.environ["RECORD_DIR"], "hooks")
STATE = {"restored_in": None, "connected": "at init"}

def note(what):
    with open(RECORD, "a") as f:
        f.write(json.dumps([what, os.getpid()]) + "\\n")

@register_before_snapshot
def first_registered():
    note("before-snapshot first")

def disconnect(reason):
    note("before-snapshot " + reason)
    STATE["connected"] = None

register_before_snapshot(disconnect, "second")

@register_after_restore
def reconnect():
    note("after-restore")
    STATE["restored_in"] = os.getpid()
    STATE["connected"] = "after restore"
    print("restored", flush=True)

def handler(event, context):
    if event.get("write"):
        open("/tmp/mine", "w").write(event["write"])
    try:
        seen = open("/tmp/mine").read()
    except FileNotFoundError:
        seen = None
    return {"init_pid": INIT_PID, "pid": os.getpid(), "state": STATE,
            "init_type": os.environ["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "stream": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"], "random": random.random(),
            "tmp": seen, "faas": sorted(k for k in os.environ if k.startswith("_FAAS_"))}
"""

CONFIG = FunctionConfig(
    name="snap", runtime="python3.12", role="r", handler="app.handler",
    code_sha256_hex="00", code_size=1, revision_id="r1", last_modified="", version="1",
)  # fmt: skip


@pytest.fixture
async def launcher(make_manager: MakeManager, tmp_path: Path) -> AsyncIterator[Launcher]:
    manager = await make_manager()
    isolation = Isolation(tmp_path / "isolation", "")
    started = Launcher("us-east-1", 6 * 1024 * 1024, isolation, manager, spare_environments=0)
    await isolation.start(started.paths_needed([str(tmp_path)]))
    await started.start()
    yield started
    await started.stop()
    await isolation.stop()


async def _copy(
    launcher: Launcher, config: FunctionConfig, code_dir: str, env_id: str
) -> tuple[LaunchedRuntime, EnvironmentCgroup, FrameClient, str]:
    cgroup = await launcher.create_cgroup(config, env_id)
    launched = await launcher.launch(config, code_dir, env_id, cgroup)
    assert launched.control is not None
    client = FrameClient(launched.control)
    ready, logs = await client.receive_until("ready", "init_error")
    assert ready is not None and ready["t"] == "ready", logs
    return launched, cgroup, client, logs


async def _end(launched: LaunchedRuntime, cgroup: EnvironmentCgroup, client: FrameClient) -> None:
    client.close()
    signal_process_group(launched.process.pid, 9)
    await asyncio.wait_for(launched.process.wait(), 10)
    await cgroup.remove()


def _hooks_seen(record_dir: Path) -> list[list[Any]]:
    path = record_dir / "hooks"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def test_copies_skip_init_and_run_the_hooks_as_lambda_does(
    launcher: Launcher, tmp_path: Path
) -> None:
    record_dir = tmp_path / "record"
    record_dir.mkdir()
    config = dataclasses.replace(CONFIG, environment={"RECORD_DIR": str(record_dir)})
    code_dir = write_code(tmp_path / "code", {"app.py": HOOKED})
    output: list[bytes] = []
    template = await launcher.start_template(config, code_dir, log_output=output.append)
    assert template.state is TemplateState.READY and template.pid is not None
    assert launcher.template_of(config) is template
    # Before-snapshot hooks ran once, in the template, last registered first.
    assert _hooks_seen(record_dir) == [
        ["before-snapshot second", template.pid], ["before-snapshot first", template.pid],
    ]  # fmt: skip
    results = []
    for index in range(2):
        launched, cgroup, client, logs = await _copy(launcher, config, code_dir, f"copy{index}")
        assert isinstance(launched.process, ForkedProcess)
        assert logs == "restored\n"  # the after-restore hook's output is the copy's
        if launcher.cgroups.kind is CgroupKind.V1:
            assert isinstance(cgroup, KernelCgroup)
            memory = next(d for d in cgroup.directories if "/memory/" in str(d))
            assert cgroup_of(launched.process.pid, "memory").endswith("/" + memory.name)
        results.append(await client.invoke({"write": f"copy {index}"} if index == 0 else {}))
        await _end(launched, cgroup, client)
    for index, result in enumerate(results):
        assert result["init_pid"] == template.pid  # Init ran once, in the template
        assert result["pid"] != template.pid
        assert result["state"] == {"restored_in": result["pid"], "connected": "after restore"}
        assert result["init_type"] == "snap-start"
        assert result["faas"] == []
        assert result["tmp"] == ("copy 0" if index == 0 else None)  # /tmp is each copy's own
    assert results[0]["random"] != results[1]["random"]
    assert results[0]["stream"] != results[1]["stream"]
    restores = [entry for entry in _hooks_seen(record_dir) if entry[0] == "after-restore"]
    assert restores == [["after-restore", results[0]["pid"]], ["after-restore", results[1]["pid"]]]


async def test_a_failing_before_snapshot_hook_fails_the_template(
    launcher: Launcher, tmp_path: Path
) -> None:
    source = ("from snapshot_restore_py import register_before_snapshot\n"
              "register_before_snapshot(lambda: 1 / 0)\n"
              "def handler(event, context):\n    return 1\n")  # fmt: skip
    code_dir = write_code(tmp_path / "code", {"app.py": source})
    with pytest.raises(InitFailed) as failure:
        await launcher.start_template(CONFIG, code_dir)
    assert failure.value.error_type == "Runtime.BeforeSnapshotError"
    assert launcher.template_of(CONFIG) is None


async def test_an_init_error_fails_the_template(launcher: Launcher, tmp_path: Path) -> None:
    code_dir = write_code(tmp_path / "code", {"app.py": "import not_a_module\n"})
    with pytest.raises(InitFailed) as failure:
        await launcher.start_template(CONFIG, code_dir)
    assert failure.value.error_type == "Runtime.ImportModuleError"


async def test_stopping_the_template_ends_its_copies_and_launches_go_back_to_the_zygote(
    launcher: Launcher, tmp_path: Path
) -> None:
    record_dir = tmp_path / "record"
    record_dir.mkdir()
    config = dataclasses.replace(CONFIG, environment={"RECORD_DIR": str(record_dir)})
    code_dir = write_code(tmp_path / "code", {"app.py": HOOKED})
    template = await launcher.start_template(config, code_dir)
    launched, cgroup, client, _ = await _copy(launcher, config, code_dir, "copy")
    await launcher.stop_template(config)
    assert template.state is TemplateState.STOPPED
    await asyncio.wait_for(launched.process.wait(), 10)
    await wait_until(lambda: is_gone(launched.process.pid))
    await _end(launched, cgroup, client)
    launched, cgroup, client, _ = await _copy(launcher, config, code_dir, "fresh")
    result = await client.invoke()
    assert result["init_pid"] == result["pid"]  # a normal environment: its own Init
    assert result["init_type"] == "on-demand"
    await _end(launched, cgroup, client)
