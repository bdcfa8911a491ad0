"""`python -S -m faas_python_runtime.zygote`: the runtime, preimported, forking environments.

Started once by the node with one end of a Unix SOCK_SEQPACKET socket inherited as
`_FAAS_ZYGOTE_FD` (PROTOCOL.md, "The zygote"). It imports everything the runtime and
typical handlers need, says `ready`, then forks one child per `spawn` request, which
becomes an execution environment (fork_child.py), or per `park` request, which gets as far
as it can without one and waits until a `spawn` names it. It reaps its children and reports
their exit statuses, and exits when the node closes the socket.

Design notes: the zygote stays single-threaded and never installs a signal handler, so a
fork is safe and each child starts from the signal state a fresh interpreter has. Children
are watched through pidfds in the same poll set as the socket: no SIGCHLD handler, no
threads. The zygote dies with the node (PR_SET_PDEATHSIG, SIGKILL); each child's runtime
dies with the zygote the same way (its `_FAAS_PARENT_PID` names the zygote), so the whole
tree goes when the node does. Nothing of the node's environment reaches the zygote: the
node starts it with a minimal one, and each child gets exactly the request's.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import pkgutil
import signal
import socket
import sys
from typing import Any

from .fork_child import ChildTemplate, park_child, spawn_child
from .fork_server import ForkServer
from .linux import Libc
from .proctitle import ProcessAreas

ZYGOTE_FD_VAR = "_FAAS_ZYGOTE_FD"
ZYGOTE_PARENT_VAR = "_FAAS_ZYGOTE_PARENT_PID"
# The first variable of the zygote's environment: filler whose bytes each child overwrites with
# its own environment, so /proc/<pid>/environ shows it (proctitle.py).
ENVIRON_ROOM_VAR = "_FAAS_ZYGOTE_ENVIRON_ROOM"
STARTUP_FAILED_EXIT = 2

# Imported once here so that no environment imports them again: every module of the runtime
# (both transports; not its `__main__`, which each child runs as `python -m` would, nor this
# one), msgpack, and the standard library modules handlers commonly use.
RUNTIME_PACKAGE = "faas_python_runtime"
NOT_PREIMPORTED = frozenset({"__main__", "zygote"})
THIRD_PARTY_MODULES = ("msgpack",)
STDLIB_MODULES = (
    "asyncio", "base64", "calendar", "collections", "concurrent.futures", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "email.utils", "enum", "functools", "gzip",
    "hashlib", "hmac", "http.client", "io", "itertools", "json", "logging", "math", "pathlib",
    "queue", "random", "re", "secrets", "shutil", "socket", "ssl", "string", "struct",
    "subprocess", "tempfile", "threading", "time", "traceback", "typing", "urllib.parse",
    "urllib.request", "uuid", "zipfile", "zlib",
)  # fmt: skip

Frame = dict[str, Any]  # Any: msgpack map values


def preimport() -> None:
    """Import the runtime's modules, then THIRD_PARTY_MODULES and STDLIB_MODULES."""
    package = importlib.import_module(RUNTIME_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in NOT_PREIMPORTED:
            importlib.import_module(f"{RUNTIME_PACKAGE}.{module.name}")
    for name in (*THIRD_PARTY_MODULES, *STDLIB_MODULES):
        importlib.import_module(name)


def capture_template(libc: Libc) -> ChildTemplate:
    """What each child needs to look like a freshly started `python -S -m faas_python_runtime`.

    Raises:
        RuntimeError: sys.path is not laid out as the interpreter lays it out.
    """
    python_path = os.environ.get("PYTHONPATH", "")
    entries = [os.path.abspath(p) for p in python_path.split(os.pathsep)] if python_path else []
    if sys.path[1 : 1 + len(entries)] != entries:
        raise RuntimeError(f"unexpected sys.path {sys.path!r} for PYTHONPATH {python_path!r}")
    spec = importlib.util.find_spec("faas_python_runtime.__main__")
    if spec is None or spec.loader is None or not hasattr(spec.loader, "get_code"):
        raise RuntimeError("faas_python_runtime.__main__ has no code to run")
    handlers = {signum: signal.getsignal(signum) for signum in signal.valid_signals()}
    return ChildTemplate(
        zygote_pid=os.getpid(),
        stdlib_path=tuple(sys.path[1 + len(entries) :]),
        signal_handlers={signum: h for signum, h in handlers.items() if h is not None},
        signal_mask=frozenset(signal.pthread_sigmask(signal.SIG_BLOCK, ())),
        main_code=spec.loader.get_code(spec.name),
        main_spec=spec,
        coerced_locale=os.environ.get("LC_CTYPE"),
        areas=ProcessAreas.find(ENVIRON_ROOM_VAR),
        libc=libc,
    )


def main() -> int:
    """Start up, then serve; returns the exit status."""
    libc = Libc()
    try:
        fd = int(os.environ[ZYGOTE_FD_VAR])
        parent_pid = int(os.environ[ZYGOTE_PARENT_VAR])
    except (KeyError, ValueError):
        sys.stderr.write(f"faas-zygote: {ZYGOTE_FD_VAR} and {ZYGOTE_PARENT_VAR} must be set\n")
        return STARTUP_FAILED_EXIT
    libc.set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent_pid:
        return STARTUP_FAILED_EXIT  # the node died before we could ask to die with it
    sock = socket.socket(fileno=fd)
    preimport()
    template = capture_template(libc)
    for name in (ZYGOTE_FD_VAR, ZYGOTE_PARENT_VAR, ENVIRON_ROOM_VAR):
        os.environ.pop(name, None)
    # Everything imported so far lives as long as the zygote: keep the collector off those
    # objects so that no child's first collection copies every page they sit on.
    gc.collect()
    gc.freeze()
    ForkServer(
        sock,
        lambda request, release: spawn_child(request, template, release),
        lambda park, channel, release: park_child(park, channel, template, release),
    ).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
