"""Entry point `python -m faas_python_runtime`: init the handler, then serve invokes.

Started by the node with cwd = the function's code directory (LAMBDA_TASK_ROOT) and one
end of a connected Unix socket inherited as `_FAAS_CONTROL_FD` (see PROTOCOL.md).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import traceback

from .channel import Channel
from .errors import UNHANDLED_EXCEPTION_WARNING, error_from_exception, format_error_log
from .handler_loader import load_handler
from .invoker import Invoker
from .output import OutputCapture
from .settings import RuntimeSettings, take_settings

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when the node dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl here: end of file on the socket still ends us
    if os.getppid() != parent_pid:
        os._exit(1)


def initialise(
    settings: RuntimeSettings, channel: Channel, capture: OutputCapture
) -> Invoker | None:
    """Import the handler and send `ready`, or send `init_error` and return None."""
    sys.path.insert(0, os.getcwd())
    try:
        handler = load_handler(settings.handler_name)
    except Exception as exc:
        error = error_from_exception(exc)
        logging.getLogger().warning(UNHANDLED_EXCEPTION_WARNING)
        capture.sink.write_text(format_error_log(error))
        capture.sink.flush()
        channel.send({"t": "init_error", "payload": json.dumps(error).encode("utf-8")})
        return None
    capture.sink.flush()
    channel.send({"t": "ready"})
    return Invoker(channel, capture, handler, settings.max_response_bytes)


def main() -> int:
    """Run the runtime; returns the exit status."""
    parent_pid = os.getppid()
    settings = take_settings()
    die_with_parent(parent_pid)
    channel = Channel.from_fd(settings.control_fd)
    capture = OutputCapture.install(lambda chunk: channel.send({"t": "log", "data": chunk}))
    invoker = initialise(settings, channel, capture)
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
        status = 1  # the node closed the socket while we were writing
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        _flush_output_quietly()
    os._exit(status)


if __name__ == "__main__":
    run_and_exit()
