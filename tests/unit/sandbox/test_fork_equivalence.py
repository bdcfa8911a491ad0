"""A forked environment and an exec'd one, launched by the Launcher side by side, look the same.

Both start from the same function configuration, cgroup manager and isolation (a private
mount namespace when the node is root), and a probe handler reports everything a handler
could observe about its process; the two reports must agree except where they must not
(pids, the log stream, the random draw).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from sandbox_support import MakeManager, cgroup_of
from zygote_support import FrameClient, write_code

from faas.models import FunctionConfig
from faas.sandbox.cgroups import CgroupKind, CgroupManager
from faas.sandbox.forked_process import ForkedProcess
from faas.sandbox.launcher import LaunchedRuntime, Launcher, signal_process_group
from faas.sandbox.namespaces import Isolation, IsolationMode

pytestmark = pytest.mark.timeout(60)

PROBE = r"""
import ctypes, gc, locale, os, random, resource, signal, sys, threading, time
import __main__

def _fds():
    kinds = []
    for fd in sorted(int(n) for n in os.listdir("/proc/self/fd")):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        kinds.append(target.split(":")[0] if ":" in target else target)
    return sorted(kinds)

def _mounts():
    seen = {}
    for line in open("/proc/self/mountinfo"):
        fields = line.split()
        if fields[4] in ("/tmp", "/opt"):
            seen[fields[4]] = fields[5].split(",")[0]
    return seen

def _status():
    wanted = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
    return {line.split(":")[0]: line.split(":")[1].strip() for line in open("/proc/self/status")
            if line.split(":")[0] in wanted}

def handler(event, context):
    umask = os.umask(0); os.umask(umask)
    libc = ctypes.CDLL(None)
    env = dict(os.environ)
    env.pop("AWS_LAMBDA_LOG_STREAM_NAME")
    return {
        "env": env, "cwd": os.getcwd(), "path": sys.path, "argv": sys.argv,
        "orig_argv": sys.orig_argv, "flags": list(sys.flags), "executable": sys.executable,
        "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],
        "umask": umask, "session": [os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid()],
        "rlimits": {name: resource.getrlimit(getattr(resource, name))
                    for name in dir(resource) if name.startswith("RLIMIT_")},
        "signals": {int(s): repr(signal.getsignal(s)) for s in signal.valid_signals()
                    if s not in (signal.SIGKILL, signal.SIGSTOP)},
        "mask": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "status": _status(), "dumpable": libc.prctl(3, 0, 0, 0, 0),
        "environ_readable": os.access("/proc/self/environ", os.R_OK),
        "mounts": _mounts(), "fds": _fds(), "stdin": os.readlink("/proc/self/fd/0"),
        "mount_ns": os.readlink("/proc/self/ns/mnt"),
        "main": [__main__.__name__, __main__.__spec__.name, __main__.__file__],
        "stdout": type(sys.stdout).__name__, "tzname": list(time.tzname),
        "encodings": [sys.getfilesystemencoding(), locale.getpreferredencoding(False)],
        "threads": threading.active_count(), "gc": gc.isenabled(),
        "nice": os.getpriority(os.PRIO_PROCESS, 0), "affinity": sorted(os.sched_getaffinity(0)),
        "dont_write_bytecode": sys.dont_write_bytecode, "random": random.random(),
        "tmp_writable": os.access("/tmp", os.W_OK), "tmpdir": os.environ.get("TMPDIR"),
    }
"""
# Differ by design: a new draw per environment; and where the node's own namespace is.
EXPECTED_TO_DIFFER = {"random"}


@pytest.fixture
async def launchers(
    make_manager: MakeManager, tmp_path: Path
) -> AsyncIterator[tuple[Launcher, Launcher, CgroupManager]]:
    """(forking, exec-only) launchers over one cgroup manager and one isolation."""
    manager = await make_manager()
    isolation = Isolation(tmp_path / "isolation", "nobody")
    forking = Launcher("us-east-1", 6 * 1024 * 1024, isolation, manager)
    execing = Launcher("us-east-1", 6 * 1024 * 1024, isolation, manager, use_zygote=False)
    await isolation.start(forking.paths_needed([str(tmp_path)]))
    await forking.start()
    await execing.start()
    yield forking, execing, manager
    await forking.stop()
    await execing.stop()
    await isolation.stop()


async def _probe(
    launcher: Launcher, config: FunctionConfig, code_dir: str, env_id: str
) -> tuple[dict[str, Any], LaunchedRuntime, list[str]]:
    cgroup = await launcher.create_cgroup(config, env_id)
    launched = await launcher.launch(config, code_dir, env_id, cgroup)
    assert launched.control is not None
    client = FrameClient(launched.control)
    try:
        ready, logs = await client.receive_until("ready", "init_error")
        assert ready is not None and ready["t"] == "ready", logs
        probe = await client.invoke()
        command_line = psutil.Process(launched.process.pid).cmdline()
        if not isinstance(cgroup, type(None)) and launcher.cgroups.kind is CgroupKind.V1:
            memory_dir = next(d for d in cgroup.directories if "memory" in str(d))  # type: ignore[attr-defined]
            assert cgroup_of(launched.process.pid, "memory").endswith("/" + memory_dir.name)
    finally:
        client.close()
        signal_process_group(launched.process.pid, 9)
        await asyncio.wait_for(launched.process.wait(), 10)
        await cgroup.remove()
        await launcher.isolation.release(env_id)
    return probe, launched, command_line


async def test_forked_and_execd_environments_are_indistinguishable(
    launchers: tuple[Launcher, Launcher, CgroupManager], tmp_path: Path
) -> None:
    forking, execing, _ = launchers
    code_dir = write_code(tmp_path / "code", {"app.py": PROBE})
    config = FunctionConfig(
        name="probe", runtime="python3.12", role="r", handler="app.handler",
        code_sha256_hex="00", code_size=1, revision_id="r", last_modified="",
        environment={"USER_VARIABLE": "set"},
    )  # fmt: skip
    execd, exec_launch, exec_cmdline = await _probe(execing, config, code_dir, "exec0")
    forked, fork_launch, fork_cmdline = await _probe(forking, config, code_dir, "fork0")
    assert isinstance(fork_launch.process, ForkedProcess)
    assert not isinstance(exec_launch.process, ForkedProcess)
    assert fork_cmdline == exec_cmdline == [sys.executable, "-S", "-m", "faas_python_runtime"]
    if forking.isolation.mode is IsolationMode.TMPDIR:
        # Each environment's own directory, by its id.
        assert execd["tmpdir"].endswith("exec0") and forked["tmpdir"].endswith("fork0")
        for probe in (execd, forked):
            probe["env"].pop("TMPDIR")
            probe.pop("tmpdir")
    else:
        # Each in a mount namespace of its own (not compared with each other: the first is
        # gone before the second is made, and the kernel may reuse its inode number).
        assert forked["mount_ns"] != os.readlink("/proc/self/ns/mnt")
        assert execd["mount_ns"] != os.readlink("/proc/self/ns/mnt")
        assert forked["mounts"]["/tmp"] == "rw"
    for probe in (execd, forked):
        probe.pop("mount_ns")
    env_differences = {
        name: (execd["env"].get(name), forked["env"].get(name))
        for name in set(execd["env"]) | set(forked["env"])
        if execd["env"].get(name) != forked["env"].get(name)
    }
    assert env_differences == {}
    differences = {
        key: (execd.get(key), forked.get(key))
        for key in set(execd) | set(forked)
        if key not in EXPECTED_TO_DIFFER and execd.get(key) != forked.get(key)
    }
    assert differences == {}
    assert execd["random"] != forked["random"]
