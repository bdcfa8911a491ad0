"""Build the argv, environment and working directory of a runtime and start it.

Design notes: an environment gets exactly the variables Lambda sets (plus the
function's own), never the server's environment. The runtime runs in a new
session, so its whole process group can be signalled at once, and gets its end
of a socketpair as an inherited descriptor. The native Python runtime runs on
the host interpreter (the one running faas) for every python3.x Runtime value.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import site
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from faas.models import FunctionConfig

NATIVE_PYTHON_RUNTIMES = frozenset(
    {"python3.9", "python3.10", "python3.11", "python3.12", "python3.13"}
)
SUPPORTED_RUNTIMES = NATIVE_PYTHON_RUNTIMES

# Variables a user may not set in Environment.Variables (lambda-compat.md D).
RESERVED_ENV_VARS = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)


@dataclass(frozen=True, slots=True)
class LaunchedRuntime:
    """A started runtime process and the node's end of its control socket."""

    process: asyncio.subprocess.Process
    control: socket.socket
    log_stream_name: str


def log_stream_name(version: str) -> str:
    """``YYYY/MM/DD/[<version>]<32 hex>``, as Lambda names an environment's stream."""
    return time.strftime("%Y/%m/%d/", time.gmtime()) + f"[{version}]{secrets.token_hex(16)}"


class Launcher:
    """Starts native Python runtime processes for function configurations."""

    __slots__ = ("_max_response_bytes", "_pycache_dir", "_python_path", "_region", "_runtime_dir")

    def __init__(self, region: str, max_response_bytes: int, pycache_dir: Path) -> None:
        self._region = region
        # Bytecode goes here, keyed by source path, so code directories stay as unpacked.
        self._pycache_dir = str(pycache_dir)
        self._max_response_bytes = max_response_bytes
        self._runtime_dir = self._find_runtime_dir()
        # The runtime starts with -S (no site processing: ~40 ms less per cold start), so
        # the host's site-packages (msgpack, and boto3 as on Lambda) go on PYTHONPATH instead.
        site_dirs = [path for path in site.getsitepackages() if os.path.isdir(path)]
        self._python_path = os.pathsep.join([self._runtime_dir, *site_dirs])

    @staticmethod
    def _find_runtime_dir() -> str:
        import importlib.util

        spec = importlib.util.find_spec("faas_python_runtime")
        if spec is None or spec.origin is None:
            raise RuntimeError("the native Python runtime (faas_python_runtime) is not installed")
        return str(Path(spec.origin).parent.parent)

    def environment_variables(
        self, config: FunctionConfig, stream_name: str, control_fd: int
    ) -> dict[str, str]:
        """The process environment of one execution environment."""
        env = {
            "PATH": "/usr/local/bin:/usr/bin/:/bin:/opt/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "LD_LIBRARY_PATH": "/lib64:/usr/lib64:/opt/lib",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
            "PYTHONPYCACHEPREFIX": self._pycache_dir,
        }
        env.update(config.environment)
        user_path = config.environment.get("PYTHONPATH")
        env["PYTHONPATH"] = (
            f"{user_path}{os.pathsep}{self._python_path}" if user_path else self._python_path
        )
        env.update(
            {
                "_HANDLER": config.handler,
                "AWS_REGION": self._region,
                "AWS_DEFAULT_REGION": self._region,
                "AWS_EXECUTION_ENV": f"AWS_Lambda_{config.runtime}",
                "AWS_LAMBDA_FUNCTION_NAME": config.name,
                "AWS_LAMBDA_FUNCTION_VERSION": config.version,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
                "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
                "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
                "AWS_LAMBDA_LOG_STREAM_NAME": stream_name,
                "LAMBDA_RUNTIME_DIR": self._runtime_dir,
                "_FAAS_CONTROL_FD": str(control_fd),
                "_FAAS_MAX_RESPONSE_BYTES": str(self._max_response_bytes),
            }
        )
        return env

    async def launch(self, config: FunctionConfig, code_directory: str) -> LaunchedRuntime:
        """Start a runtime for ``config`` with its code in ``code_directory``."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        stream_name = log_stream_name(config.version)
        env = self.environment_variables(config, stream_name, child_end.fileno())
        env["LAMBDA_TASK_ROOT"] = code_directory
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-S",
                "-m",
                "faas_python_runtime",
                cwd=code_directory,
                env=env,
                pass_fds=(child_end.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException:
            parent_end.close()
            raise
        finally:
            child_end.close()
        parent_end.setblocking(False)
        return LaunchedRuntime(process, parent_end, stream_name)


def signal_process_group(pid: int, signum: int) -> None:
    """Signal every process of an environment's group (its own session), if still there."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
