"""The environment dies with its parent: the node that exec'd it, or the zygote that forked it."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading

from .settings import kill_own_group

PR_SET_PDEATHSIG = 1
# A real-time signal no handler code is expected to use.
PARENT_DEATH_SIGNAL_OFFSET = 3
THREAD_NAME = "parent-death"


def die_with_parent(parent_pid: int) -> None:
    """Make the whole environment die with its parent; exit now if it already has.

    Linux signals us when the parent dies (PR_SET_PDEATHSIG). A thread that waits for
    that signal then SIGKILLs our whole process group, so children a handler started
    go too, whatever the handler's own thread is doing at that moment. Calling this again
    (a parked zygote child armed it before it became an environment) starts no second
    thread.
    """
    if sys.platform.startswith("linux"):
        signum = signal.SIGRTMIN + PARENT_DEATH_SIGNAL_OFFSET
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
        if not any(thread.name == THREAD_NAME for thread in threading.enumerate()):
            threading.Thread(
                target=_kill_group_on_signal, args=(signum,), name=THREAD_NAME, daemon=True
            ).start()
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here: end of file on the socket (or a refused call) still ends us
    if os.getppid() != parent_pid:
        os._exit(1)


def _kill_group_on_signal(signum: int) -> None:
    signal.sigwait({signum})
    kill_own_group()
