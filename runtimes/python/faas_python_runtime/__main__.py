"""Entry point `python -m faas_python_runtime`: init the handler, then serve invokes.

Started by the node with cwd = the function's code directory (LAMBDA_TASK_ROOT) and either
one end of a connected Unix socket inherited as `_FAAS_CONTROL_FD`, or, without it (or with
`_FAAS_TRANSPORT=runtime-api`), the Lambda Runtime API at `AWS_LAMBDA_RUNTIME_API`
(see PROTOCOL.md).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
import traceback

from .errors import UNHANDLED_EXCEPTION_WARNING, error_from_exception, format_error_log
from .handler_loader import load_handler
from .invoker import Invoker
from .output import OutputCapture
from .settings import RuntimeSettings, TransportKind, kill_own_group, take_settings
from .transport import Transport, TransportError

PR_SET_PDEATHSIG = 1
# A real-time signal no handler code is expected to use.
PARENT_DEATH_SIGNAL_OFFSET = 3


def die_with_parent(parent_pid: int) -> None:
    """Make the whole environment die with the node; exit now if it already has.

    Linux signals us when the node dies (PR_SET_PDEATHSIG). A thread that waits for
    that signal then SIGKILLs our whole process group, so children a handler started
    go too, whatever the handler's own thread is doing at that moment.
    """
    if sys.platform.startswith("linux"):
        signum = signal.SIGRTMIN + PARENT_DEATH_SIGNAL_OFFSET
        signal.pthread_sigmask(signal.SIG_BLOCK, {signum})
        threading.Thread(
            target=_kill_group_on_signal, args=(signum,), name="parent-death", daemon=True
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


def make_transport(settings: RuntimeSettings) -> Transport:
    """The transport the settings name; each module is imported only when it is used."""
    if settings.transport is TransportKind.RUNTIME_API:
        from .runtime_api import RuntimeApiClient

        assert settings.runtime_api_address is not None
        return RuntimeApiClient(settings.runtime_api_address)
    from .channel import Channel  # msgpack is needed only here

    assert settings.control_fd is not None
    return Channel.from_fd(settings.control_fd, settings.peak_memory_file)


def initialise(
    settings: RuntimeSettings, transport: Transport, capture: OutputCapture
) -> Invoker | None:
    """Import the handler and report ready, or report the init error and return None."""
    sys.path.insert(0, os.getcwd())
    try:
        import_started = time.perf_counter()
        handler = load_handler(settings.handler_name)
        function_init_ms = (time.perf_counter() - import_started) * 1000
    except Exception as exc:
        error = error_from_exception(exc)
        logging.getLogger().warning(UNHANDLED_EXCEPTION_WARNING)
        capture.sink.write_text(format_error_log(error))
        capture.sink.flush()
        transport.send_init_error(error)
        return None
    capture.sink.flush()
    transport.send_ready(function_init_ms)
    return Invoker(transport, capture, handler, settings.max_response_bytes)


def main() -> int:
    """Run the runtime; returns the exit status."""
    parent_pid = os.getppid()
    settings = take_settings()
    die_with_parent(parent_pid)
    transport = make_transport(settings)
    capture = OutputCapture.install(transport.send_log)
    invoker = initialise(settings, transport, capture)
    if invoker is None:
        return 1
    return invoker.serve()


def _flush_output_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the node is gone; nobody is left to read it


def run_and_exit() -> None:
    """Process boundary: run `main`, flush captured output, exit without lingering threads."""
    status = 1
    try:
        status = main()
    except SystemExit as exc:  # sys.exit() in user code ends the environment, as on Lambda
        status = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except ConnectionError:
        kill_own_group()  # the node is gone: take the handler's children too
    except TransportError as exc:  # e.g. a 500 from the Runtime API: the runtime must exit
        sys.stderr.write(f"{exc}\n")
        status = 1
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        _flush_output_quietly()
    os._exit(status)


if __name__ == "__main__":
    run_and_exit()
