"""SnapStart: an environment initialized once (a template) forks restored copies of itself.

Design notes: a template is a zygote child started as an environment of the function
version, with `_FAAS_TEMPLATE_FD` naming a second socket. It runs Init like any
environment (imports the handler, sends `ready` on its frame socket) and then, instead of
serving invokes, becomes a fork server on that socket (fork_server.py): `snapshot` runs the
before-snapshot hooks (snapshot_restore_py), and each `spawn` forks a restored copy. A copy
keeps the template's memory (the imported handler and whatever Init built) and changes
what must be its own: a new session, stdio and frame socket (on descriptor 3, so the
template's frame channel object now talks to the node over the copy's socket), the
environment's cgroup, its own mount namespace with its own /tmp, the environment's
variables (AWS_LAMBDA_INITIALIZATION_TYPE=snap-start), a new random seed; then it runs the
after-restore hooks, says `ready`, and serves invokes. Templates run as the node's user
only: a copy must still be able to enter its cgroup and mount its /tmp, which an
unprivileged template could not; the node execs or forks from the zygote otherwise.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

from .boundary import exit_after
from .channel import Channel
from .errors import error_from_exception, format_error_log
from .fork_child import (
    ISOLATION_FAILED_EXIT,
    SetupFailed,
    arrange_descriptors,
    birth_template,
    enter_cgroup,
    make_tmp_directory,
    run_guarded,
)
from .fork_server import ForkServer
from .invoker import Invoker
from .linux import CLONE_NEWNS, MS_BIND, MS_PRIVATE, MS_REC, Libc
from .output import OutputCapture
from .parent_death import die_with_parent
from .settings import CONTROL_FD_VAR, RuntimeSettings
from .zygote_protocol import IsolationSpec, SpawnRequest

BEFORE_SNAPSHOT_ERROR = "Runtime.BeforeSnapshotError"
AFTER_RESTORE_ERROR = "Runtime.AfterRestoreError"
HOOKS_MODULE = "snapshot_restore_py"

Frame = dict[str, Any]  # Any: msgpack map values


class Template:
    """The template's side: its initialized runtime, and what each copy needs of it."""

    __slots__ = ("_capture", "_invoker", "_libc", "_pid", "_transport")

    def __init__(self, transport: Channel, capture: OutputCapture, invoker: Invoker) -> None:
        self._transport = transport
        self._capture = capture
        self._invoker = invoker
        self._libc = Libc()
        self._pid = os.getpid()

    def snapshot(self, frame: Frame) -> Frame:
        """`snapshot`: run the before-snapshot hooks, last registered first.

        Raises:
            ValueError: a hook raised; its message is Lambda's error JSON.
        """
        hooks = _hooks("get_before_snapshot")
        try:
            for func, args, kwargs in reversed(hooks):
                func(*args, **kwargs)
        except Exception as exc:
            raise ValueError(json.dumps(self._log_error(exc, BEFORE_SNAPSHOT_ERROR))) from exc
        finally:
            self._capture.sink.flush()
        return {"hooks": len(hooks)}

    def restore(self, request: SpawnRequest, release: Callable[[], object]) -> NoReturn:
        """In a child just forked for ``request``: become that environment, serve invokes."""
        run_guarded(lambda: self._become(request, release))

    def _become(self, request: SpawnRequest, release: Callable[[], object]) -> None:
        release()
        arrange_descriptors(request.fds)
        os.setsid()
        self._libc.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != self._pid:
            os._exit(1)  # the template died before we could ask to die with it
        enter_cgroup(request.cgroup_procs)
        pwd = os.getcwd()
        _isolate_copy(request.isolation, self._libc)
        env = dict(request.env)
        if "LC_CTYPE" in os.environ:  # the interpreter's locale coercion, as at its start
            env.setdefault("LC_CTYPE", os.environ["LC_CTYPE"])
        env["PWD"] = pwd
        env[CONTROL_FD_VAR] = "3"
        os.environ.clear()
        os.environ.update(env)
        time.tzset()
        settings = RuntimeSettings.take_from(os.environ)
        self._transport.use_peak_memory_file(settings.peak_memory_file)
        random.seed()
        birth = birth_template()
        if birth is not None and birth.areas is not None:
            birth.areas.rewrite(sys.orig_argv, env)
        die_with_parent(self._pid)  # threads do not survive a fork: arm it again
        started = time.perf_counter()
        try:
            for func, args, kwargs in _hooks("get_after_restore"):
                func(*args, **kwargs)
        except Exception as exc:
            self._transport.send_init_error(self._log_error(exc, AFTER_RESTORE_ERROR))
            os._exit(1)
        self._capture.sink.flush()
        self._transport.send_ready((time.perf_counter() - started) * 1000)
        exit_after(self._invoker.serve)

    def _log_error(self, exc: BaseException, error_type: str) -> dict[str, Any]:
        error = error_from_exception(exc)
        error["errorType"] = error_type
        error["errorMessage"] = f"{type(exc).__name__}: {exc}"
        self._capture.sink.write_text(format_error_log(error))
        self._capture.sink.flush()
        return error


def serve_template(
    settings: RuntimeSettings, transport: Any, capture: OutputCapture, invoker: Invoker
) -> int:
    """After Init: serve `snapshot` and `spawn` on the template socket until the node closes it.

    ``transport`` must be the frame channel (templates speak frames only).
    """
    if not isinstance(transport, Channel) or settings.template_fd is None:
        raise RuntimeError("a template needs the frame transport and a template socket")
    template = Template(transport, capture, invoker)
    sock = socket.socket(fileno=settings.template_fd)
    ForkServer(sock, template.restore, on_call=_calls(template)).serve()
    return 0


def _calls(template: Template) -> Callable[[Frame], Frame]:
    def call(frame: Frame) -> Frame:
        if frame.get("t") == "snapshot":
            return template.snapshot(frame)
        raise ValueError(f"unknown request {frame.get('t')!r}")

    return call


def _hooks(getter: str) -> list[Any]:
    """The hooks registered with whichever snapshot_restore_py the function imported."""
    module = sys.modules.get(HOOKS_MODULE)
    if module is None:
        return []
    return list(getattr(module, getter)())


def _isolate_copy(spec: IsolationSpec, libc: Libc) -> None:
    """The copy's own /tmp: a new mount namespace (from the template's, /opt and all) with
    its private directory on /tmp; the paths kept under /tmp are bound again from the
    template's view. Lambda's rlimits, as the template has them already."""
    if spec.uid is not None:
        raise SetupFailed("faas-isolate: templates run as the node's user", ISOLATION_FAILED_EXIT)
    try:
        if spec.tmp_directory is not None:
            make_tmp_directory(spec)
            if spec.is_unshared:
                libc.unshare(CLONE_NEWNS)
                libc.mount(None, "/", MS_REC | MS_PRIVATE)
                for path in spec.keep_paths:
                    inside = spec.tmp_directory + path.removeprefix("/tmp")
                    os.makedirs(inside, exist_ok=True)
                    libc.mount(path, inside, MS_BIND)
                libc.mount(spec.tmp_directory, "/tmp", MS_BIND | MS_REC)
        if spec.max_open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (spec.max_open_files,) * 2)
        if spec.max_file_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (spec.max_file_bytes,) * 2)
    except (OSError, ValueError) as exc:
        raise SetupFailed(f"faas-isolate: {exc}", ISOLATION_FAILED_EXIT) from exc
