"""The zygote for real: spawn and park requests, output, exit statuses, and the zygote's death."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import psutil
import pytest
from sandbox_support import is_gone, wait_until
from zygote_support import (
    PYTHON_PATH,
    FrameClient,
    fork_request,
    function_env,
    tmpdir_isolation,
    write_code,
)

from faas.sandbox.forked_process import ForkedProcess
from faas.sandbox.zygote import Zygote, ZygoteState, ZygoteUnavailable, is_startup_variable
from faas.sandbox.zygote_requests import ForkRequest

pytestmark = pytest.mark.timeout(60)

PROBE = """
import os, random, resource, sys
import __main__
def handler(event, context):
    return {
        "pid": os.getpid(), "ppid": os.getppid(), "pgid": os.getpgid(0),
        "cwd": os.getcwd(), "path": sys.path, "argv": sys.argv, "orig_argv": sys.orig_argv,
        "env": dict(os.environ), "main": __main__.__spec__.name,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        "fsize": resource.getrlimit(resource.RLIMIT_FSIZE),
        "random": random.random(), "dont_write_bytecode": sys.dont_write_bytecode,
    }
"""

Start = Callable[..., Awaitable[tuple[ForkedProcess, FrameClient]]]


@pytest.fixture
async def zygote() -> AsyncIterator[Zygote]:
    started = Zygote.for_native_runtime(PYTHON_PATH)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def start(zygote: Zygote, tmp_path: Path) -> AsyncIterator[Start]:
    """Factory: fork a runtime for ``files`` with a frame socket; all killed at teardown."""
    started: list[tuple[ForkedProcess, FrameClient]] = []

    async def fork(
        files: dict[str, str], env: dict[str, str] | None = None, **request: object
    ) -> tuple[ForkedProcess, FrameClient]:
        index = len(started)
        code_dir = write_code(tmp_path / f"code{index}", files)
        node_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            process = await zygote.spawn(
                fork_request(code_dir, tmp_path / f"tmp{index}", runtime_end, env),
                **request,  # type: ignore[arg-type]
            )
        finally:
            runtime_end.close()
        started.append((process, FrameClient(node_end)))
        return started[-1]

    yield fork
    for process, client in started:
        client.close()
        process.kill()
        await asyncio.wait_for(process.wait(), 10)


async def test_a_forked_runtime_runs_as_an_execd_one_would(start: Start, zygote: Zygote) -> None:
    process, client = await start({"app.py": PROBE}, function_env(EXTRA="value"))
    ready, _ = await client.receive_until("ready", "init_error")
    assert ready is not None and ready["t"] == "ready"
    probe = await client.invoke()
    assert probe["pid"] == process.pid
    assert probe["ppid"] == zygote.pid  # it dies with the zygote, which dies with the node
    assert probe["pgid"] == process.pid  # its own session, as start_new_session gives
    code_dir = probe["cwd"]
    assert probe["env"]["EXTRA"] == "value"
    assert probe["env"]["TMPDIR"].endswith("tmp0")
    assert not any(name.startswith("_FAAS_") for name in probe["env"])
    assert probe["argv"] == [main_path()]
    assert probe["orig_argv"] == [sys.executable, "-S", "-m", "faas_python_runtime"]
    assert probe["main"] == "faas_python_runtime.__main__"
    assert probe["nofile"] == [1024, 1024]
    assert probe["fsize"] == [512 * 1024 * 1024] * 2
    assert probe["dont_write_bytecode"] is True
    # sys.path as a fresh `python -S -m` with this PYTHONPATH and cwd has it (plus the
    # code directory the runtime itself puts first).
    fresh = await asyncio.create_subprocess_exec(
        sys.executable, "-S", "-c", "import sys; print(repr(sys.path))",
        cwd=code_dir, env={"PYTHONPATH": PYTHON_PATH}, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    printed, _ = await fresh.communicate()
    expected = ast.literal_eval(printed.decode())
    assert probe["path"] == [code_dir, code_dir, *expected[1:]]


def main_path() -> str:
    import faas_python_runtime

    return os.path.join(os.path.dirname(os.path.realpath(faas_python_runtime.__file__)),
                        "__main__.py")  # fmt: skip


async def test_proc_shows_the_command_line_and_environment_of_an_execd_runtime(
    start: Start,
) -> None:
    process, client = await start({"app.py": PROBE})
    await client.receive_until("ready")
    shown = psutil.Process(process.pid)
    assert shown.cmdline() == [sys.executable, "-S", "-m", "faas_python_runtime"]
    assert shown.environ()["AWS_LAMBDA_FUNCTION_NAME"] == "fn"


async def test_two_forks_draw_different_random_numbers(start: Start) -> None:
    draws = []
    for _ in range(2):
        _, client = await start({"app.py": PROBE})
        await client.receive_until("ready")
        draws.append((await client.invoke())["random"])
    assert draws[0] != draws[1]


async def test_output_written_to_file_descriptors_reaches_the_pipes(start: Start) -> None:
    code = {"app.py": "import os\nos.write(1, b'to stdout\\n')\nos.write(2, b'to stderr\\n')\n"
            "def handler(event, context):\n    return 1\n"}  # fmt: skip
    process, client = await start(code)
    await client.receive_until("ready")
    assert await process.stdout.readline() == b"to stdout\n"
    assert await process.stderr.readline() == b"to stderr\n"


async def test_exit_status_is_reported(start: Start) -> None:
    process, client = await start({"app.py": "import os\nos._exit(7)\n"})
    assert await asyncio.wait_for(process.wait(), 10) == 7
    assert process.returncode == 7
    assert await client.receive() is None


async def test_a_signal_is_reported_as_asyncio_does(start: Start) -> None:
    process, client = await start({"app.py": PROBE})
    await client.receive_until("ready")
    os.kill(process.pid, signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGTERM


async def test_isolation_failures_exit_as_the_exec_wrappers_do(
    zygote: Zygote, tmp_path: Path
) -> None:
    code_dir = write_code(tmp_path / "code", {"app.py": PROBE})
    request = fork_request(code_dir, tmp_path / "tmp", None,
                           cgroup_procs=[str(tmp_path / "no-cgroup" / "cgroup.procs")])  # fmt: skip
    process = await zygote.spawn(request)
    assert await asyncio.wait_for(process.wait(), 10) == 125
    assert b"faas-cgroup: cannot enter" in await process.stderr.read()


async def test_a_parked_child_becomes_the_environment(start: Start, zygote: Zygote) -> None:
    parked = await zygote.park([], is_unshared=False)
    assert parked.is_waiting and psutil.pid_exists(parked.pid)
    process, client = await start({"app.py": PROBE}, parked=parked)
    assert process.pid == parked.pid
    await client.receive_until("ready")
    probe = await client.invoke()
    assert probe["pid"] == parked.pid
    assert probe["nofile"] == [1024, 1024]
    assert not parked.is_waiting


async def test_a_discarded_parked_child_ends(zygote: Zygote) -> None:
    parked = await zygote.park([], is_unshared=False)
    zygote.discard(parked)
    await wait_until(lambda: parked.returncode is not None)
    assert parked.returncode == -signal.SIGKILL
    assert is_gone(parked.pid)


async def test_when_the_zygote_dies_its_children_die_and_the_next_spawn_restarts_it(
    start: Start, zygote: Zygote
) -> None:
    process, client = await start({"app.py": PROBE})
    await client.receive_until("ready")
    parked = await zygote.park([], is_unshared=False)
    old_pid = zygote.pid
    assert old_pid is not None
    os.kill(old_pid, signal.SIGKILL)
    # The runtime dies with its parent (PR_SET_PDEATHSIG); its wait still resolves.
    assert await asyncio.wait_for(process.wait(), 10) == -signal.SIGKILL
    await wait_until(lambda: is_gone(process.pid) and is_gone(parked.pid))
    assert zygote.state is ZygoteState.LOST
    assert not parked.is_waiting
    _, client = await start({"app.py": PROBE}, parked=parked)
    assert zygote.state is ZygoteState.RUNNING and zygote.pid not in (None, old_pid)
    await client.receive_until("ready")
    assert (await client.invoke())["ppid"] == zygote.pid


async def test_stop_ends_the_zygote_and_then_refuses(zygote: Zygote, tmp_path: Path) -> None:
    pid = zygote.pid
    assert pid is not None
    await zygote.stop()
    assert is_gone(pid)
    with pytest.raises(ZygoteUnavailable):
        await zygote.spawn(fork_request(str(tmp_path), tmp_path / "tmp", None))


async def test_a_spawn_given_up_before_its_answer_leaves_no_child(
    zygote: Zygote, tmp_path: Path
) -> None:
    code_dir = write_code(tmp_path / "code", {"app.py": PROBE})
    task = asyncio.create_task(zygote.spawn(fork_request(code_dir, tmp_path / "tmp", None)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    zygote_pid = zygote.pid
    assert zygote_pid is not None
    await wait_until(lambda: not psutil.Process(zygote_pid).children())


def test_only_start_up_variables_must_match_the_zygote() -> None:
    assert is_startup_variable("PYTHONWARNINGS") and is_startup_variable("LC_ALL")
    assert is_startup_variable("LD_PRELOAD") and is_startup_variable("LANG")
    assert not is_startup_variable("PYTHONPATH") and not is_startup_variable("TZ")
    zygote = Zygote.for_native_runtime(PYTHON_PATH)
    assert zygote.can_fork(function_env(PYTHONPATH="/somewhere", TZ="Europe/Paris"))
    assert not zygote.can_fork(function_env(PYTHONWARNINGS="error"))
    assert not zygote.can_fork(function_env(LANG="C"))
    assert not zygote.can_fork({k: v for k, v in function_env().items() if k != "LANG"})


WHO = """
import os
def handler(event, context):
    with open("/tmp/mine", "w") as f:
        f.write("x")
    return {"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getgroups()],
            "environ_readable": os.access("/proc/self/environ", os.R_OK),
            "tmp_owner": os.stat("/tmp").st_uid}
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="only root drops an environment to another user")
async def test_a_fork_drops_to_the_unprivileged_user_as_setpriv_does(zygote: Zygote) -> None:
    nobody = pwd.getpwnam("nobody")
    root = Path(tempfile.mkdtemp(prefix="faas-zygote-", dir="/var/tmp"))
    try:
        os.chmod(root, 0o755)  # the user must reach its code
        code_dir = write_code(root / "code", {"app.py": WHO})
        node_end, runtime_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        isolation = dataclasses.replace(
            tmpdir_isolation(root / "tmp"),
            is_unshared=True,
            user_ids=(nobody.pw_uid, nobody.pw_gid),
            env={"TMPDIR": "/tmp"},
        )
        request = ForkRequest({**function_env(), **isolation.env}, code_dir, [], isolation,
                              runtime_end)  # fmt: skip
        try:
            process = await zygote.spawn(request)
        finally:
            runtime_end.close()
        client = FrameClient(node_end)
        ready, logs = await client.receive_until("ready", "init_error")
        assert ready is not None and ready["t"] == "ready", logs
        who = await client.invoke()
        uid, gid = nobody.pw_uid, nobody.pw_gid
        assert who["ids"] == [uid, uid, gid, []]
        assert who["environ_readable"] is True  # dumpable again, as after an exec
        assert who["tmp_owner"] == uid  # its own /tmp, made for it
        assert (root / "tmp" / "mine").exists()
        client.close()
        process.kill()
        await asyncio.wait_for(process.wait(), 10)
    finally:
        shutil.rmtree(root, ignore_errors=True)
