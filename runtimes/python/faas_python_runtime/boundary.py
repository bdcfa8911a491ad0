"""The runtime's process boundary: run its body, flush captured output, exit at once."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from .settings import kill_own_group
from .transport import TransportError


def exit_after(body: Callable[[], int]) -> NoReturn:
    """Run ``body`` and exit with its status, without lingering threads or atexit hooks."""
    status = 1
    try:
        status = body()
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


def _flush_output_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass  # the node is gone; nobody is left to read it
