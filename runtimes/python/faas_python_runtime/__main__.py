"""Entry point `python -m faas_python_runtime`: init the handler, then serve invokes.

Started by the node, or forked by the zygote (zygote.py, which then runs this module's code
as `__main__` just as `python -m` does), with cwd = the function's code directory
(LAMBDA_TASK_ROOT) and either one end of a connected Unix socket inherited as
`_FAAS_CONTROL_FD`, or, without it (or with `_FAAS_TRANSPORT=runtime-api`), the Lambda
Runtime API at `AWS_LAMBDA_RUNTIME_API` (see PROTOCOL.md).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from .boundary import exit_after
from .errors import UNHANDLED_EXCEPTION_WARNING, error_from_exception, format_error_log
from .handler_loader import load_handler
from .invoker import Invoker
from .output import OutputCapture
from .parent_death import die_with_parent
from .settings import RuntimeSettings, TransportKind, expected_parent_pid, take_settings
from .transport import Transport


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


def main(parent_pid: int | None = None) -> int:
    """Run the runtime; returns the exit status.

    Args:
        parent_pid: the process whose death ends this environment: the node that exec'd it,
            or the zygote that forked it (also given as `_FAAS_PARENT_PID`); by default the
            parent at this moment.
    """
    parent_pid = parent_pid or expected_parent_pid()
    settings = take_settings()
    die_with_parent(parent_pid)
    transport = make_transport(settings)
    capture = OutputCapture.install(transport.send_log)
    invoker = initialise(settings, transport, capture)
    if invoker is None:
        return 1
    if settings.template_fd is not None:
        from .template import serve_template

        return serve_template(settings, transport, capture, invoker)
    return invoker.serve()


def run_and_exit(parent_pid: int | None = None) -> None:
    """Process boundary: run `main`, flush captured output, exit without lingering threads."""
    exit_after(lambda: main(parent_pid))


if __name__ == "__main__":
    run_and_exit()
