"""The child side of a zygote fork: turn into one execution environment, then run the runtime.

Design notes: the steps are those the exec path takes through its argv prefix chain (the
node's faas/sandbox/environment_cgroup.py and namespaces.py), with the same exit statuses:
enter the cgroup (125 if refused), a private mount namespace with a private /tmp and the
layers read-only on /opt (126 if refused), Lambda's rlimits, the unprivileged user. Then the
interpreter is made to look as if `python -S -m faas_python_runtime` had just started with
the request's environment and working directory: stdio, environment (and TZ), sys.path,
sys.argv, signal dispositions and mask, a fresh `random` seed, `__main__`, and what /proc
shows. What a fresh interpreter derives from the environment once at start-up and cannot
redo later (PYTHON* options, the locale, the dynamic loader's LD_* variables, OpenSSL's
configuration) is the node's business: it forks only when those match the zygote's own and
execs otherwise. The hash seed of str and bytes is the one thing every fork shares.

The work comes in two phases. `_prepare` needs nothing of the environment: a new session,
death with the zygote, the cgroup, the mount namespace, the interpreter's generic state.
`_specialize` needs the request. A child forked for a `spawn` runs both at once; a child
forked for a `park` runs the first, tells the zygote it is ready, and waits for its
`spawn`: entering a cgroup costs the kernel an RCU grace period (milliseconds) when nothing
else has just done so, and a parked child has paid it already, and has rehearsed the
runtime's start (rehearsal.py) to take its copy-on-write faults early.
Nothing here may return into the zygote's loop: every path ends in `os._exit`.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import logging
import os
import random
import resource
import signal
import socket
import sys
import time
import types
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from .linux import CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, Libc
from .parent_death import die_with_parent
from .proctitle import ProcessAreas
from .rehearsal import rehearse
from .settings import CONTROL_FD_VAR, PARENT_PID_VAR, TEMPLATE_FD_VAR
from .zygote_protocol import IsolationSpec, ParkRequest, SpawnRequest

# Exit statuses shared with the exec path's wrappers (the node's environment_cgroup.py and
# namespaces.py): the cgroup refused us; the isolation (namespace, mounts, limits, user) failed.
CGROUP_FAILED_EXIT = 125
ISOLATION_FAILED_EXIT = 126
SETUP_FAILED_EXIT = 1
CONTROL_FD = 3  # where the control socket lands, as `_FAAS_CONTROL_FD` then says
TEMPLATE_FD = 4  # a SnapStart template's fork socket, as `_FAAS_TEMPLATE_FD` then says
_MAX_FD = 2**31 - 1
_MAX_REQUEST_BYTES = 64 * 1024
_MAX_REQUEST_FDS = 8
PARKED_READY = b"ready"  # what a parked child sends the zygote once it waits for its spawn
PARKED_NICENESS = 19
RUNTIME_PACKAGE = "faas_python_runtime"
# Packages outside the standard library that the zygote preimports: if the function's own path
# holds another copy, a fresh interpreter would have imported that one, so it is forgotten.
SHADOWABLE_PACKAGES = ("msgpack",)
_MODULE_SUFFIXES = (
    "",  # a package directory
    *importlib.machinery.SOURCE_SUFFIXES,
    *importlib.machinery.BYTECODE_SUFFIXES,
    *importlib.machinery.EXTENSION_SUFFIXES,
)


@dataclass(frozen=True, slots=True)
class ChildTemplate:
    """What the zygote found out about a fresh interpreter at its own start, for its children.

    Attributes:
        zygote_pid: the parent whose death must end each child.
        stdlib_path: sys.path after the PYTHONPATH entries (the interpreter's own part).
        signal_handlers: every signal's disposition at start-up, which is what the node
            gives any new process (restored in case code run before the fork changed them).
        signal_mask: the blocked signals at start-up.
        main_code: the code of `faas_python_runtime/__main__.py`, compiled once.
        main_spec: its module spec, for `__main__.__spec__` as `python -m` sets it.
        coerced_locale: LC_CTYPE as the interpreter set it at start-up when the locale was
            C (PEP 538); an exec'd runtime, started with the same LANG/LC_*, gets it too.
        areas: where /proc reads the command line and environment, if rewritable.
        libc: unshare, mount and prctl.
    """

    zygote_pid: int
    stdlib_path: tuple[str, ...]
    signal_handlers: dict[int, Any]  # Any: a handler is a callable, an int or a Handlers member
    signal_mask: frozenset[int]
    main_code: types.CodeType
    main_spec: importlib.machinery.ModuleSpec
    coerced_locale: str | None
    areas: ProcessAreas | None
    libc: Libc


class SetupFailed(Exception):
    """A setup step failed; the child exits with ``status``."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def spawn_child(
    request: SpawnRequest, template: ChildTemplate, release: Callable[[], object]
) -> NoReturn:
    """In a child just forked for ``request``: become the environment and run the runtime.

    Args:
        release: gives up (without closing) the zygote's own descriptor objects, whose numbers
            are about to be closed and reused.
    """

    def run() -> None:
        release()
        arrange_descriptors(request.fds)  # first: a failure below goes to the function's log
        _prepare(template, request.cgroup_procs, request.isolation.is_unshared)
        _specialize(request, template, is_unshared=request.isolation.is_unshared)
        _run_main(template)

    run_guarded(run)


def park_child(
    park: ParkRequest, channel_fd: int, template: ChildTemplate, release: Callable[[], object]
) -> NoReturn:
    """In a child just forked for ``park``: prepare, tell the zygote (on ``channel_fd``), wait
    for the `spawn` it forwards, then become that environment; exit 0 if none ever comes."""

    def run() -> None:
        release()
        _close_all_except({channel_fd})
        # Parking is background work: yield the CPU to whatever is starting or serving now
        # (as root only: nobody else may raise the priority back).
        priority = os.getpriority(os.PRIO_PROCESS, 0)
        if os.geteuid() == 0:
            os.setpriority(os.PRIO_PROCESS, 0, PARKED_NICENESS)
        _prepare(template, park.cgroup_procs, park.is_unshared)
        die_with_parent(template.zygote_pid)  # the runtime finds it armed: one thread less
        rehearse()
        if template.areas is not None:
            template.areas.touch()
        request = _await_request(channel_fd)
        if os.geteuid() == 0:
            os.setpriority(os.PRIO_PROCESS, 0, priority)
        arrange_descriptors(request.fds)
        _specialize(request, template, is_unshared=park.is_unshared)
        _run_main(template)

    run_guarded(run)


def run_guarded(run: Callable[[], None]) -> NoReturn:
    status = SETUP_FAILED_EXIT
    try:
        run()
    except SetupFailed as failed:
        report(str(failed))
        status = failed.status
    except BaseException as exc:  # process boundary: never return into the zygote
        report(f"faas-zygote: cannot start the environment: {exc!r}")
    os._exit(status)


def report(message: str) -> None:
    """Write ``message`` to stderr (the function's log once stdio is arranged)."""
    try:
        os.write(2, (message + "\n").encode("utf-8", "backslashreplace"))
    except OSError:
        pass  # nobody reads our stderr any more


# -- phase one: nothing of the environment needed ----------------------------------------


def _prepare(template: ChildTemplate, cgroup_procs: Collection[str], is_unshared: bool) -> None:
    os.setsid()
    template.libc.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != template.zygote_pid:
        os._exit(SETUP_FAILED_EXIT)  # the zygote died before we could ask to die with it
    enter_cgroup(cgroup_procs)
    if is_unshared:
        try:
            template.libc.unshare(CLONE_NEWNS)
            template.libc.mount(None, "/", MS_REC | MS_PRIVATE)
        except OSError as exc:
            raise SetupFailed(f"faas-isolate: {exc}", ISOLATION_FAILED_EXIT) from exc
    os.environ.clear()
    sys.path_importer_cache.clear()  # finders that listed directories as the zygote saw them
    _restore_signals(template)
    random.seed()


def _close_all_except(keep: Collection[int]) -> None:
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _MAX_FD)


def enter_cgroup(procs_files: Collection[str]) -> None:
    pid = str(os.getpid()).encode()
    for path in procs_files:
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        except OSError as exc:
            message = f"faas-cgroup: cannot enter {path}: {exc.strerror}"
            raise SetupFailed(message, CGROUP_FAILED_EXIT) from exc


def _restore_signals(template: ChildTemplate) -> None:
    for signum, handler in template.signal_handlers.items():
        if signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, template.signal_mask)


def _await_request(channel_fd: int) -> SpawnRequest:
    import msgpack

    channel = socket.socket(fileno=channel_fd)
    try:
        channel.send(PARKED_READY)
        data, fds, _, _ = socket.recv_fds(channel, _MAX_REQUEST_BYTES, _MAX_REQUEST_FDS)
        if not data:
            os._exit(0)  # discarded, or the zygote is gone
        return SpawnRequest.from_frame(msgpack.unpackb(data, raw=False), fds)
    finally:
        channel.close()


# -- phase two: this environment ---------------------------------------------------------


def _specialize(request: SpawnRequest, template: ChildTemplate, *, is_unshared: bool) -> None:
    """Everything after stdio: cwd, isolation, the interpreter's state."""
    os.chdir(request.cwd)
    # The exec path's wrapper shell exports PWD (as Lambda's environment has it), found as
    # the shell finds it: the physical cwd, before /tmp is covered.
    pwd = os.getcwd()
    _isolate(request.isolation, template.libc, is_unshared=is_unshared)
    _replace_interpreter_state(request, template, pwd)


def arrange_descriptors(fds: Mapping[str, int]) -> None:
    """stdin from /dev/null, stdout and stderr to the node's pipes, the control socket on 3;
    everything else (the zygote's socket, other children's pidfds) closed.

    A SnapStart template's fork socket, if any, goes on 4. A received descriptor that sits
    on 3 or 4 is moved first (dup2 would close it); with the lowest free number, never a
    high one: growing the descriptor table of a process with threads (a parked child has
    one) costs an RCU grace period.
    """
    slots = {"control": CONTROL_FD, "template": TEMPLATE_FD}
    parked = dict(fds)
    for name, fd in parked.items():
        if fd in slots.values() and slots.get(name) != fd:
            parked[name] = os.dup(fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(parked["stdout"], 1)
    os.dup2(parked["stderr"], 2)
    for name, slot in slots.items():
        if name in parked and parked[name] != slot:
            os.dup2(parked[name], slot)
    _close_all_except({slot for name, slot in slots.items() if name in parked})


def _isolate(spec: IsolationSpec, libc: Libc, *, is_unshared: bool) -> None:
    """What the exec path's `unshare`, mount script, `prlimit` and `setpriv` do."""
    try:
        if spec.tmp_directory is not None:
            make_tmp_directory(spec)
        if spec.is_unshared and spec.tmp_directory is not None:
            if not is_unshared:
                libc.unshare(CLONE_NEWNS)
                libc.mount(None, "/", MS_REC | MS_PRIVATE)
            _mount_private_tmp(spec, libc)
        if spec.max_open_files is not None:
            limit = spec.max_open_files
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        if spec.max_file_bytes is not None:
            limit = spec.max_file_bytes
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        if spec.uid is not None and spec.gid is not None:
            os.setgroups([])
            os.setgid(spec.gid)
            os.setuid(spec.uid)
            # Changing uid made us undumpable (our /proc files root's, even to ourselves);
            # an exec would have reset that, so do what the exec would have done.
            libc.set_dumpable(True)
    except (OSError, ValueError) as exc:
        raise SetupFailed(f"faas-isolate: {exc}", ISOLATION_FAILED_EXIT) from exc


def make_tmp_directory(spec: IsolationSpec) -> None:
    assert spec.tmp_directory is not None
    try:
        os.mkdir(spec.tmp_directory, 0o700)
    except FileExistsError:
        return  # made by an earlier attempt of this same environment
    if spec.uid is not None and spec.gid is not None:
        os.chown(spec.tmp_directory, spec.uid, spec.gid)


def _mount_private_tmp(spec: IsolationSpec, libc: Libc) -> None:
    assert spec.tmp_directory is not None
    private = spec.tmp_directory
    for path in spec.keep_paths:
        inside = private + path.removeprefix("/tmp")
        os.makedirs(inside, exist_ok=True)
        libc.mount(path, inside, MS_BIND)
    if spec.opt_directory is not None:
        libc.mount(spec.opt_directory, "/opt", MS_BIND)
        libc.mount(None, "/opt", MS_REMOUNT | MS_BIND | MS_RDONLY)
    libc.mount(private, "/tmp", MS_BIND | MS_REC)


def _replace_interpreter_state(request: SpawnRequest, template: ChildTemplate, pwd: str) -> None:
    env = dict(request.env)
    if template.coerced_locale is not None:
        env.setdefault("LC_CTYPE", template.coerced_locale)
    env["PWD"] = pwd
    env[PARENT_PID_VAR] = str(template.zygote_pid)
    if "control" in request.fds:
        env[CONTROL_FD_VAR] = str(CONTROL_FD)
    if "template" in request.fds:
        env[TEMPLATE_FD_VAR] = str(TEMPLATE_FD)
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    python_path = env.get("PYTHONPATH")
    # As the interpreter's getpath does: each PYTHONPATH entry made absolute, "" as the cwd.
    entries = [os.path.abspath(p) for p in python_path.split(os.pathsep)] if python_path else []
    sys.path[:] = [os.getcwd(), *entries, *template.stdlib_path]
    _forget_shadowed_packages()
    logging._startTime = time.time()  # type: ignore[attr-defined]  # relativeCreated's origin
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    sys.orig_argv = [sys.executable, "-S", "-m", RUNTIME_PACKAGE]
    sys.argv = [str(template.main_spec.origin)]
    if template.areas is not None:
        template.areas.rewrite(sys.orig_argv, env)


def _forget_shadowed_packages() -> None:
    """Drop preimported packages that the function's path would have found elsewhere first."""
    for name in SHADOWABLE_PACKAGES:
        module = sys.modules.get(name)
        if module is None or not _may_be_shadowed(name, module):
            continue
        spec = importlib.machinery.PathFinder.find_spec(name, sys.path)
        if spec is not None and spec.origin == getattr(module, "__file__", None):
            continue
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[loaded]
        # The frame transport imported it: import that again, lazily, with the other copy.
        sys.modules.pop(f"{RUNTIME_PACKAGE}.channel", None)


def _may_be_shadowed(name: str, module: types.ModuleType) -> bool:
    """Cheap test (a few stats, no directory listing): could a path entry before the one
    ``module`` came from hold another ``name``?"""
    origin = getattr(module, "__file__", None)
    if origin is None:
        return True
    home = os.path.dirname(origin)
    if os.path.basename(origin).startswith("__init__."):
        home = os.path.dirname(home)
    for entry in sys.path:
        if entry == home:
            return False
        base = os.path.join(entry, name)
        if any(os.path.exists(base + suffix) for suffix in _MODULE_SUFFIXES):
            return True
    return True  # its directory is no longer on the path at all


def birth_template() -> ChildTemplate | None:
    """What the zygote knew when it forked this process (None if it was exec'd)."""
    return _BIRTH.get("template")


# Set once, in a zygote's child, just before the runtime's main runs: a SnapStart template
# (template.py) needs it for the copies it forks. Nothing else in the process changes it.
_BIRTH: dict[str, ChildTemplate] = {}


def _run_main(template: ChildTemplate) -> None:
    """Run `__main__.py` as `python -m faas_python_runtime` does (runpy's `_run_code`)."""
    _BIRTH["template"] = template
    spec = template.main_spec
    main = types.ModuleType("__main__")
    main.__dict__.update(
        {
            "__file__": spec.origin,
            "__cached__": spec.cached,
            "__loader__": spec.loader,
            "__package__": spec.parent,
            "__spec__": spec,
            "__builtins__": builtins,
        }
    )
    sys.modules["__main__"] = main
    exec(template.main_code, main.__dict__)
